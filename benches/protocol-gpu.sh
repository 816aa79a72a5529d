#!/usr/bin/env bash
# The experiment protocol's GPU campaign (issue 20): the Fashion-MNIST CNN and the sentiment
# Transformer compared under the protocol (validation-selected epochs and lambda, 5 seeds, paired
# 95% intervals against cross-entropy), on a machine with a GPU and no Rust toolchain, from the
# repository root, with the binaries benches/pack.sh packed (.gpu/bin.tar.xz). The comparisons
# run in $WORK (default ./protocol-runs); $OUT (default ./gpu-results) gets one tarball per
# comparison (its folder without checkpoints) and the log: few files, as the device tool wants.
#
#   mkdir -p .data/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz .data/fashion-mnist/
#   bash benches/pack.sh                      # then carry .gpu, .data (and .gl for the Vulkan loader)
#   OUT=$OUT bash benches/protocol-gpu.sh     # about 8 minutes on an H100 (budget: PROTOCOL_BUDGET, 520 s)
#
# Each comparison runs under a timeout; one cut short leaves its finished runs, and a rerun with
# the same WORK continues it (`compare --resume`).
set -u
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-./gpu-results}
mkdir -p "$OUT" || exit 1
OUT=$(cd "$OUT" && pwd)
WORK=${WORK:-./protocol-runs}
mkdir -p "$WORK" || exit 1
exec > >(tee -a "$OUT/protocol.log") 2>&1
BUDGET=${PROTOCOL_BUDGET:-520}
T0=$SECONDS
left() { echo $((BUDGET - (SECONDS - T0))); }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
tar -C "$TMP" -xJf .gpu/bin.tar.xz || { echo "protocol-gpu.sh: no .gpu/bin.tar.xz (bash benches/pack.sh)"; exit 1; }
A=$TMP/bin/atomgrad
cat "$TMP/bin/MANIFEST"
export ATOMGRAD_COMMIT
ATOMGRAD_COMMIT=$(sed -n 's/^commit: *\([0-9a-f]\{7\}\).*/\1/p' "$TMP/bin/MANIFEST")
DATA=${FASHION_DIR:-.data/fashion-mnist}
[ -f "$DATA/train-images-idx3-ubyte.gz" ] || DATA=/usr/share/datasets/fashion-mnist
echo "protocol-gpu.sh: $(date -u +%Y-%m-%dT%H:%M:%SZ), budget ${BUDGET}s, Fashion-MNIST from $DATA"
"$A" info | head -3

# compare NAME LIMIT ARGS...: a comparison into $WORK/NAME (resumed if a folder is there), packed
# into $OUT/NAME.tar.gz.
compare() {
  local name=$1 limit=$2 avail
  shift 2
  avail=$(left)
  [ "$limit" -gt "$avail" ] && limit=$avail
  if [ "$limit" -lt 20 ]; then
    echo "== [$name] skipped: out of time"
    return 0
  fi
  echo "== [$name] (timeout ${limit}s)"
  if [ -f "$WORK/$name/config.json" ]; then
    timeout -k 5 "$limit" "$A" compare --resume "$WORK/$name"
  else
    timeout -k 5 "$limit" "$A" compare "$@" --out "$WORK/$name"
  fi
  echo "== [$name] exit $?"
  tar -C "$WORK" -czf "$OUT/$name.tar.gz" --exclude='checkpoints' "$name"
}

# The small CNN (channels 16/32) on the full 54,000 / 6,000 / 10,000 split, 10 epochs.
compare fashion 260 --task fashion --data "$DATA" --epochs 10 --batch 128 --methods ce,gate,hinge-l2,atom \
  --lambdas 0.03,0.1,0.3 --seeds 5
# The d-64 Transformer on the reviews (9,199 / 1,023 / 2,586), 6 epochs.
compare sentiment 240 --task sentiment --epochs 6 --methods ce,gate,hinge-l2,atom --lambdas 0.03,0.1,0.3 --seeds 5
echo "protocol-gpu.sh: done in $((SECONDS - T0)) s"
