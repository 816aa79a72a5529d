#!/usr/bin/env bash
# The GPU benchmark harness of issue 7: runs on a Linux machine with an NVIDIA GPU and no Rust
# toolchain, from the repository root, using the release binaries that benches/pack.sh built
# elsewhere (.gpu/bin.tar.xz). In order, each stage under its own timeout, a failing stage never
# stopping the next:
#   1. `atomgrad info` (and nvidia-smi): which adapter atomgrad got;
#   2. the kernel tests: every fast kernel against its f64 CPU reference on random data;
#   3. the atomgrad benches for issue 7's targets (train/ steps, each with its per-kernel GPU time
#      profile, then matmul and atom L_A);
#   4. the PyTorch references (benches/reference/*.py), same models, shapes and optimizers;
#   5. f32 vs mixed-precision training (accuracy), the other benches, the model/training tests,
#      a wider DCGAN (--channels 128), torch.compile (if time is left);
#   6. the table (name | atomgrad | PyTorch | ratio), with results.json beside the full log.
#
#   bash benches/gpu.sh                 # results in ${OUT:-./gpu-results}
#   GPU_SH_BUDGET=300 bash benches/gpu.sh   # whole-script time budget in seconds (default 480)
#   ATOMGRAD_ALLOW_CPU=1 ...            # run the atomgrad stages even on a CPU adapter (lavapipe)
#   GPU_SH_TESTS="matmul conv" ...      # which fast kernel tests (default: all packed but models, training)
#   GPU_SH_BENCH_FLAGS=--quick ...      # extra flags for the bench (--quick: 0.1 s per case, not 0.5 s)
#   GPU_SH_SKIP="py- mixed" ...         # skip the stages whose names start with these words (here:
#                                       # the PyTorch references and the mixed-precision accuracy runs,
#                                       # when an earlier run on the same kind of GPU recorded them)
#
# Vulkan: atomgrad needs a Vulkan loader and the NVIDIA ICD (where there is no system loader,
# the caller unpacks one first, e.g. `for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig`).
set -u
cd "$(dirname "$0")/.." || exit 1

OUT=${OUT:-./gpu-results}
mkdir -p "$OUT" || exit 1
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT"/*.out "$OUT/stages.tsv" "$OUT/notes.txt" "$OUT/results.json"
exec > >(tee "$OUT/gpu.log") 2>&1
TEE=$!

BUDGET=${GPU_SH_BUDGET:-480}
RESERVE=15 # seconds kept for the summary
T0=$SECONDS
PY=${PYTHON:-python3}
# note LINE...: a message for the log that the summary repeats (why a stage did not run).
note() {
  printf '%s\n' "$*" >>"$OUT/notes.txt"
  printf 'gpu.sh: %s\n' "$1"
  shift
  for l in "$@"; do printf '        %s\n' "$l"; done
}
left() { echo $((BUDGET - RESERVE - (SECONDS - T0))); }

# stage NAME LIMIT CMD...: runs CMD under `timeout` (capped by the time left), its output to the
# log and to $OUT/NAME.out, and records "NAME status exit seconds" in $OUT/stages.tsv.
stage() {
  local name=$1 limit=$2 avail rc status t skip
  shift 2
  for skip in ${GPU_SH_SKIP:-}; do
    case $name in
      "$skip"*)
        echo "== [$name] skipped (GPU_SH_SKIP)"
        printf '%s\tskipped\t-1\t0\n' "$name" >>"$OUT/stages.tsv"
        return 0
        ;;
    esac
  done
  avail=$(left)
  if [ "$avail" -lt 10 ]; then
    echo "== [$name] skipped: out of time (budget ${BUDGET}s)"
    printf '%s\tskipped\t-1\t0\n' "$name" >>"$OUT/stages.tsv"
    return 0
  fi
  [ "$limit" -gt "$avail" ] && limit=$avail
  echo "== [$name] (timeout ${limit}s, $((SECONDS - T0))s elapsed): $*"
  t=$SECONDS
  timeout -k 5 "$limit" "$@" 2>&1 | tee "$OUT/$name.out"
  rc=${PIPESTATUS[0]}
  case $rc in
    0) status=ok ;;
    124 | 137) status=timeout ;;
    *) status=failed ;;
  esac
  echo "== [$name] $status (exit $rc, $((SECONDS - t))s)"
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$((SECONDS - t))" >>"$OUT/stages.tsv"
  return 0
}

