#!/usr/bin/env bash
# Layer rules that hold today (docs/architecture.md section 5 and 15):
#  - no `unsafe` outside kmod-interface (fd passing joins it later);
#  - wire/ is a pure codec: no I/O, no runtime, no other layer.
# Known, recorded exception: server/ still calls posix/ directly (see section 15).
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
if grep -rnE '\bunsafe\b' --include='*.rs' smbd handle-keeper tests | grep -v '^\S*:\s*//' | grep -vE '(//|!).*unsafe' ; then
  echo "check-layers: unsafe outside kmod-interface" >&2; fail=1
fi
if grep -rnE 'use (tokio|std::fs|std::net|std::process)|crate::(server|fsa|posix)' smbd/src/wire; then
  echo "check-layers: wire/ must stay a pure codec" >&2; fail=1
fi
if grep -rnE 'crate::server' smbd/src/fsa smbd/src/posix; then
  echo "check-layers: fsa/ and posix/ must not reach up into server/" >&2; fail=1
fi
[ "$fail" = 0 ] && echo "check-layers: ok"
exit "$fail"
