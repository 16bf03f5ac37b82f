#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS_PER_TARGET (default 20).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Builds once (stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its
# -Z flags; `-s none` = no sanitizer, which Rust code without unsafe does not
# need), then runs each target over its checked-in seeds (fuzz/corpus/T,
# read only) with new inputs going to fuzz/corpus-tmp/T (git-ignored).
# Prints one summary line per target and exits non-zero if any target found
# a crash (its input is left in fuzz/artifacts/T/).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SECS=${1:-20}
shift || true
cd "$ROOT/fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "[fuzz] installing cargo-fuzz" >&2
  cargo install --locked cargo-fuzz
fi
export RUSTC_BOOTSTRAP=1

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

echo "[fuzz] building ${#targets[@]} targets" >&2
cargo fuzz build -s none >&2

LOGDIR=$(mktemp -d /tmp/holdfast-fuzz.XXXXXX)
trap 'rm -rf "$LOGDIR"' EXIT
failed=0
summary=()
for t in "${targets[@]}"; do
  mkdir -p "corpus-tmp/$t" "corpus/$t"
  log=$LOGDIR/$t.log
  rc=0
  timeout $((SECS + 300)) cargo fuzz run -s none "$t" "corpus-tmp/$t" "corpus/$t" -- \
    -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
  seeds=$(find "corpus/$t" -type f | wc -l)
  if [ "$rc" = 0 ]; then
    line=$(printf '%-16s ok     %4ss  %10s execs  cov %5s  seeds %3s' "$t" "$SECS" "${execs:-?}" "${cov:-?}" "$seeds")
  else
    failed=1
    art=$(grep -o 'artifacts/[^ ]*' "$log" | tail -n 1 || true)
    line=$(printf '%-16s FAIL   exit %s  %s' "$t" "$rc" "${art:-(no artifact; see log below)}")
    echo "---- $t log (tail) ----" >&2
    tail -n 40 "$log" >&2
  fi
  echo "$line"
  summary+=("$line")
done

echo "[fuzz] summary:"
printf '  %s\n' "${summary[@]}"
if [ "$failed" != 0 ]; then
  echo "[fuzz] FAILED: a target crashed (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "[fuzz] ${#targets[@]} targets ok, ${SECS}s each"
