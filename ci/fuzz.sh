#!/usr/bin/env bash
# Fuzzes lakehouse's parsers with cargo-fuzz (libFuzzer) on the nightly toolchain: CSV, NDJSON, JSON documents,
# Parquet, Excel workbooks and source manifests (targets in lakehouse/fuzz/fuzz_targets, entry points in
# lakehouse::fuzzing).
# Usage: ci/fuzz.sh [SECONDS_PER_TARGET (default 60)] [TARGET…]
# New inputs that reach new code are added to lakehouse/fuzz/corpus/<target>/; a crash is saved under
# lakehouse/fuzz/artifacts/<target>/ — copy it to lakehouse/fuzz/regressions/<target>/ with the fix: ci/test.sh
# replays the corpus and every regression (lakehouse::fuzzing's test), so what was found stays fixed.
# Not part of ci/test.sh: the instrumented build of the whole stack takes long (a separate target directory).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(csv ndjson json parquet xlsx manifest)

command -v rustup >/dev/null || { echo "ci/fuzz.sh: rustup is required (for the nightly toolchain)" >&2; exit 1; }
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/lakehouse/fuzz-target}"
cd lakehouse
for t in "${targets[@]}"; do
    echo "ci/fuzz.sh: fuzzing $t for ${seconds}s" >&2
    # No sanitizer: the code is safe Rust (`unsafe_code = "forbid"`); libFuzzer finds panics, hangs and
    # excessive memory. The debug build keeps overflow checks.
    cargo +nightly fuzz run --dev --sanitizer none "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=20 -max_len=1048576
done
