#!/usr/bin/env bash
# Stop the private Holdfast started by holdfast-up.sh (by its pid file, never by name)
# and unmount its tmpfs shares. KEEP_MOUNTS=1 keeps the share contents for inspection.
set -uo pipefail
BASE=${BASE:-/tmp/holdfast-test}
rc=0
if [ -f "$BASE/holdfast.pid" ]; then
  p=$(cat "$BASE/holdfast.pid" 2>/dev/null || true)
  if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
    # holdfast-up.sh started it with setsid: pid == process group id.
    kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$p" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$p" 2>/dev/null; then
      echo "pid $p did not exit on TERM; sending KILL" >&2
      kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null || rc=1
    fi
    echo "stopped holdfast-smbd pid $p"
  fi
  rm -f "$BASE/holdfast.pid"
fi
if [ "${KEEP_MOUNTS:-0}" != 1 ]; then
  awk -v b="$BASE/" 'index($2, b) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
    umount "$m" && echo "unmounted $m"
  done
fi
exit $rc
