#!/usr/bin/env bash
# The pull-request check for a deployment's repository: `lakehouse validate`, then `lakehouse plan` against the
# pull request's target branch. Fails when the project is invalid (exit 1) or when the change set touches personal
# data without a DPO approval in approvals.yaml (exit 3). The plan, as Markdown for a PR comment, is printed and
# written to $LAKEHOUSE_PLAN_MD (default .lakehouse/plan.md).
# Usage: ci/pr-check.sh [BASE-REF]   (default: $LAKEHOUSE_PLAN_BASE, else origin/main)
# The project is the repository's root, or $LAKEHOUSE_PROJECT; $LAKEHOUSE_BIN names a built binary (else it is
# built here).
set -euo pipefail
cd "$(dirname "$0")/.."
base="${1:-${LAKEHOUSE_PLAN_BASE:-origin/main}}"
if [[ -z "${LAKEHOUSE_BIN:-}" ]]; then
    source ci/env.sh
    cargo build --locked --bin lakehouse >&2
    LAKEHOUSE_BIN="$CARGO_TARGET_DIR/debug/lakehouse"
fi
project="${LAKEHOUSE_PROJECT:-.}"
out="${LAKEHOUSE_PLAN_MD:-$project/.lakehouse/plan.md}"
mkdir -p "$(dirname "$out")"

"$LAKEHOUSE_BIN" --project "$project" validate >&2
status=0
"$LAKEHOUSE_BIN" --project "$project" plan --base "$base" --format md > "$out" || status=$?
cat "$out"
case "$status" in
    0) echo "pr-check: OK" >&2 ;;
    3) echo "pr-check: privacy-relevant changes without a DPO approval (see the plan above)" >&2 ;;
    *) echo "pr-check: lakehouse plan failed (exit $status)" >&2 ;;
esac
exit "$status"
