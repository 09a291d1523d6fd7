#!/usr/bin/env bash
# The README's first command: builds lakehouse and runs the example deployment (`lakehouse run` by default; other
# arguments are passed to the binary, e.g. `ci/example.sh status`). It builds exactly as ci/test.sh does — same
# target directory, same linker — so the dependencies are compiled once for both commands.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/env.sh
[[ $# -gt 0 ]] || set -- run
exec cargo run --locked --quiet -p lakehouse -- "$@"
