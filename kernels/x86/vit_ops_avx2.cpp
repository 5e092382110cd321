// vit_ops_avx2.cpp: the executor's float row operations (kernels/vit_ops_impl.h) compiled with
// the avx2 flags: the compiler vectorizes the same loops; results are bit-identical to
// kernels/vit_ref.cpp (no FMA contraction, no fast-math; tested in test_executor.cpp).
// GELU + quantize is written with AVX2 intrinsics below: GCC 12 left the scalar twin's
// per-interval erf coefficient lookups scalar (7.1 ns per element, 10x the AVX-512 version).
// Every vector operation is the same IEEE float operation on the same operands in the same
// order as vo_gelu_quant / vo_erf / vo_quantize (kernels/vit_ops_impl.h).
#include <immintrin.h>

#include <cstdint>

#include "kernels/vit_ops.h"

namespace reparq {
namespace vitops_avx2 {
#define VO_NAME "avx2"
#include "kernels/vit_ops_impl.h"
#undef VO_NAME

// vo_erf_coef transposed: row j holds coefficient j of the eight intervals, so a permute by
// the interval index picks each lane's coefficient (constant-initialized: no start-up code).
struct ErfTable8 {
  alignas(32) float c[8][8];
  constexpr ErfTable8() : c{} {
    for (int j = 0; j < 8; ++j)
      for (int i = 0; i < 8; ++i) c[j][i] = vo_erf_coef[i][j];
  }
};
static constexpr ErfTable8 v_erf_table8{};

// vo_erf on 8 lanes.
static inline __m256 v_erf(__m256 x) {
  const __m256 sign = _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int32_t>(0x80000000u))));
  const __m256 ax = _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF)));
  const __m256 ac = _mm256_min_ps(ax, _mm256_set1_ps(3.99f));  // ax < 3.99 ? ax : 3.99 (NaN -> 3.99)
  const __m256i i = _mm256_cvttps_epi32(_mm256_mul_ps(ac, _mm256_set1_ps(2.0f)));
  const __m256 centre = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(i), _mm256_set1_ps(0.5f)), _mm256_set1_ps(0.25f));
  const __m256 t = _mm256_sub_ps(ac, centre);
  const ErfTable8& tb = v_erf_table8;
  __m256 p = _mm256_permutevar8x32_ps(_mm256_load_ps(tb.c[7]), i);
  for (int j = 6; j >= 0; --j) p = _mm256_add_ps(_mm256_mul_ps(p, t), _mm256_permutevar8x32_ps(_mm256_load_ps(tb.c[j]), i));
  const __m256 one = _mm256_set1_ps(1.0f);
  p = _mm256_min_ps(p, one);                                                          // p < 1 ? p : 1
  p = _mm256_blendv_ps(one, p, _mm256_cmp_ps(ax, _mm256_set1_ps(4.0f), _CMP_LT_OQ));  // ax < 4 ? p : 1
  return _mm256_or_ps(p, sign);
}

// vo_quantize on 8 lanes -> int32 codes in [0, qmax].
static inline __m256i v_quantize(__m256 y, QuantParams q) {
  __m256 t = _mm256_mul_ps(y, _mm256_set1_ps(q.inv_scale));
  t = _mm256_max_ps(t, _mm256_set1_ps(-65536.0f));  // t > lo ? t : lo (NaN -> lo)
  t = _mm256_min_ps(t, _mm256_set1_ps(65536.0f));   // t < hi ? t : hi
  const __m256 magic = _mm256_set1_ps(12582912.0f);
  t = _mm256_sub_ps(_mm256_add_ps(t, magic), magic);  // vo_round_even
  __m256i c = _mm256_add_epi32(_mm256_cvttps_epi32(t), _mm256_set1_epi32(q.zero));
  c = _mm256_max_epi32(c, _mm256_setzero_si256());
  return _mm256_min_epi32(c, _mm256_set1_epi32(q.qmax));
}

// vo_gelu_quant: whole vectors of 8, the tail (n % 8) by the scalar twin.
static void v_gelu_quant(const float* y, int n, const float* mul, QuantParams q, uint8_t* out) {
  const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f), rs2 = _mm256_set1_ps(0.70710678f);
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(y + i);
    // v * 0.5f * (1.0f + erf(v * 0.70710678f)), left to right.
    __m256 g = _mm256_mul_ps(_mm256_mul_ps(v, half), _mm256_add_ps(one, v_erf(_mm256_mul_ps(v, rs2))));
    if (mul) g = _mm256_mul_ps(g, _mm256_loadu_ps(mul + i));
    const __m256i c = v_quantize(g, q);  // 0..255
    const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out + i), _mm_packus_epi16(w, w));
  }
  if (i < n) vo_gelu_quant(y + i, n - i, mul ? mul + i : nullptr, q, out + i);
}

static const VitRowOps v_table = {
    "avx2", vo_layernorm_quant, vo_layernorm_quant2, vo_softmax_levels, v_gelu_quant, vo_quant_row,
    vo_quant_row_s8, vo_exp_row, vo_erf_row, vo_codes_row,
};

}  // namespace vitops_avx2

namespace detail {
const VitRowOps& vit_row_ops_avx2() { return vitops_avx2::v_table; }
}  // namespace detail
}  // namespace reparq
