#!/usr/bin/env bash
# The README's main job: installs missing Debian packages, builds, and runs `reparq demo` on a
# bundled model (calibrate, quantize, evaluate with the integer executor, measure speed).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
exec "${BUILD_DIR:-build}/apps/reparq" demo "$@"
