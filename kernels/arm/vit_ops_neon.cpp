// vit_ops_neon.cpp: the row operations on Arm64: the reference ones (kernels/vit_ops_impl.h,
// compiled for armv8-a) except map_bytes, the level-table pass (ActQuant::lut), which looks
// its 256-entry table up with NEON's four-register tbl/tbx. Bit-identical to the reference by
// construction (a table lookup has no rounding); tests/kernels/test_executor.cpp
// (VitRowOps.MapBytesBitIdenticalAcrossIsas) checks it under qemu (.ci/arm-tests.sh).
#include <arm_neon.h>

#include <cstdint>

#include "kernels/vit_ops.h"

namespace reparq {
namespace vitops_neon {
#define VO_NAME "neon"
#include "kernels/vit_ops_impl.h"
#undef VO_NAME

// tbl answers indices 0..63 from the first quarter and 0 elsewhere; each tbx answers the next
// quarter after 64 more is subtracted (indices that wrap or stay >= 64 leave the byte as is).
static void n_map_bytes(uint8_t* p, int64_t n, const uint8_t* table) {
  const uint8x16x4_t t0 = vld1q_u8_x4(table), t1 = vld1q_u8_x4(table + 64);
  const uint8x16x4_t t2 = vld1q_u8_x4(table + 128), t3 = vld1q_u8_x4(table + 192);
  const uint8x16_t k64 = vdupq_n_u8(64);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    uint8x16_t x = vld1q_u8(p + i);
    uint8x16_t r = vqtbl4q_u8(t0, x);
    x = vsubq_u8(x, k64);
    r = vqtbx4q_u8(r, t1, x);
    x = vsubq_u8(x, k64);
    r = vqtbx4q_u8(r, t2, x);
    x = vsubq_u8(x, k64);
    r = vqtbx4q_u8(r, t3, x);
    vst1q_u8(p + i, r);
  }
  if (i < n) vo_map_bytes(p + i, n - i, table);
}

static const VitRowOps n_table = {
    "neon", vo_layernorm_quant, vo_layernorm_quant2, vo_softmax_levels, vo_gelu_quant, vo_quant_row, vo_quant_row_s8,
    vo_exp_row, vo_gelu_row, vo_codes_row, n_map_bytes, vo_layernorm_row, vo_ef_quant_rows,
};
}  // namespace vitops_neon

namespace detail {
const VitRowOps& vit_row_ops_neon() { return vitops_neon::n_table; }
}  // namespace detail
}  // namespace reparq
