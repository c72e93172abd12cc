-- driftwarden schema, version 10: incidents. Alerts of one cause share an incident,
-- named by its root alert's id (the root's own incident_id is its id); `reopens`
-- counts how often the incident fired again within the reopen window.
ALTER TABLE alerts ADD COLUMN incident_id INTEGER;
ALTER TABLE alerts ADD COLUMN reopens INTEGER NOT NULL DEFAULT 0;
CREATE INDEX alerts_incident ON alerts (incident_id);
