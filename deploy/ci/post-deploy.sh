#!/usr/bin/env bash
# Tell driftwarden about a deploy, from any CI system, right after the rollout.
# The change starts a new baseline epoch for the routes it touches, so the deploy
# itself is not reported as drift. Retrying is safe: the event carries its time.
#
# Environment:
#   DRIFTWARDEN_URL    the daemon, e.g. http://driftwarden.internal:7878 (required)
#   DRIFTWARDEN_TOKEN  its API token, from your CI secrets (required)
#   DEPLOY_ROUTE       the route this deploy changes; empty means everything
#   DEPLOY_NOTE        what changed (default: the commit, from GIT_COMMIT or git)
#   DRIFTWARDEN_BIN    the driftwarden binary (default: driftwarden on PATH)
set -euo pipefail
: "${DRIFTWARDEN_URL:?set DRIFTWARDEN_URL to the daemon, e.g. http://driftwarden:7878}"
: "${DRIFTWARDEN_TOKEN:?set DRIFTWARDEN_TOKEN from your CI secrets}"
bin="${DRIFTWARDEN_BIN:-driftwarden}"
note="${DEPLOY_NOTE:-${GIT_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}}"
at="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
args=(recalibrate --kind deploy --note "$note" --at "$at")
if [ -n "${DEPLOY_ROUTE:-}" ]; then
  args+=(--scope "route=$DEPLOY_ROUTE")
fi
# Three tries: a daemon restarting during the deploy must not fail the pipeline's record.
for attempt in 1 2 3; do
  if "$bin" "${args[@]}"; then
    exit 0
  fi
  echo "post-deploy: attempt $attempt failed; retrying" >&2
  sleep $((attempt * 2))
done
exit 1
