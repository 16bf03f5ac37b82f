#!/usr/bin/env bash
# Run ALL smbtorture smb2.* tests against Holdfast (~20 min), write a tsv comparable with the
# anchor's Samba baseline, and print the passing tests that are not yet in the conformance
# list (candidates to add to tests/smbtorture/default.list).
#
#   scripts/torture-all.sh [OUT.tsv] [FILTER_REGEX]                    # starts a private Holdfast
#   scripts/torture-all.sh OUT.tsv '' --server-port PORT --localdir DIR # already running server
#
# Uses shared/anchor/torture.sh when it is beside the repo (same runner as the baseline),
# otherwise scripts/torture_run.py --all (same options and watchdog).
# OUT defaults to /tmp/holdfast-smb2.tsv. Exit status is 0 whatever the results (a report).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

OUT=${1:-/tmp/holdfast-smb2.tsv}
FILTER=${2:-}
shift $(($# < 2 ? $# : 2))
PORT="" LOCALDIR=""
while [ $# -gt 0 ]; do
  case $1 in
    --server-port) PORT=$2; shift 2 ;;
    --localdir) LOCALDIR=$2; shift 2 ;;
    *) die "unknown argument $1" ;;
  esac
done
OUT=$(realpath -m "$OUT")
command -v smbtorture >/dev/null 2>&1 || die "smbtorture not found (install samba-testsuite: scripts/setup.sh --no-run)"

HF_BASE=""
cleanup() {
  if [ -n "$HF_BASE" ]; then
    BASE=$HF_BASE "$REPO_ROOT/scripts/holdfast-down.sh" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "$PORT" ]; then
  HF_BASE=${BASE:-/tmp/holdfast-torture-all}
  BASE=$HF_BASE "$REPO_ROOT/scripts/holdfast-up.sh"
  # shellcheck disable=SC1091
  . "$HF_BASE/holdfast.env"
  LOCALDIR=$HF_BASE/share
  info "server log: $HF_BASE/log/holdfast.log"
fi
[ -n "$LOCALDIR" ] || die "--server-port needs --localdir"

LOGDIR=${LOGDIR:-/tmp/holdfast-torture-logs/$(basename "$OUT")}
if ANCHOR=$(anchor_dir) && [ -x "$ANCHOR/torture.sh" ]; then
  info "running $ANCHOR/torture.sh"
  LOCALDIR=$LOCALDIR LOGDIR=$LOGDIR "$ANCHOR/torture.sh" "$PORT" "$OUT" "$FILTER"
else
  info "no shared/anchor: running scripts/torture_run.py --all"
  python3 "$REPO_ROOT/scripts/torture_run.py" --all --filter "$FILTER" --port "$PORT" \
    --localdir "$LOCALDIR" --out "$OUT" --logdir "$LOGDIR" || true
fi

banner "summary ($OUT)"
python3 - "$OUT" "$REPO_ROOT/tests/smbtorture/default.list" "${ANCHOR:-}" <<'PY'
import os, sys
out, lst, anchor = sys.argv[1], sys.argv[2], sys.argv[3]
def load(p):
    d = {}
    if p and os.path.exists(p):
        for line in open(p):
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 2:
                d[parts[0]] = parts[1]
    return d
ours = load(out)
listed = set()
for line in open(lst):
    line = line.split("#", 1)[0].strip()
    if line:
        listed.add(line)
base = load(os.path.join(anchor, "samba-4.17-smb2.tsv")) if anchor else {}
cnt = {}
for r in ours.values():
    cnt[r] = cnt.get(r, 0) + 1
print("holdfast: %d tests: %s" % (len(ours), " ".join("%s=%d" % kv for kv in sorted(cnt.items()))))
if base:
    both = [n for n in ours if n in base]
    bs = sum(1 for n in both if base[n] == "success")
    hs = sum(1 for n in both if ours[n] == "success")
    print("samba 4.17 baseline on the same %d tests: success=%d (holdfast %d)" % (len(both), bs, hs))
    gap = sorted(n for n in both if base[n] == "success" and ours[n] != "success")
    print("passing on Samba, not on Holdfast: %d" % len(gap))
    better = sorted(n for n in both if base[n] != "success" and ours[n] == "success")
    if better:
        print("passing on Holdfast, not on Samba: " + " ".join(better))
regress = sorted(n for n in listed if ours.get(n, "success") != "success")
if regress:
    print("LISTED BUT NOT PASSING (%d):" % len(regress))
    for n in regress:
        print("  " + n)
cand = sorted(n for n, r in ours.items() if r == "success" and n not in listed)
print("candidates for tests/smbtorture/default.list (pass, not listed): %d" % len(cand))
for n in cand:
    print(n)
PY
