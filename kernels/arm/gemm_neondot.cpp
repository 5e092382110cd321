// gemm_neondot.cpp: gemm_u8s8s32_4x16c4__neondot and gemm_u8s4s32_4x16c8__neondot, SDOT
// kernels (ARMv8.2 FEAT_DotProd) with activations offset to s8 (a - 128; the correction is in
// gemm_neon_impl.h). Built with -march=armv8.2-a+dotprod -ffp-contract=off (this file only).
#include "kernels/arm/gemm_neon_impl.h"

#if !defined(__ARM_FEATURE_DOTPROD)
#error "gemm_neondot.cpp needs -march=armv8.2-a+dotprod"
#endif

namespace reparq {
namespace detail {

GemmIsaKernels gemm_kernels_neondot() {
  GemmIsaKernels k;
  k.panel_int8 = panel<Dot::Sdot, false>;
  k.panel_int4 = panel<Dot::Sdot, true>;
  k.rowsum = rowsum;
  k.name_int8 = "gemm_u8s8s32_4x16c4__neondot";
  k.name_int4 = "gemm_u8s4s32_4x16c8__neondot";
  return k;
}

}  // namespace detail
}  // namespace reparq
