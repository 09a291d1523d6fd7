#!/usr/bin/env bash
# Stops the SeaweedFS server started by ci/start-s3.sh and waits for it to exit (its data directory must not be
# removed while it runs, or its master hangs and keeps its ports).
set -euo pipefail
STATE="${LAKEHOUSE_S3_STATE:-${LAKEHOUSE_CACHE:-$HOME/.cache/lakehouse}/s3-state}"
[[ -f "$STATE/pid" ]] || exit 0
pid="$(cat "$STATE/pid")"
if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
fi
rm -f "$STATE/pid"
rm -rf "$STATE/data"
