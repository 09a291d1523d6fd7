#!/usr/bin/env bash
# Makes sure the message brokers of the stream tests and of the example's live feeds are installed — Mosquitto
# and a NATS server with JetStream, from Debian's packages — and that one of each answers on its standard port
# (127.0.0.1:1883 and 127.0.0.1:4222), started here when none does. Prints `export LAKEHOUSE_TEST_MOSQUITTO=…`
# and `export LAKEHOUSE_TEST_NATS_SERVER=…`: the stream tests start brokers of their own from these binaries (on
# free ports, so that a test can restart its broker).
# Mosquitto started here keeps every message of a session (`max_queued_messages 0`); Debian's default
# configuration keeps 1000 per session and drops the rest.
set -euo pipefail
say() { echo "brokers: $*" >&2; }
state="${LAKEHOUSE_BROKERS_DIR:-$HOME/.cache/lakehouse/brokers}"

find_bin() { command -v "$1" 2>/dev/null || { [[ -x "/usr/sbin/$1" ]] && echo "/usr/sbin/$1"; } || true; }
mosquitto="$(find_bin mosquitto)"
nats="$(find_bin nats-server)"
if [[ -z "$mosquitto" || -z "$nats" ]]; then
    [[ "$(id -u)" == 0 ]] || { say "mosquitto or nats-server is missing and this is not root: install mosquitto nats-server"; exit 1; }
    say "installing Mosquitto and the NATS server"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto nats-server) >/dev/null
    mosquitto="$(find_bin mosquitto)"
    nats="$(find_bin nats-server)"
fi
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
mkdir -p "$state"
if ! listening 1883; then
    # `user root`: started by root, Mosquitto would run as `mosquitto`, which cannot write under root's home (the
    # setting is ignored when another user starts it).
    printf 'listener 1883 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\nmax_queued_messages 0\nlog_dest file %s/mosquitto.log\nuser root\n' \
        "$state" "$state" >"$state/mosquitto.conf"
    "$mosquitto" -d -c "$state/mosquitto.conf"
    say "Mosquitto started on 127.0.0.1:1883 ($state)"
fi
if ! listening 4222; then
    mkdir -p "$state/nats"
    nohup "$nats" -a 127.0.0.1 -p 4222 -js -sd "$state/nats" >"$state/nats.log" 2>&1 &
    say "NATS (JetStream) started on 127.0.0.1:4222 ($state/nats)"
fi
for port in 1883 4222; do
    for _ in $(seq 1 50); do listening "$port" && break; sleep 0.1; done
    listening "$port" || { say "nothing answers on 127.0.0.1:$port"; exit 1; }
done
say "Mosquitto ($("$mosquitto" -h 2>/dev/null | head -n 1 | awk '{print $3}')) and NATS ($("$nats" --version)) ready"
echo "export LAKEHOUSE_TEST_MOSQUITTO='$mosquitto'"
echo "export LAKEHOUSE_TEST_NATS_SERVER='$nats'"
