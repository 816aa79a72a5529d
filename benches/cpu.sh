#!/usr/bin/env bash
# The CPU path, measured (issue 26): atomgrad's training steps on lavapipe against the same steps
# in PyTorch on the CPU of the same machine, in one run, one after the other (never side by side),
# and the table of their ratios.
#
#   bash benches/cpu.sh                  # needs `cargo bench --no-run` built and /usr/bin/python3 with torch
#
# PyTorch runs with torch.set_num_threads(nproc) (its default) and atomgrad with lavapipe's
# LP_NUM_THREADS default (the cores); both time whole steps (forward, backward, optimizer) with
# the host overhead included (benches/reference/common.py, benches/kernels.rs).
set -u
cd "$(dirname "$0")/.." || exit 1
export NODEVICE_SELECT=1
PY=${PYTHON:-/usr/bin/python3}
OUT=$(mktemp -d)
K=$(ls -t target/release/deps/kernels-* 2>/dev/null | grep -v '\.d$' | head -n 1)
[ -x "$K" ] || { echo "cpu.sh: build the bench first (cargo bench --no-run)"; exit 1; }
echo "cpu.sh: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, commit $(git rev-parse --short HEAD 2>/dev/null)"
"$K" --quick train/ >"$OUT/atomgrad.txt" 2>&1
cat "$OUT/atomgrad.txt"
cd benches/reference || exit 1
{
  $PY synthetic.py --budget 2
  $PY cnn.py --batch 128 --budget 2
  $PY dcgan.py --batches 64 --budget 2
  $PY transformer.py --batch 64 --budget 2
  $PY resnet.py --time --batch 128 --budget 2
  $PY transformer_base.py --time --batch 64 --budget 2 2>/dev/null
  $PY dcgan_base.py --time --batch 128 --budget 2
  $PY pacgan2d.py --time --budget 2
} >"$OUT/pytorch.jsonl" 2>&1
cat "$OUT/pytorch.jsonl"
$PY - "$OUT" <<'EOF'
import json, re, sys
out = sys.argv[1]
ours = {}
for line in open(f"{out}/atomgrad.txt"):
    m = re.match(r"^(train/\S.*?)\s+(\d+\.\d+) ms", line)
    if m:
        ours[m[1].strip()] = float(m[2])
from names import PAIRS as pairs  # benches/reference/names.py (the working folder here)
refs = {}
for line in open(f"{out}/pytorch.jsonl"):
    try:
        j = json.loads(line)
    except ValueError:
        continue
    for r in j.get("results", []):
        if "ms_per_step" in r:
            refs[r["name"]] = r["ms_per_step"]
print("\n| training step | atomgrad, lavapipe (ms) | PyTorch CPU (ms) | ratio (PyTorch / atomgrad: > 1 = atomgrad faster) |")
print("| --- | --- | --- | --- |")
for a, p in pairs:
    x, y = ours.get("train/" + a), refs.get(p)
    ratio = f"{y / x:.2f}" if x and y else "n/a"
    print(f"| {a} | {f'{x:.1f}' if x else 'n/a'} | {f'{y:.1f}' if y else 'n/a'} | {ratio} |")
EOF
