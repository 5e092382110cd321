// gemm_neon.cpp: gemm_u8s8s32_2x16c4__neon and gemm_u8s4s32_2x16c8__neon, the plain Advanced
// SIMD kernels every AArch64 CPU runs (widening multiplies, pairwise accumulation; see
// gemm_neon_impl.h). Built with -march=armv8-a -ffp-contract=off (this file only).
#include "kernels/arm/gemm_neon_impl.h"

namespace reparq {
namespace detail {

GemmIsaKernels gemm_kernels_neon() {
  GemmIsaKernels k;
  k.panel_int8 = panel<Dot::Widen, false>;
  k.panel_int4 = panel<Dot::Widen, true>;
  k.rowsum = rowsum;
  k.name_int8 = "gemm_u8s8s32_2x16c4__neon";
  k.name_int4 = "gemm_u8s4s32_2x16c8__neon";
  return k;
}

}  // namespace detail
}  // namespace reparq
