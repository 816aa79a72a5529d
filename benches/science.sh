#!/usr/bin/env bash
# The real-scale classifier campaign (issue 23) on a GPU machine without Rust, in parts that each
# fit a 15-minute device slot (about 9 minutes of work): the residual CNN on Fashion-MNIST and the
# 4-layer Transformer on the reviews, cross-checked against PyTorch copies of their recipes, then
# compared under the protocol. Uses the binaries of benches/pack.sh (.gpu/bin.tar.xz), the
# Fashion-MNIST files in .data/fashion-mnist (or /usr/share/datasets/fashion-mnist) and PyTorch.
#
#   bash benches/science.sh PART [PART...]     # results: $OUT/<part>.tar.gz and $OUT/science.log
#
# Parts, in the order to run them (each resumes its comparison when run again with the same WORK):
#   measure      steps per second of both models in atomgrad (bench train/) and PyTorch (eager,
#                torch.compile, reduce-overhead), and one epoch of each in atomgrad: the budget
#                of the other parts is set from these
#   crosscheck   seed 0, cross-entropy, the whole recipe, in atomgrad and in PyTorch on the same
#                split (atomgrad data writes it): ResNet >= 93.0%, within 0.5 points; Transformer
#                >= 77%, within 1 point
#   fashion      compare --task fashion --model resnet: ce and atom, 5 seeds, lambda 0.03,0.1,0.3
#   sentiment    compare --task sentiment --model base: ce and atom, 5 seeds, lambda 0.03,0.1,0.3
#   baselines    gate, hinge-l1/l2 (margin from the latent scale), simclr at 3 seeds, both models
# A part cut short by its time limit leaves its finished runs; `science.sh PART` again continues.
set -u
cd "$(dirname "$0")/.." || exit 1
. benches/campaign.sh
campaign science "${SCIENCE_BUDGET:-540}" "${WORK:-./science-runs}" "$@"

for part in "$@"; do
  case $part in
    measure)
      mkdir -p "$WORK/measure"
      run 120 "$K" --quick "train/fashion ResNet" "train/sentiment Transformer base" >"$WORK/measure/atomgrad.txt"
      for mode in "" "--compile" "--mode reduce-overhead"; do
        # shellcheck disable=SC2086
        run 90 $PY benches/reference/resnet.py --time $mode >>"$WORK/measure/pytorch.jsonl"
        # shellcheck disable=SC2086
        run 90 $PY benches/reference/transformer_base.py --time $mode >>"$WORK/measure/pytorch.jsonl"
      done
      run 120 "$A" train --task fashion --model resnet --method ce --epochs 1 --data "$DATA" --out "$WORK/measure/resnet-epoch" --force
      run 60 "$A" train --task sentiment --model base --method ce --epochs 1 --out "$WORK/measure/base-epoch" --force
      pack measure
      ;;
    crosscheck)
      mkdir -p "$WORK/crosscheck"
      "$A" data --task fashion --data "$DATA" --out "$WORK/crosscheck"
      "$A" data --task sentiment --out "$WORK/crosscheck"
      run 200 "$A" train --task fashion --model resnet --method ce --data "$DATA" --out "$WORK/crosscheck/atomgrad-resnet" --force --quiet
      run 150 $PY benches/reference/resnet.py --train "$WORK/crosscheck/fashion-split.json" >"$WORK/crosscheck/pytorch-resnet.jsonl"
      run 60 "$A" train --task sentiment --model base --method ce --out "$WORK/crosscheck/atomgrad-base" --force --quiet
      run 60 $PY benches/reference/transformer_base.py --train "$WORK/crosscheck/reviews.json" >"$WORK/crosscheck/pytorch-base.jsonl"
      pack crosscheck
      ;;
    fashion)
      compare fashion-resnet 520 --task fashion --model resnet --data "$DATA" --methods ce,atom --seeds 5 --lambdas 0.03,0.1,0.3
      pack fashion-resnet
      ;;
    sentiment)
      compare sentiment-base 520 --task sentiment --model base --methods ce,atom --seeds 5 --lambdas 0.03,0.1,0.3
      pack sentiment-base
      ;;
    baselines)
      compare fashion-resnet-baselines 300 --task fashion --model resnet --data "$DATA" --methods ce,gate,hinge-l1,hinge-l2,simclr --seeds 3
      compare sentiment-base-baselines 200 --task sentiment --model base --methods ce,gate,hinge-l1,hinge-l2,simclr --seeds 3
      pack fashion-resnet-baselines
      pack sentiment-base-baselines
      ;;
    *) echo "science.sh: unknown part $part (measure, crosscheck, fashion, sentiment, baselines)" ;;
  esac
done
echo "science.sh: done in $((SECONDS - T0)) s"
