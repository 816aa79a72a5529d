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
. benches/campaign.sh
campaign protocol "${PROTOCOL_BUDGET:-520}" "${WORK:-./protocol-runs}"

# The small CNN (channels 16/32) on the full 54,000 / 6,000 / 10,000 split, 10 epochs.
compare fashion 260 --task fashion --data "$DATA" --epochs 10 --batch 128 --methods ce,gate,hinge-l2,atom \
  --lambdas 0.03,0.1,0.3 --seeds 5
pack fashion
# The d-64 Transformer on the reviews (9,199 / 1,023 / 2,586), 6 epochs.
compare sentiment 240 --task sentiment --epochs 6 --methods ce,gate,hinge-l2,atom --lambdas 0.03,0.1,0.3 --seeds 5
pack sentiment
echo "protocol-gpu.sh: done in $((SECONDS - T0)) s"
