#!/usr/bin/env bash
# Installs the Debian 12 packages reparq needs, only those that are missing.
# Usage: scripts/setup.sh [--with-arm] [--with-fuzz]
set -euo pipefail
pkgs=(build-essential cmake ninja-build git pkg-config ccache
      libtorch-dev libopenblas0-openmp libopenblas-dev
      libeigen3-dev libfmt-dev libgtest-dev googletest libbenchmark-dev
      libcli11-dev nlohmann-json3-dev libstb-dev zlib1g-dev
      libdnnl-dev ocl-icd-opencl-dev opencl-c-headers
      python3-torch python3-numpy
      dataset-fashion-mnist)
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
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#pkgs[@]} packages present"
  exit 0
fi
echo "setup: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
