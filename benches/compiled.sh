#!/usr/bin/env bash
# Issue 26's campaign: every training step of benches/kernels.rs (`train/`) against the same step
# in PyTorch eager, torch.compile and torch.compile(mode="reduce-overhead") (TF32 off: f32 against
# IEEE f32), then PyTorch with TF32 + f16 autocast against atomgrad's --mixed-precision; the
# matmul and tensor-core numbers; the ratio table. On a GPU machine without Rust, with the
# binaries of benches/pack.sh (.gpu/bin.tar.xz) and PyTorch; each part fits a 15-minute slot.
#
#   bash benches/compiled.sh PART [PART...]     # $OUT/compiled-<part>.jsonl, $OUT/compiled.log
#
# Parts:
#   small    the synthetic MLP, CNN, DCGAN and Transformer: atomgrad train/ and matmul/, PyTorch
#            in the three f32 modes
#   large    the ResNet, the 4-layer Transformer and the standard DCGAN in the three f32 modes
#   mixed    PyTorch --tf32 --amp (eager and reduce-overhead) against the `... mixed` benches
#   table    the ratio table of every *.jsonl in $OUT (also runs after each part)
# Compilation and warm-up are excluded from every PyTorch time (common.time_steps warms up 10
# steps after compiling); atomgrad's pipelines are compiled before its timing starts.
set -u
cd "$(dirname "$0")/.." || exit 1
. benches/campaign.sh
campaign compiled "${COMPILED_BUDGET:-540}" "${WORK:-./compiled-runs}" "$@"

# to FILE LIMIT CMD...: `run`, its output also appended to FILE.
to() {
  local file=$1
  shift
  run "$@" | tee -a "$file"
}

# modes FILE LIMIT SCRIPT ARGS...: one reference in eager, compile and reduce-overhead.
modes() {
  local file=$1 limit=$2 script=$3
  shift 3
  to "$file" 60 $PY "benches/reference/$script" "$@"
  to "$file" "$limit" $PY "benches/reference/$script" "$@" --compile
  to "$file" "$limit" $PY "benches/reference/$script" "$@" --mode reduce-overhead
}

table() {
  $PY - "$OUT" <<'PYEOF'
import glob, json, re, sys
out = sys.argv[1]
ours, refs = {}, {}
for path in sorted(glob.glob(f"{out}/compiled-*.jsonl")):
    for line in open(path):
        m = re.match(r"^train/(\S.*?)\s+(\d+\.\d+) ms", line)
        if m:
            ours[m[1].strip()] = float(m[2])
            continue
        try:
            j = json.loads(line)
        except ValueError:
            continue
        # the bench's name ends with its mode (common.mode_suffix): cnn, cnn-reduce-overhead-tf32-amp
        mode = "-".join(t for t in j.get("bench", "").split("-") if t in ("compile", "reduce", "overhead", "tf32", "amp"))
        mode = mode or "eager"
        for r in j.get("results", []):
            if "ms_per_step" in r:
                refs.setdefault(r["name"], {})[mode] = r["ms_per_step"]
sys.path.insert(0, "benches/reference")
from names import PAIRS as pairs
def cell(x):
    return f"{x:.3f}" if x else "n/a"
print("\n| training step | atomgrad f32 (ms) | eager | compile | reduce-overhead | best compiled / atomgrad |")
print("| --- | --- | --- | --- | --- | --- |")
for a, p in pairs:
    x, r = ours.get(a), refs.get(p, {})
    if not (x or r):
        continue  # a step this campaign does not time
    best = min([v for k, v in r.items() if k in ("compile", "reduce-overhead")], default=None)
    ratio = f"{best / x:.2f}" if x and best else "n/a"
    print(f"| {a} | {cell(x)} | {cell(r.get('eager'))} | {cell(r.get('compile'))} | {cell(r.get('reduce-overhead'))} | {ratio} |")
print("\n| mixed precision | atomgrad --mixed-precision (ms) | PyTorch TF32 + AMP eager | reduce-overhead | best / atomgrad |")
print("| --- | --- | --- | --- | --- |")
for a, p in pairs:
    x, r = ours.get(a + " mixed"), refs.get(p, {})
    e, ro = r.get("tf32-amp"), r.get("reduce-overhead-tf32-amp")
    if not (x or e or ro):
        continue
    best = min([v for v in (e, ro) if v], default=None)
    ratio = f"{best / x:.2f}" if x and best else "n/a"
    print(f"| {a} | {cell(x)} | {cell(e)} | {cell(ro)} | {ratio} |")
PYEOF
}

for part in "$@"; do
  f=$OUT/compiled-$part.jsonl
  case $part in
    small)
      to "$f" 150 "$K" --quick train/synthetic train/fashion\ CNN train/DCGAN\ G+D train/sentiment\ Transformer\ batch matmul/
      modes "$f" 120 synthetic.py
      modes "$f" 150 cnn.py
      modes "$f" 150 dcgan.py --batches 64
      modes "$f" 150 transformer.py
      ;;
    large)
      to "$f" 150 "$K" --quick "train/fashion ResNet" "train/sentiment Transformer base" "train/DCGAN base"
      modes "$f" 150 resnet.py --time
      modes "$f" 150 transformer_base.py --time
      modes "$f" 150 dcgan_base.py --time
      ;;
    mixed)
      to "$f" 120 "$K" --quick mixed/ "train/sentiment Transformer batch 64 mixed" "train/sentiment Transformer base batch 64 mixed"
      for s in "transformer.py" "transformer_base.py --time" "resnet.py --time" "cnn.py --method ce"; do
        to "$f" 60 $PY benches/reference/$s --tf32 --amp
        to "$f" 150 $PY benches/reference/$s --tf32 --amp --mode reduce-overhead
      done
      ;;
    table) ;;
    *) echo "compiled.sh: unknown part $part (small, large, mixed, table)"; exit 2 ;;
  esac
  table | tee "$OUT/compiled-table.md"
done
echo "compiled.sh: done in $((SECONDS - T0)) s"
