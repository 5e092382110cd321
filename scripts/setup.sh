#!/usr/bin/env bash
# Installs the Debian 12 packages reparq needs, only those that are missing.
# Usage: scripts/setup.sh [--with-arm] [--with-fuzz]
set -euo pipefail
pkgs=(build-essential cmake ninja-build git pkg-config ccache
      libtorch-dev libopenblas0-openmp
      libeigen3-dev libfmt-dev libgtest-dev googletest libbenchmark-dev
      libcli11-dev nlohmann-json3-dev libstb-dev zlib1g-dev
      libdnnl-dev ocl-icd-opencl-dev opencl-c-headers
      python3-torch python3-numpy
      dataset-fashion-mnist
      librsvg2-bin)   # rsvg-convert: the plot test renders the SVGs with it (skipped if missing)
for a in "$@"; do
  case "$a" in
    --with-arm) pkgs+=(g++-aarch64-linux-gnu qemu-user) ;;
    --with-fuzz) pkgs+=(clang libclang-rt-14-dev) ;;
    *) echo "setup.sh: unknown option '$a'" >&2; exit 1 ;;
  esac
done
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#pkgs[@]} packages present"
else
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# LibTorch reaches BLAS through Debian's alternatives. The OpenMP build of OpenBLAS shares
# libgomp with LibTorch (one thread pool); the pthread build, if some other package pulled it
# in, would oversubscribe the cores. Point the three links at the OpenMP build.
arch_triplet=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
omp=/usr/lib/$arch_triplet/openblas-openmp
for link in libblas.so.3 liblapack.so.3 libopenblas.so.0; do
  alt="$link-$arch_triplet"
  cur=$(update-alternatives --query "$alt" 2>/dev/null | sed -n 's/^Value: //p')
  if [ -e "$omp/$link" ] && [ "$cur" != "$omp/$link" ]; then
    echo "setup: pointing $link at the OpenMP OpenBLAS ($omp)"
    $SUDO update-alternatives --set "$alt" "$omp/$link" >/dev/null
  fi
done
