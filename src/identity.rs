//! Identities from gateway records (API key names, user names, team ids) are never
//! stored raw: each becomes a configured alias or a salted hash.

use std::collections::HashMap;

use compact_str::{CompactString, format_compact};

/// Turns raw gateway identities into storable tenant labels.
#[derive(Debug, Clone)]
pub struct Identity {
    salt: [u8; 32],
    aliases: HashMap<String, CompactString>,
}

impl Identity {
    /// `salt` keys the hash (kept in the store, so labels are stable across restarts);
    /// `aliases` maps raw identities to the names operators want to read.
    pub fn new(salt: [u8; 32], aliases: HashMap<String, String>) -> Identity {
        let aliases = aliases.into_iter().map(|(k, v)| (k, v.into())).collect();
        Identity { salt, aliases }
    }

    /// A label the sender chose itself: its alias if one is configured, else unchanged —
    /// unless it looks like a credential (`sk-...`, a bearer token), which is hashed.
    pub fn alias_or(&self, label: CompactString) -> CompactString {
        // Most deployments configure no aliases: skip hashing every event's tenant then.
        if !self.aliases.is_empty()
            && let Some(alias) = self.aliases.get(label.as_str())
        {
            return alias.clone();
        }
        if crate::redact::looks_like_secret(&label) {
            return self.label(&label);
        }
        label
    }

    /// The label stored for a raw identity: its alias, or `id-` and 12 hex digits of a keyed hash.
    pub fn label(&self, raw: &str) -> CompactString {
        if let Some(alias) = self.aliases.get(raw) {
            return alias.clone();
        }
        let hash = blake3::keyed_hash(&self.salt, raw.as_bytes());
        format_compact!("id-{}", &hash.to_hex()[..12])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_identity_never_appears_in_the_label() {
        let id = Identity::new([7; 32], HashMap::new());
        let label = id.label("sk-live-team-a-secret");
        assert!(label.starts_with("id-") && label.len() == 15, "{label}");
        assert!(!label.contains("team"));
        assert_eq!(label, id.label("sk-live-team-a-secret"));
        assert_ne!(
            label,
            Identity::new([8; 32], HashMap::new()).label("sk-live-team-a-secret")
        );
    }

    #[test]
    fn a_key_sent_as_a_label_is_hashed() {
        let id = Identity::new([7; 32], HashMap::new());
        assert_eq!(id.alias_or("team-a".into()), "team-a");
        let hashed = id.alias_or("sk-proj-abcdefghijklmnop".into());
        assert!(hashed.starts_with("id-"), "{hashed}");
    }

    #[test]
    fn alias_wins_over_hash() {
        let aliases = HashMap::from([("alice-key".to_string(), "team-a".to_string())]);
        assert_eq!(Identity::new([0; 32], aliases).label("alice-key"), "team-a");
    }
}
