# Sourced by the GPU campaign scripts (protocol-gpu.sh, science.sh, gan.sh, compiled.sh): the
# parts they share. `campaign NAME BUDGET_S WORK_DIR "$@"` sets OUT (default ./gpu-results, the
# log NAME.log in it), WORK, the unpacked binaries A (atomgrad) and K (kernels bench),
# ATOMGRAD_COMMIT, DATA (Fashion-MNIST), PY; then `left`, `run`, `compare` and `pack` below.
campaign() {
  local name=$1 budget=$2 work=$3
  shift 3
  OUT=${OUT:-./gpu-results}
  WORK=$work
  BUDGET=$budget
  mkdir -p "$OUT" "$WORK" || exit 1
  OUT=$(cd "$OUT" && pwd)
  WORK=$(cd "$WORK" && pwd)
  exec > >(tee -a "$OUT/$name.log") 2>&1
  T0=$SECONDS
  TMP=$(mktemp -d)
  trap 'rm -rf "$TMP"' EXIT
  tar -C "$TMP" -xJf .gpu/bin.tar.xz || { echo "$name: no .gpu/bin.tar.xz (bash benches/pack.sh)"; exit 1; }
  A=$TMP/bin/atomgrad
  K=$TMP/bin/kernels
  export ATOMGRAD_COMMIT
  ATOMGRAD_COMMIT=$(sed -n 's/^commit: *\([0-9a-f]\{7\}\).*/\1/p' "$TMP/bin/MANIFEST")
  DATA=${FASHION_DIR:-.data/fashion-mnist}
  [ -f "$DATA/train-images-idx3-ubyte.gz" ] || DATA=/usr/share/datasets/fashion-mnist
  PY=${PYTHON:-python3}
  echo "$name: $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $ATOMGRAD_COMMIT, budget ${BUDGET}s, Fashion-MNIST from $DATA, parts: $*"
  "$A" info | head -3
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  return 0
}

# Seconds of the budget left.
left() { echo $((BUDGET - (SECONDS - T0))); }

# run LIMIT CMD...: CMD under a timeout of LIMIT seconds, capped by the time left (skipped under 15).
run() {
  local limit=$1 avail
  shift
  avail=$(left)
  [ "$limit" -gt "$avail" ] && limit=$avail
  if [ "$limit" -lt 15 ]; then
    echo "== skipped (out of time): $*"
    return 0
  fi
  echo "== (timeout ${limit}s) $*"
  timeout -k 5 "$limit" "$@"
  echo "== exit $?"
}

# compare NAME LIMIT ARGS...: a comparison into $WORK/NAME, continued (`compare --resume`) when a
# cut-short one is there.
compare() {
  local name=$1 limit=$2
  shift 2
  if [ -f "$WORK/$name/config.json" ]; then
    run "$limit" "$A" compare --resume "$WORK/$name"
  else
    run "$limit" "$A" compare "$@" --out "$WORK/$name"
  fi
}

# pack NAME: $WORK/NAME into $OUT/NAME.tar.gz, without checkpoints (the device tool brings back
# few, small files).
pack() {
  tar -C "$WORK" -czf "$OUT/$1.tar.gz" --exclude='checkpoints' --exclude='*.safetensors' "$1" 2>/dev/null || true
}
