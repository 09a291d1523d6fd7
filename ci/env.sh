# Shared build environment for ci/*.sh and for developers: `source ci/env.sh`.
# One persistent target directory outside the clone, so CI and later sessions build incrementally.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lakehouse/target}"
# mold links the ~1 GB test binaries in seconds instead of tens of seconds; ci/test.sh installs it when missing.
if command -v mold >/dev/null 2>&1; then
    export RUSTFLAGS="${RUSTFLAGS:--C link-arg=-fuse-ld=mold}"
fi
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
