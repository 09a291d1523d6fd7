#!/usr/bin/env bash
# The example's live feeds in one command: `bash sources/optional/feeds.sh [SECONDS]` (default 60).
# - makes sure Mosquitto and NATS with JetStream run on 127.0.0.1:1883 and :4222 (ci/brokers.sh installs and
#   starts them when needed);
# - enables the traffic sensors (MQTT) and the patrol alarms (NATS): copies their manifests into sources/;
# - starts `lakehouse schedule` (both are `schedule: continuous`: a micro-batch after another), and publishes with
#   `lakehouse feed` — 20 sensor readings and 2 alarms a second, one reading in 50 malformed (quarantined);
# - prints what bronze holds every 5 seconds, then stops the scheduler (SIGTERM: the open batch is committed or
#   left to the broker) and shows `lakehouse status` for both.
# Remove sources/ville_traffic_sensors.yaml and sources/patrol_alarms.yaml to disable them again.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-60}"
source ci/env.sh
eval "$(ci/brokers.sh)"
cargo build --locked --quiet -p lakehouse
lh="$CARGO_TARGET_DIR/debug/lakehouse"
cp sources/optional/ville_traffic_sensors.yaml sources/optional/patrol_alarms.yaml sources/
mkdir -p .lakehouse
# The JetStream stream (created by the first publication), the MQTT session and the NATS consumer (created by a
# first run): from then on the brokers keep every message for the sources, whether a run is connected or not.
"$lh" feed patrol_alarms --count 1 --rate 0 >/dev/null
"$lh" ingest ville_traffic_sensors patrol_alarms >/dev/null 2>>.lakehouse/feeds.log
"$lh" schedule 2>>.lakehouse/feeds.log >/dev/null &
scheduler=$!
trap 'kill -TERM $scheduler 2>/dev/null || true' EXIT
"$lh" feed ville_traffic_sensors --count $((seconds * 20)) --rate 20 --bad-every 50 >/dev/null &
sensors=$!
"$lh" feed patrol_alarms --count $((seconds * 2)) --rate 2 >/dev/null &
alarms=$!
echo "publishing for ${seconds}s; the scheduler's log is in .lakehouse/feeds.log"
query="SELECT 'bronze.ville_traffic_sensors' AS \"table\", count(*) AS \"rows\", max(measured_at) AS latest FROM bronze.ville_traffic_sensors
       UNION ALL SELECT 'bronze.patrol_alarms', count(*), max(raised_at) FROM bronze.patrol_alarms"
for _ in $(seq 1 $(((seconds + 4) / 5))); do
    sleep 5
    "$lh" sql "$query" 2>/dev/null | sed '1!b;s/^/\n/'
done
wait "$sensors" "$alarms"
sleep 3
kill -TERM "$scheduler"
wait "$scheduler" || true
trap - EXIT
"$lh" sql "$query" 2>/dev/null
"$lh" status 2>/dev/null | grep -E '^table|ville_traffic_sensors|patrol_alarms'
