#!/usr/bin/env bash
# Runs every check and test, as CI does: formatting, clippy, then all tests against a real S3-compatible server
# (SeaweedFS, installed and started by ci/start-s3.sh), a real PostgreSQL (ci/start-postgres.sh) and real message
# brokers (Mosquitto and NATS, ci/brokers.sh).
# Usage: ci/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in python3 curl; do
    command -v "$tool" >/dev/null 2>&1 || { echo "ci/test.sh: $tool is required" >&2; exit 1; }
done

source ci/env.sh
echo "ci/test.sh: target directory $CARGO_TARGET_DIR" >&2

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

eval "$(ci/start-s3.sh)"
trap 'ci/stop-s3.sh' EXIT
# The catalog tests use a real PostgreSQL (the one running, or one installed and started here).
eval "$(ci/start-postgres.sh)"
# The query-server tests drive psql (above) and Python's psycopg 3.
eval "$(ci/clients.sh)"
# The stream tests: Mosquitto and NATS with JetStream (installed, and running on their standard ports).
eval "$(ci/brokers.sh)"

# The end-to-end tests run the `lakehouse` binary: `cargo test` alone does not build it.
cargo build --workspace --locked --bins
cargo test --workspace --locked "$@"
