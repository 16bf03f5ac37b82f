#!/usr/bin/env bash
# Run the smbtorture tests named in LIST against Holdfast; every listed test must pass.
#
#   scripts/torture-list.sh [LIST]                                  # default tests/smbtorture/default.list
#   scripts/torture-list.sh LIST --server-port PORT --localdir DIR  # use an already running server
#                                                                   # (e.g. the anchor's reference Samba)
#
# Without --server-port it starts a private Holdfast with scripts/holdfast-up.sh under a
# temporary base dir (tmpfs shares share/ca, users smbtest and smbtest2 / Test123!) and stops
# it on exit. Prints one line per test and `N passed, N failed`; exits 1 if any listed test
# did not pass. An empty list prints `0 passed, 0 failed` and exits 0 without starting anything.
#
# A list may carry "# server: <smb.conf line>" lines; they go into the private server's
# [global] section (e.g. tests/smbtorture/signing-required.list).
#
# Environment: TEST_TIMEOUT [180] per-test watchdog (s), GROUP_TIMEOUT [2400],
#   TORTURE_OUT (write name<TAB>result tsv there), TORTURE_LOGDIR [<base>/torture-logs],
#   TORTURE_PORT (the private server's port; holdfast-up.sh's default otherwise),
#   EXTRA_GLOBAL_OPTS (more [global] lines for the private server, after the list's own).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

LIST=$REPO_ROOT/tests/smbtorture/default.list
PORT="" LOCALDIR=""
while [ $# -gt 0 ]; do
  case $1 in
    --server-port) PORT=$2; shift 2 ;;
    --localdir) LOCALDIR=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    -*) die "unknown option $1" ;;
    *) LIST=$1; shift ;;
  esac
done
[ -f "$LIST" ] || die "no such list: $LIST"

n=$(sed -e 's/#.*//' -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' "$LIST" | grep -c . || true)
if [ "$n" = 0 ]; then
  info "$LIST lists no tests"
  echo "0 passed, 0 failed"
  exit 0
fi
command -v smbtorture >/dev/null 2>&1 || die "smbtorture not found (install samba-testsuite: scripts/setup.sh --no-run)"

WORK=$(mktemp -d /tmp/holdfast-torture.XXXXXX)
HF_BASE=""
cleanup() {
  local rc=$?
  if [ -n "$HF_BASE" ]; then
    BASE=$HF_BASE "$REPO_ROOT/scripts/holdfast-down.sh" >/dev/null 2>&1 || true
    if [ "$rc" != 0 ] && [ -f "$HF_BASE/log/holdfast.log" ]; then
      cp "$HF_BASE/log/holdfast.log" "$WORK/holdfast.log" 2>/dev/null || true
      info "server log kept in $WORK/holdfast.log"
    fi
    rm -rf "$HF_BASE"
  fi
  if [ "$rc" = 0 ]; then rm -rf "$WORK"; else info "torture logs kept in $WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "$PORT" ]; then
  HF_BASE=$WORK/server
  # "# server: <smb.conf line>" lines in the list configure its server's [global].
  GLOBAL_OPTS=$(sed -n 's/^#[[:space:]]*server:[[:space:]]*//p' "$LIST")
  if [ -n "${EXTRA_GLOBAL_OPTS:-}" ]; then
    GLOBAL_OPTS=$GLOBAL_OPTS$'\n'$EXTRA_GLOBAL_OPTS
  fi
  BASE=$HF_BASE GLOBAL_OPTS=$GLOBAL_OPTS PORT=${TORTURE_PORT:-} "$REPO_ROOT/scripts/holdfast-up.sh"
  # shellcheck disable=SC1091
  . "$HF_BASE/holdfast.env"
  LOCALDIR=${LOCALDIR:-$HF_BASE/share}
fi
[ -n "$LOCALDIR" ] || die "--server-port needs --localdir (server-side path of the share)"

args=(--port "$PORT" --localdir "$LOCALDIR" --list "$LIST" --logdir "${TORTURE_LOGDIR:-$WORK/logs}")
[ -n "${TORTURE_OUT:-}" ] && args+=(--out "$TORTURE_OUT")
python3 "$REPO_ROOT/scripts/torture_run.py" "${args[@]}"
