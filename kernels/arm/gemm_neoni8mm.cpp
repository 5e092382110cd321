// gemm_neoni8mm.cpp: gemm_u8s8s32_4x16c4__neoni8mm and gemm_u8s4s32_4x16c8__neoni8mm, mixed-sign
// dot kernels (ARMv8.6 FEAT_I8MM: SUDOT by element, s8 weights x u8 activations, no offset).
// Built with -march=armv8.2-a+dotprod+i8mm -ffp-contract=off (this file only).
#include "kernels/arm/gemm_neon_impl.h"

#if !defined(__ARM_FEATURE_MATMUL_INT8)
#error "gemm_neoni8mm.cpp needs -march=armv8.2-a+i8mm"
#endif

namespace reparq {
namespace detail {

GemmIsaKernels gemm_kernels_neoni8mm() {
  GemmIsaKernels k;
  k.panel_int8 = panel<Dot::Sudot, false>;
  k.panel_int4 = panel<Dot::Sudot, true>;
  k.rowsum = rowsum;
  k.name_int8 = "gemm_u8s8s32_4x16c4__neoni8mm";
  k.name_int4 = "gemm_u8s4s32_4x16c8__neoni8mm";
  return k;
}

}  // namespace detail
}  // namespace reparq