echo "gpu.sh: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname), $(nproc) CPUs, budget ${BUDGET}s, results in $OUT"
echo "commit: $(git rev-parse HEAD 2>/dev/null || echo 'unknown (no git)')"
if command -v nvidia-smi >/dev/null; then
  timeout 30 nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >"$OUT/nvidia-smi.out" 2>&1
  cat "$OUT/nvidia-smi.out"
else
  echo "nvidia-smi: not found"
fi

# 1. Binaries and adapter.
BIN=""
if [ -f .gpu/bin.tar.xz ]; then
  TMP=$(mktemp -d)
  trap 'rm -rf "$TMP"' EXIT
  if tar -C "$TMP" -xJf .gpu/bin.tar.xz && [ -x "$TMP/bin/atomgrad" ]; then
    BIN=$TMP/bin
    cat "$BIN/MANIFEST"
  else
    note "could not unpack .gpu/bin.tar.xz; the atomgrad stages are skipped"
  fi
else
  note "no .gpu/bin.tar.xz: the atomgrad stages are skipped, the PyTorch references still run" \
    "(build it with 'bash benches/pack.sh' on a machine with Rust and carry .gpu along)"
fi

GPU=0
if [ -n "$BIN" ]; then
  stage info 30 "$BIN/atomgrad" info
  if grep -q '^type: *\(DiscreteGpu\|IntegratedGpu\|VirtualGpu\)' "$OUT/info.out"; then
    GPU=1
  elif grep -q '^type:' "$OUT/info.out"; then
    if [ "${ATOMGRAD_ALLOW_CPU:-0}" = 1 ]; then
      GPU=1
      what="the atomgrad stages run on it anyway (ATOMGRAD_ALLOW_CPU=1; not a GPU measurement)."
    else
      what="the atomgrad stages are skipped (ATOMGRAD_ALLOW_CPU=1 runs them)."
    fi
    note "atomgrad found only a CPU adapter ($(sed -n 's/^adapter: *//p' "$OUT/info.out")): the NVIDIA Vulkan driver" \
      "is not visible, so $what Vulkan ICD files:" \
      "$(ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json 2>/dev/null | tr '\n' ' ')"
  else
    note "atomgrad found no adapter (see info.out), so the atomgrad stages are skipped: is a Vulkan loader" \
      "installed (libvulkan.so.1; unpack .gl/*.deb with dpkg -x and run ldconfig) and the NVIDIA ICD json present?"
  fi
fi
HAVE_TORCH=0
if $PY -c 'import torch' 2>/dev/null; then
  HAVE_TORCH=1
  $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available:", torch.cuda.is_available())'
  $PY -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null ||
    note "PyTorch sees no CUDA device: the references run on the CPU (not a GPU comparison)"
else
  note "'$PY -c \"import torch\"' failed: the PyTorch references are skipped"
fi

FAST_TESTS=${GPU_SH_TESTS:-matmul conv atom softmax elementwise reduce layout pool batchnorm layernorm embedding random optim device peak}
BENCH_FLAGS=${GPU_SH_BENCH_FLAGS:-}
SLOW_TESTS="models training"
run_tests() { # $1 = phase budget in seconds, then test names
  local phase_end=$((SECONDS + $1)) t l
  shift
  for t in "$@"; do
    l=$((phase_end - SECONDS))
    [ "$l" -gt 90 ] && l=90
    if [ ! -x "$BIN/tests/$t" ]; then
      echo "== [test-$t] missing from .gpu/bin.tar.xz"
      printf 'test-%s\tmissing\t-1\t0\n' "$t" >>"$OUT/stages.tsv"
    elif [ "$l" -lt 5 ]; then
      echo "== [test-$t] skipped: test phase out of time"
      printf 'test-%s\tskipped\t-1\t0\n' "$t" >>"$OUT/stages.tsv"
    else
      stage "test-$t" "$l" "$BIN/tests/$t" --test-threads=8
    fi
  done
}

