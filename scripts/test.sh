#!/usr/bin/env bash
# Holdfast's full check (README command #2; what .ci/run runs):
#   test deps -> cargo fmt -> clippy -> release build -> cargo test (unit + integration)
#   -> smbtorture conformance list -> fuzz smoke (if fuzz/ exists).
# Fails fast at the first failing section.
#
# Environment: TORTURE_LIST [every tests/smbtorture/*.list]   FUZZ_SECONDS [15] per fuzz target
#   HOLDFAST_SKIP_PEERS=1 lets integration tests skip when smbclient/smbprotocol are missing
#   SKIP_INSTALL=1 does not try to install missing dependencies
#   SKIP_LINT=1 skips fmt and clippy (local use only; CI runs everything)
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

T0=$(date +%s)
CURRENT=""
CT_LOG="" TT_LOG=""
on_exit() {
  local rc=$?
  rm -f "$CT_LOG" "$TT_LOG"
  if [ "$rc" != 0 ] && [ -n "$CURRENT" ]; then
    printf '\n[holdfast] FAILED in section "%s" (exit %s) after %ss\n' "$CURRENT" "$rc" "$(($(date +%s) - T0))" >&2
  fi
}
trap on_exit EXIT

section() {
  CURRENT=$1
  banner "$1"
}

section "dependencies"
if [ "${SKIP_INSTALL:-0}" = 1 ]; then
  info "SKIP_INSTALL=1: not installing anything"
else
  install_deps
fi
ensure_cargo
cargo --version
if command -v smbtorture >/dev/null 2>&1; then smbtorture --version 2>/dev/null | head -1; fi

if [ "${SKIP_LINT:-0}" = 1 ]; then
  info "SKIP_LINT=1: fmt and clippy skipped"
else
  section "cargo fmt --all -- --check"
  cargo fmt --all -- --check

  section "cargo clippy --workspace --all-targets -- -D warnings"
  cargo clippy --workspace --all-targets -- -D warnings
fi

section "layer rules"
scripts/check-layers.sh

section "cargo build --release --workspace"
cargo build --release --workspace

section "cargo test --workspace --release"
HOLDFAST_BIN_DIR=$REPO_ROOT/target/release
export HOLDFAST_BIN_DIR
CT_LOG=$(mktemp /tmp/holdfast-cargo-test.XXXXXX)
TT_LOG=$(mktemp /tmp/holdfast-torture-out.XXXXXX)
cargo test --workspace --release --no-fail-fast 2>&1 | tee "$CT_LOG"

section "smbtorture conformance lists"
# Every tests/smbtorture/*.list, each against a server configured by its "# server:" lines.
for list in ${TORTURE_LIST:-"$REPO_ROOT"/tests/smbtorture/*.list}; do
  info "smbtorture list $list"
  "$REPO_ROOT/scripts/torture-list.sh" "$list" 2>&1 | tee -a "$TT_LOG"
done

section "fuzz smoke"
if [ -f "$REPO_ROOT/fuzz/Cargo.toml" ]; then
  "$REPO_ROOT/scripts/fuzz.sh" "${FUZZ_SECONDS:-15}"
else
  info "no fuzz/ directory: skipped"
fi

CURRENT=""
banner "all sections passed in $(($(date +%s) - T0))s"
# Overall count: cargo test results plus the smbtorture list.
read -r ct_pass ct_fail < <(sed -n 's/^test result: [a-zA-Z]*\. \([0-9]*\) passed; \([0-9]*\) failed.*/\1 \2/p' "$CT_LOG" |
  awk '{p += $1; f += $2} END {print p + 0, f + 0}')
read -r tt_pass tt_fail < <(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$TT_LOG" |
  awk '{p += $1; f += $2} END {print p + 0, f + 0}')
echo "cargo test: $ct_pass passed, $ct_fail failed; smbtorture: $tt_pass passed, $tt_fail failed"
echo "total: $((ct_pass + tt_pass)) passed, $((ct_fail + tt_fail)) failed"
