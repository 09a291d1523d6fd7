# Shared build environment for ci/*.sh and for developers: `source ci/env.sh`.
# One persistent target directory outside the clone, so CI and later sessions build incrementally.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lakehouse/target}"
# mold links the ~1 GB test binaries in seconds instead of tens of seconds. It is installed here when missing (as
# root with apt-get), so that ci/example.sh and ci/test.sh build with the same flags and share one build.
if ! command -v mold >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
    echo "ci/env.sh: installing the mold linker" >&2
    (apt-get update -qq && apt-get install -y -qq mold) >/dev/null 2>&1 || echo "ci/env.sh: mold not installed, using the default linker" >&2
fi
if command -v mold >/dev/null 2>&1; then
    export RUSTFLAGS="${RUSTFLAGS:--C link-arg=-fuse-ld=mold}"
fi
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
