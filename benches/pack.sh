#!/usr/bin/env bash
# Builds the release binaries here and packs them for benches/gpu.sh, which runs them on a machine
# with a GPU and no Rust toolchain (docs/PERFORMANCE.md, "How to run on a GPU").
#
#   bash benches/pack.sh        # -> .gpu/bin.tar.xz (git-ignored; carry `.gpu` to the GPU machine)
#
# Packed (stripped): the `atomgrad` binary, the bench `kernels`, and the kernel test executables
# listed in TESTS. None of them reads a file of this checkout at run time: shaders, fonts and the
# bundled data sets are compiled in (include_str!/include_bytes!), and these tests read no files,
# so the binaries run from any directory. (tests/shaders.rs and tests/data.rs do read files via
# the build machine's absolute CARGO_MANIFEST_DIR and are not packed; neither is tests/cli.rs,
# which needs cargo's binary path.) The binaries need glibc >= the build machine's (2.35 here).
set -euo pipefail
cd "$(dirname "$0")/.."

TESTS="matmul conv atom softmax elementwise reduce layout pool batchnorm layernorm embedding random optim models training device peak"
LIMIT=$((64 * 1024 * 1024)) # what the device tool carries, all paths together

log=$(mktemp)
trap 'rm -rf "$log" "${stage:-}"' EXIT
echo "== cargo build --release"
cargo build --release
echo "== cargo test --release --no-run"
cargo test --release --no-run 2>&1 | tee -a "$log"
echo "== cargo bench --no-run"
cargo bench --no-run 2>&1 | tee -a "$log"

# The executable cargo just named for target <name> ("Executable tests/<name>.rs (path)"), else
# the newest executable file target/release/deps/<name>-<16 hex>.
exe() {
  local p
  p=$(sed -n "s#^ *Executable \\(tests\\|benches\\)/$1\\.rs (\\(.*\\))\$#\\2#p" "$log" | tail -n 1)
  if [ -z "$p" ]; then
    p=$(find target/release/deps -maxdepth 1 -type f -perm -u+x -regextype posix-extended \
      -regex ".*/$1-[0-9a-f]{16}" -printf '%T@ %p\n' | sort -nr | head -n 1 | cut -d' ' -f2-)
  fi
  [ -n "$p" ] && [ -f "$p" ] && [ -x "$p" ] || { echo "pack.sh: no executable for $1" >&2; return 1; }
  echo "$p"
}

stage=$(mktemp -d)
mkdir -p "$stage/bin/tests"
cp target/release/atomgrad "$stage/bin/atomgrad"
cp "$(exe kernels)" "$stage/bin/kernels"
for t in $TESTS; do
  cp "$(exe "$t")" "$stage/bin/tests/$t"
done
strip "$stage/bin/atomgrad" "$stage/bin/kernels" "$stage"/bin/tests/*
{
  echo "commit:  $(git rev-parse HEAD)$(git diff --quiet HEAD -- src benches tests shaders Cargo.toml Cargo.lock || echo ' (with uncommitted changes)')"
  echo "built:   $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m), $(ldd --version 2>&1 | head -n 1)"
  echo "rustc:   $(rustc --version)"
  echo "tests:   $TESTS"
} >"$stage/bin/MANIFEST"
(cd "$stage/bin" && sha256sum atomgrad kernels tests/* >>MANIFEST)

mkdir -p .gpu
rm -f .gpu/bin.tar.xz
XZ_OPT=${XZ_OPT:--T0} tar -C "$stage" -cJf .gpu/bin.tar.xz bin
size=$(stat -c %s .gpu/bin.tar.xz)
cat "$stage/bin/MANIFEST"
echo "packed .gpu/bin.tar.xz: $((size / 1024)) KiB ($(du -sh "$stage/bin" | cut -f1) unpacked)"
if [ "$size" -gt "$LIMIT" ]; then
  echo "pack.sh: .gpu/bin.tar.xz is over the 64 MiB the device tool carries" >&2
  exit 1
fi
