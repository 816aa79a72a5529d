#!/usr/bin/env bash
# The GAN campaign (issue 24) on a GPU machine without Rust, in parts that each fit a 15-minute
# device slot (about 9 minutes of work). Uses the binaries of benches/pack.sh (.gpu/bin.tar.xz),
# the Fashion-MNIST files in .data/fashion-mnist (or /usr/share/datasets/fashion-mnist) and PyTorch.
#
#   bash benches/gan.sh PART [PART...]     # results: $OUT/<part>.tar.gz and $OUT/gan.log
#
# Parts (each resumes its comparison when run again with the same WORK):
#   measure      step times of the standard DCGAN and of PacGAN's 2-D models in atomgrad (bench
#                train/) and PyTorch; one DCGAN epoch in atomgrad (trains the feature ResNet once)
#   dcgan        compare --task gan --model base: GAN and atom at 5 seeds (lambda 0.03, 0.1, 0.3);
#                sample grids, importance overlays and histograms (the seed's Figure 5)
#   dcgan-base   hinge-L2 and SimCLR at 3 seeds
#   crosscheck   the same DCGAN in PyTorch (benches/reference/dcgan_base.py, 3 seeds), scored by the
#                feature ResNet the dcgan part trained: median Frechet within 1.25x of atomgrad's
#   pacgan       PacGAN's setup (compare --task gan2d --model pacgan) on the grid and the unit ring,
#                GAN, atom, hinge-L2, SimCLR; and PyTorch's plain GAN and PacGAN2 on the grid as the
#                published table's check (--iters from PACGAN_ITERS, default the full 400 epochs)
set -u
cd "$(dirname "$0")/.." || exit 1
. benches/campaign.sh
PACGAN_ITERS=${PACGAN_ITERS:-400000}
campaign gan "${GAN_BUDGET:-540}" "${WORK:-./gan-runs}" "$@"

for part in "$@"; do
  case $part in
    measure)
      mkdir -p "$WORK/measure"
      run 90 "$K" --quick "train/DCGAN" >"$WORK/measure/atomgrad.txt"
      for mode in "" "--compile" "--mode reduce-overhead"; do
        # shellcheck disable=SC2086
        run 90 $PY benches/reference/dcgan_base.py --time $mode >>"$WORK/measure/pytorch.jsonl"
      done
      run 60 $PY benches/reference/pacgan2d.py --time >>"$WORK/measure/pytorch.jsonl"
      run 300 "$A" train --task gan --model base --method ce --epochs 1 --data "$DATA" --out "$WORK/measure/dcgan-epoch" --force
      pack measure
      ;;
    dcgan)
      compare dcgan-base-atom 520 --task gan --model base --data "$DATA" --methods ce,atom --seeds 5 --lambdas 0.03,0.1,0.3
      pack dcgan-base-atom
      ;;
    dcgan-base)
      compare dcgan-base-baselines 520 --task gan --model base --data "$DATA" --methods ce,hinge-l2,simclr --seeds 3
      pack dcgan-base-baselines
      ;;
    crosscheck)
      mkdir -p "$WORK/crosscheck"
      "$A" data --task fashion --data "$DATA" --out "$WORK/crosscheck"
      FEAT=$(ls "$WORK"/dcgan-base-atom/feature-cnn.safetensors "$WORK"/measure/dcgan-epoch/feature-cnn.safetensors 2>/dev/null | head -n 1)
      [ -n "$FEAT" ] || { echo "gan.sh: run the measure or dcgan part first (it trains the feature ResNet)"; continue; }
      run 480 $PY benches/reference/dcgan_base.py --train "$WORK/crosscheck/fashion-split.json" --features "$FEAT" \
        >"$WORK/crosscheck/pytorch-dcgan.jsonl"
      pack crosscheck
      ;;
    pacgan)
      compare pacgan-grid 250 --task gan2d --model pacgan --mixture grid25 --iters "$PACGAN_ITERS" \
        --methods ce,atom,hinge-l2,simclr --seeds 5
      compare pacgan-ring 150 --task gan2d --model pacgan --mixture ring8-unit --iters "$PACGAN_ITERS" \
        --methods ce,atom,hinge-l2,simclr --seeds 5
      mkdir -p "$WORK/pacgan-pytorch"
      for pack in 1 2; do
        run 60 $PY benches/reference/pacgan2d.py --mixture grid25 --pack $pack --epochs $((PACGAN_ITERS / 1000)) --seeds 0-4 \
          >"$WORK/pacgan-pytorch/grid-pack$pack.jsonl"
      done
      pack pacgan-grid
      pack pacgan-ring
      pack pacgan-pytorch
      ;;
    *) echo "gan.sh: unknown part $part (measure, dcgan, dcgan-base, crosscheck, pacgan)" ;;
  esac
done
echo "gan.sh: done in $((SECONDS - T0)) s"