# 2-3. Kernel tests, then the benches of issue 7's targets.
if [ "$GPU" = 1 ]; then
  run_tests "${GPU_SH_TEST_BUDGET:-100}" $FAST_TESTS
  stage bench-train 150 "$BIN/kernels" $BENCH_FLAGS --profile train/
  stage bench-matmul-atom 120 "$BIN/kernels" $BENCH_FLAGS --profile matmul/ atom/
  stage bench-mixed 60 "$BIN/kernels" $BENCH_FLAGS mixed/
  # The same kernels compiled with wgpu's runtime checks (index clamps, loop counters; off by
  # default on GPUs).
  stage bench-checked 90 "$BIN/kernels" $BENCH_FLAGS --checked "matmul/Tiled128 4096" "matmul/Tiled 4096" \
    "atom/L_A-forward+backward N=256" mixed/ "train/fashion CNN atom batch 128" "train/sentiment"
fi

# 4. PyTorch references (vocab: the bundled reviews' vocabulary the bench printed).
if [ "$HAVE_TORCH" = 1 ]; then
  VOCAB=$(sed -n 's/^# sentiment data: vocab \([0-9]*\) ids.*/\1/p' "$OUT/bench-train.out" 2>/dev/null | head -n 1)
  R=benches/reference
  stage py-matmul 60 $PY $R/matmul.py
  stage py-cnn 90 $PY $R/cnn.py
  stage py-dcgan 60 $PY $R/dcgan.py
  stage py-transformer 60 $PY $R/transformer.py ${VOCAB:+--vocab $VOCAB}
  stage py-atom 60 $PY $R/atom.py
fi

# 5. The rest, as time allows: first the accuracy cost of mixed precision (f16 tensor-core
# forward matmuls) on a classifier and a GAN, same seed, f32 vs --mixed-precision.
mixed_runs() {
  local t m k i=0
  for t in "synthetic --method atom" "gan2d --method atom"; do
    for k in 0 1 2; do
      for m in "" "--mixed-precision"; do
        i=$((i + 1))
        echo "## train --task $t --seed $k $m"
        # shellcheck disable=SC2086
        "$BIN/atomgrad" train --task $t --seed $k $m --quiet --out "$TMP/mixed-$i" || echo "(exit $?)"
      done
    done
  done
}
if [ "$GPU" = 1 ]; then
  export BIN TMP
  export -f mixed_runs # `timeout` runs programs, so the function goes through bash -c
  stage mixed 90 bash -c mixed_runs
fi
if [ "$GPU" = 1 ]; then
  stage bench-other 120 "$BIN/kernels" $BENCH_FLAGS elementwise/ reduce/ softmax/ conv/ pool/ batchnorm/ layernorm/ optim/ step/
  run_tests "${GPU_SH_SLOW_TEST_BUDGET:-120}" $SLOW_TESTS
  # A DCGAN 4x wider than the lavapipe-sized default, as long as the RESULTS.md comparison (20
  # epochs): samples and Fréchet distance in gan-wide/.
  stage gan-wide 200 "$BIN/atomgrad" compare --task gan --channels 128 --epochs 20 --seeds 1 --methods ce,atom --quiet \
    --force --out "$OUT/gan-wide"
fi
[ "$HAVE_TORCH" = 1 ] && stage py-cnn-compile 150 $PY benches/reference/cnn.py --compile --method ce

# 6. Summary.
echo "== summary ($((SECONDS - T0))s elapsed)"
if command -v "$PY" >/dev/null; then
  timeout 30 $PY benches/reference/summarize.py "$OUT" || echo "gpu.sh: summarize.py failed (exit $?)"
else
  echo "no $PY: raw lines follow"
  grep -h ' ms ' "$OUT"/bench-*.out 2>/dev/null
  cat "$OUT/stages.tsv"
fi
# Let tee finish writing gpu.log before the caller collects $OUT.
exec >&- 2>&-
wait "$TEE" 2>/dev/null || sleep 1
