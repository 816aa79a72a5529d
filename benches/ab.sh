#!/usr/bin/env bash
# Times two builds of the `kernels` bench against each other on one machine, alternating A, B,
# A, B, .. so that clock and thermal drift reach both alike (docs/PERFORMANCE.md keeps min-max over
# such rounds). Prints each round's result and profile lines tagged with the build and round.
#
#   bash benches/ab.sh A_KERNELS B_KERNELS ROUNDS -- BENCH_ARGS...
#   e.g. bash benches/ab.sh /tmp/g/bin/kernels /tmp/g/kernels-halves 2 -- --quick --profile \
#          "atom/L_A-forward+backward gram128 N=256"
set -u
if [ $# -lt 3 ]; then
  echo "usage: bash benches/ab.sh A_KERNELS B_KERNELS ROUNDS -- BENCH_ARGS..." >&2
  exit 2
fi
a=$1
b=$2
rounds=$3
shift 3
[ "${1:-}" = "--" ] && shift
for bin in "$a" "$b"; do
  [ -x "$bin" ] || { echo "ab.sh: $bin is not an executable" >&2; exit 2; }
done
"$a" "$@" 2>&1 | grep -m 2 -E "^(adapter|shader checks):"
for r in $(seq "$rounds"); do
  for side in A B; do
    bin=$a
    [ "$side" = B ] && bin=$b
    # Result lines ("name   1.234 ms ...") and the profile's kernel lines under them.
    "$bin" "$@" 2>&1 | grep -E " ms |ms/step" | sed "s/^/$side$r  /"
  done
done
