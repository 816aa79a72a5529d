#!/usr/bin/env bash
# Downloads (does not install) the Debian packages a bare GPU machine needs to run atomgrad on
# NVIDIA's Vulkan driver: the Vulkan loader and GLVND, which NVIDIA's ICD (libGLX_nvidia.so.0)
# loads through — with the loader alone atomgrad finds no adapter. Run it here, on a Debian or
# Ubuntu machine with network access; carry `.gl` to the GPU machine and unpack there with
#   for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
#
#   bash benches/fetch-gl.sh          # -> .gl/*.deb (git-ignored through .git/info/exclude)
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.gl/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info && echo '/.gl/' >>.git/info/exclude; }
lists=$(mktemp -d)
trap 'rm -rf "$lists"' EXIT
mkdir -p .gl "$lists/partial"
o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$lists")
apt-get "${o[@]}" update >/dev/null
(cd .gl && apt-get "${o[@]}" download libvulkan1 libglvnd0 libegl1 libgl1 libglx0 libgles2 libopengl0)
ls -l .gl
