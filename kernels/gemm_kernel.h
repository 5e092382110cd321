// gemm_kernel.h: internal contract between the GEMM driver (gemm.cpp) and its per-ISA kernels.
// Not part of the public API. Each ISA translation unit fills one GemmIsaKernels; gemm.cpp
// keeps them in a table built once and never asks the CPU anything itself.
#pragma once

#include <cstdint>

#include "kernels/gemm.h"

namespace reparq {
namespace detail {

struct GemmCall {
  const PackedWeights* w = nullptr;
  const GemmArgs* args = nullptr;
  const std::int32_t* rowsum = nullptr;  // M row sums of A when w->needs_rowsum, else nullptr
};

// Computes output rows [m_begin, m_end) x channels of panel `panel`.
using GemmPanelFn = void (*)(const GemmCall& call, int m_begin, int m_end, int panel);
// out[i] = sum_k a[i*lda + k] for i < m.
using RowsumFn = void (*)(const std::uint8_t* a, std::int64_t lda, int m, int k,
                          std::int32_t* out);

// Optional fast int8 packer for the ISA's layout (see repack_weights_s8): writes the whole
// packed area (panels, zero padding included) to dst and colsum[i] = sum_j W[i][j] for i < n.
// Returns false (writing nothing) when it does not handle these strides.
using PackS8Fn = bool (*)(const std::int8_t* src, std::int64_t stride_n, std::int64_t stride_k,
                          int n, int k, std::int8_t* dst, std::int32_t* colsum);

struct GemmIsaKernels {
  PackS8Fn pack_s8 = nullptr;
  GemmPanelFn panel_int8 = nullptr;
  GemmPanelFn panel_int4 = nullptr;
  RowsumFn rowsum = nullptr;
  const char* name_int8 = "";
  const char* name_int4 = "";
};

// Defined in kernels/x86/gemm_avx2.cpp and kernels/x86/gemm_avx512vnni.cpp.
GemmIsaKernels gemm_kernels_avx2();
GemmIsaKernels gemm_kernels_avx512vnni();
// Defined in kernels/arm/gemm_neon.cpp, gemm_neondot.cpp and gemm_neoni8mm.cpp (Arm64 builds).
GemmIsaKernels gemm_kernels_neon();
GemmIsaKernels gemm_kernels_neondot();
GemmIsaKernels gemm_kernels_neoni8mm();

// Panel geometry per ISA (shared by the packer and the kernels).
constexpr int kVnniBlock = 16, kVnniPanelBlocks = 4;  // 64 channels per panel
constexpr int kAvx2Block = 8, kAvx2PanelBlocks = 2;   // 16 channels per panel
constexpr int kScalarPanel = 16;
constexpr int kNeonBlock = 16, kNeonPanelBlocks = 4;  // Arm: 64 channels per panel (Vnni layout)
constexpr int kMmlaBlock = 16, kMmlaPanelBlocks = 4;  // Arm NeonI8mm: 64 channels, 8 k per group

}  // namespace detail
}  // namespace reparq
