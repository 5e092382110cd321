# Toolchain for cross-building kernels/ (and its tests) for 64-bit Arm Linux on a Debian x86-64
# host: packages g++-aarch64-linux-gnu and qemu-user (scripts/setup.sh --with-arm).
#
#   cmake -S . -B build-arm -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
#         -DREPARQ_WITH_TORCH=OFF -DREPARQ_BUILD_BENCH=OFF
#
# Test programs run through qemu-user (CMAKE_CROSSCOMPILING_EMULATOR), so gtest discovery and
# ctest work unchanged; QEMU_CPU=max / cortex-a76 / cortex-a53 picks the emulated CPU.
# Header-only and source-only dependencies (nlohmann-json, googletest) come from the host:
# see cmake/cross_deps.cmake.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(REPARQ_CROSS_TRIPLE aarch64-linux-gnu)
set(CMAKE_C_COMPILER ${REPARQ_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${REPARQ_CROSS_TRIPLE}-g++)
set(CMAKE_STRIP ${REPARQ_CROSS_TRIPLE}-strip CACHE FILEPATH "")

# Libraries and packages only from the Arm sysroot; programs (qemu, python) from the host.
set(CMAKE_FIND_ROOT_PATH /usr/${REPARQ_CROSS_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

find_program(REPARQ_QEMU_AARCH64 qemu-aarch64)
if(REPARQ_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${REPARQ_QEMU_AARCH64} -L /usr/${REPARQ_CROSS_TRIPLE})
endif()
