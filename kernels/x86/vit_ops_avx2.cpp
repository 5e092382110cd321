// vit_ops_avx2.cpp: the executor's float row operations (kernels/vit_ops_impl.h) compiled with
// the avx2 flags: the compiler vectorizes the same loops; results are bit-identical to
// kernels/vit_ref.cpp (no FMA contraction, no fast-math; tested in test_executor.cpp).
// GELU + quantize and softmax + post-Softmax codes are written with AVX2 intrinsics below:
// GCC 12 left the scalar twin's per-interval GELU coefficient lookups and the coder's table
// lookups scalar (GELU 7.1 ns per element, 10x the AVX-512 version; softmax 5.2 ns, 3.5x).
// Every vector operation is the same IEEE float operation on the same operands in the same
// order as vo_gelu_quant / vo_gelu / vo_quantize (kernels/vit_ops_impl.h).
#include <immintrin.h>

#include <cstdint>

#include "kernels/vit_ops.h"

namespace reparq {
namespace vitops_avx2 {
#define VO_NAME "avx2"
#include "kernels/vit_ops_impl.h"
#undef VO_NAME

// Entry i (0..31) of a 32-entry table held in four registers (entry i is lane i % 8 of
// register i / 8): four permutes by index bits 0-2, three blends by bits 3 and 4.
static inline __m256 v_pick32(const __m256* t, __m256i i) {
  const __m256 lo = _mm256_blendv_ps(_mm256_permutevar8x32_ps(t[0], i), _mm256_permutevar8x32_ps(t[1], i),
                                     _mm256_castsi256_ps(_mm256_slli_epi32(i, 28)));   // bit 3 -> sign
  const __m256 hi = _mm256_blendv_ps(_mm256_permutevar8x32_ps(t[2], i), _mm256_permutevar8x32_ps(t[3], i),
                                     _mm256_castsi256_ps(_mm256_slli_epi32(i, 28)));
  return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(i, 27)));       // bit 4 -> sign
}

// vo_gelu on 8 lanes: each coefficient of the lanes' intervals by v_pick32 (per-lane gathers
// were 1.8x slower on Zen 4).
static inline __m256 v_gelu(__m256 y) {
  __m256 u = _mm256_add_ps(_mm256_mul_ps(y, _mm256_set1_ps(vo_phi_inv_w)), _mm256_set1_ps(16.0f));
  u = _mm256_max_ps(u, _mm256_setzero_ps());          // u > 0 ? u : 0 (NaN -> 0)
  u = _mm256_min_ps(u, _mm256_set1_ps(vo_phi_u_max));  // u < max ? u : max
  const __m256i i = _mm256_cvttps_epi32(u);
  const __m256 s = _mm256_sub_ps(u, _mm256_cvtepi32_ps(i));
  const VoPhiTable& tb = vo_phi_table;
  auto coef = [&](int j) {
    const float* t = tb.c[j];
    const __m256 regs[4] = {_mm256_load_ps(t), _mm256_load_ps(t + 8), _mm256_load_ps(t + 16), _mm256_load_ps(t + 24)};
    return v_pick32(regs, i);
  };
  __m256 p = coef(5);
  for (int j = 4; j >= 0; --j) p = _mm256_add_ps(_mm256_mul_ps(p, s), coef(j));
  return _mm256_mul_ps(y, p);
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
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 g = v_gelu(_mm256_loadu_ps(y + i));
    if (mul) g = _mm256_mul_ps(g, _mm256_loadu_ps(mul + i));
    const __m256i c = v_quantize(g, q);  // 0..255
    const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out + i), _mm_packus_epi16(w, w));
  }
  if (i < n) vo_gelu_quant(y + i, n - i, mul ? mul + i : nullptr, q, out + i);
}

// ---- softmax + post-Softmax codes ----------------------------------------------------------

// vo_exp on 8 lanes.
static inline __m256 v_exp(__m256 x) {
  const __m256 not_tiny = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_GE_OQ);
  __m256 xc = _mm256_min_ps(x, _mm256_set1_ps(88.0f));   // x < 88 ? x : 88 (NaN -> 88)
  xc = _mm256_max_ps(xc, _mm256_set1_ps(-87.0f));        // xc >= -87 ? xc : -87
  const __m256 magic = _mm256_set1_ps(12582912.0f);
  const __m256 n = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269502f)), magic), magic);
  __m256 r = _mm256_sub_ps(xc, _mm256_mul_ps(n, _mm256_set1_ps(0.693359375f)));
  r = _mm256_sub_ps(r, _mm256_mul_ps(n, _mm256_set1_ps(-2.12194440e-4f)));
  __m256 p = _mm256_set1_ps(1.98412698e-4f);
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.38888889e-3f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(8.33333333e-3f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(4.16666667e-2f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.66666667e-1f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(0.5f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.0f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e)), not_tiny);
}

// vo_code on 8 lanes (vo_nan_to_inf first): bucket start from the key, `steps` comparisons,
// then the level; three dependent gathers.
static inline __m256i v_level_gather(__m256 a0, const AttnCoder::View* cd) {
  const __m256 a = _mm256_blendv_ps(a0, _mm256_set1_ps(__builtin_inff()), _mm256_cmp_ps(a0, a0, _CMP_UNORD_Q));
  __m256i key = _mm256_sra_epi32(_mm256_castps_si256(a), _mm_cvtsi32_si128(cd->shift));
  key = _mm256_max_epi32(key, _mm256_set1_epi32(cd->key_min));
  key = _mm256_min_epi32(key, _mm256_set1_epi32(cd->key_max));
  key = _mm256_sub_epi32(key, _mm256_set1_epi32(cd->key_min));
  __m256i c = _mm256_i32gather_epi32(cd->start, key, 4);
  for (int st = 0; st < cd->steps; ++st) {
    const __m256 thr = _mm256_i32gather_ps(cd->thr, c, 4);
    c = _mm256_sub_epi32(c, _mm256_castps_si256(_mm256_cmp_ps(a, thr, _CMP_LT_OQ)));  // c += a < thr[c]
  }
  return _mm256_i32gather_epi32(cd->lut, c, 4);
}

// AttnCoder::affine_k on 8 lanes: the clamped r = round(a * k) and whether every lane is clear
// of the thresholds (else the caller takes the tables).
static inline bool v_affine_r(__m256 a, const AttnCoder::View* cd, __m256i* r_out) {
  const __m256 u = _mm256_mul_ps(a, _mm256_set1_ps(cd->affine_k));
  const __m256 r = _mm256_round_ps(u, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 d = _mm256_and_ps(_mm256_sub_ps(u, r), _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF)));
  if (_mm256_movemask_ps(_mm256_cmp_ps(d, _mm256_set1_ps(0.5f - AttnCoder::kAffineEta), _CMP_NLT_UQ)) != 0)
    return false;   // |u - r| >= 1/2 - eta, or NaN
  *r_out = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, _mm256_setzero_ps()), _mm256_set1_ps(float(cd->affine_q))));
  return true;
}
static inline __m256i v_level_affine(__m256 a, const AttnCoder::View* cd) {
  __m256i r;
  if (v_affine_r(a, cd, &r)) return _mm256_add_epi32(_mm256_set1_epi32(cd->affine_base), _mm256_mullo_epi32(r, _mm256_set1_epi32(cd->affine_g)));
  return v_level_gather(a, cd);
}

static void v_codes_row(const float* a, int n, const AttnCoder::View* cd, uint8_t* out) {
  if (cd->affine_k == 0.0f || cd->search_levels) return vo_codes_row(a, n, cd, out);
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    __m256i r;
    if (!v_affine_r(_mm256_loadu_ps(a + j), cd, &r)) {
      vo_codes_row(a + j, 8, cd, out + j);
      continue;
    }
    const __m256i c = _mm256_sub_epi32(_mm256_set1_epi32(cd->affine_q), r);
    const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out + j), _mm_packus_epi16(w, w));
  }
  vo_codes_row(a + j, n - j, cd, out + j);
}

// AttnCoder::search_levels (L <= 32) on 8 lanes: the 32 padded thresholds / levels in four
// registers each, read with v_pick32.
struct Table32 {
  __m256 t[4];
  __m256i l[4];
};
static inline __m256i v_level_search(__m256 a, const Table32& tb, int levels) {
  __m256i c = _mm256_setzero_si256();
  for (int st = levels >> 1; st >= 1; st >>= 1) {
    const __m256 t = v_pick32(tb.t, _mm256_add_epi32(c, _mm256_set1_epi32(st - 1)));
    c = _mm256_add_epi32(c, _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(a, t, _CMP_LT_OQ)), _mm256_set1_epi32(st)));
  }
  __m256 l[4];
  for (int k = 0; k < 4; ++k) l[k] = _mm256_castsi256_ps(tb.l[k]);
  return _mm256_castps_si256(v_pick32(l, c));
}

// 8 int32 levels (0..255) -> 8 bytes.
static inline void v_store8(uint8_t* out, __m256i c) {
  const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(out), _mm_packus_epi16(w, w));
}

// vo_softmax_levels: the same steps as the AVX-512 version (vit_ops_avx512.cpp) on 8 lanes.
// The sum: p[0..3] and p[4..7] in two double vectors, each 8 floats adding elements i..i+3 to
// p[0..3] and i+4..i+7 to p[4..7] (vo_sum8's order; masked tail lanes add +0.0, a no-op on
// sums of values >= +0), combined in vo_reduce8's order.
static void v_softmax_row(float* s, int n, float inv_sqrt_hd, const AttnCoder::View* cd, uint8_t* out) {
  const int nf = n & ~7;
  const __m256i tm = _mm256_cmpgt_epi32(_mm256_set1_epi32(n - nf), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  const __m256 tmf = _mm256_castsi256_ps(tm);
  const __m256 inv = _mm256_set1_ps(inv_sqrt_hd), ninf = _mm256_set1_ps(-__builtin_inff());
  __m256 vm = ninf;
  for (int j = 0; j < nf; j += 8) {
    const __m256 t = _mm256_mul_ps(_mm256_loadu_ps(s + j), inv);
    _mm256_storeu_ps(s + j, t);
    vm = _mm256_max_ps(t, vm);  // t > vm ? t : vm
  }
  if (nf < n) {
    const __m256 t = _mm256_mul_ps(_mm256_maskload_ps(s + nf, tm), inv);
    _mm256_maskstore_ps(s + nf, tm, t);
    vm = _mm256_max_ps(_mm256_blendv_ps(ninf, t, tmf), vm);
  }
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vm), _mm256_extractf128_ps(vm, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
  const __m256 mx = _mm256_set1_ps(_mm_cvtss_f32(m4));
  __m256d plo = _mm256_setzero_pd(), phi = _mm256_setzero_pd();
  for (int j = 0; j < nf; j += 8) {
    const __m256 e = v_exp(_mm256_sub_ps(_mm256_loadu_ps(s + j), mx));
    _mm256_storeu_ps(s + j, e);
    plo = _mm256_add_pd(plo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
    phi = _mm256_add_pd(phi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
  }
  if (nf < n) {
    const __m256 e = _mm256_and_ps(v_exp(_mm256_sub_ps(_mm256_maskload_ps(s + nf, tm), mx)), tmf);
    _mm256_maskstore_ps(s + nf, tm, e);
    plo = _mm256_add_pd(plo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
    phi = _mm256_add_pd(phi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
  }
  const __m256d q = _mm256_add_pd(plo, phi);                                        // p[j] + p[j+4]
  const __m128d r = _mm_add_pd(_mm256_castpd256_pd128(q), _mm256_extractf128_pd(q, 1));  // + p[j+2]
  const __m256 sum = _mm256_set1_ps(static_cast<float>(_mm_cvtsd_f64(_mm_add_sd(r, _mm_unpackhi_pd(r, r)))));
  alignas(32) uint8_t tail[8];
  if (cd->search_levels) {
    Table32 tb;
    for (int k = 0; k < 4; ++k) {
      tb.t[k] = _mm256_loadu_ps(cd->thr32 + 8 * k);
      tb.l[k] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cd->lut32 + 8 * k));
    }
    const int L = cd->search_levels;
    for (int j = 0; j < nf; j += 8) v_store8(out + j, v_level_search(_mm256_div_ps(_mm256_loadu_ps(s + j), sum), tb, L));
    if (nf < n) {
      v_store8(tail, v_level_search(_mm256_div_ps(_mm256_maskload_ps(s + nf, tm), sum), tb, L));
      for (int j = nf; j < n; ++j) out[j] = tail[j - nf];
    }
    return;
  }
  if (cd->affine_k != 0.0f) {   // a uniform grid: levels by arithmetic (AttnCoder::affine_k)
    for (int j = 0; j < nf; j += 8) v_store8(out + j, v_level_affine(_mm256_div_ps(_mm256_loadu_ps(s + j), sum), cd));
    if (nf < n) {
      v_store8(tail, v_level_affine(_mm256_div_ps(_mm256_maskload_ps(s + nf, tm), sum), cd));
      for (int j = nf; j < n; ++j) out[j] = tail[j - nf];
    }
    return;
  }
  for (int j = 0; j < nf; j += 8) v_store8(out + j, v_level_gather(_mm256_div_ps(_mm256_loadu_ps(s + j), sum), cd));
  if (nf < n) {
    v_store8(tail, v_level_gather(_mm256_div_ps(_mm256_maskload_ps(s + nf, tm), sum), cd));
    for (int j = nf; j < n; ++j) out[j] = tail[j - nf];
  }
}

static void v_exp_row(const float* x, int n, float* out) {
  int i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, v_exp(_mm256_loadu_ps(x + i)));
  vo_exp_row(x + i, n - i, out + i);
}

static void v_softmax_levels(float* s, int64_t lds, int n, int rows, float inv_sqrt_hd, const AttnCoder::View* cd,
                             uint8_t* out, int64_t ldo) {
  for (int r = 0; r < rows; ++r) v_softmax_row(s + r * lds, n, inv_sqrt_hd, cd, out + r * ldo);
}

// map_bytes (the level-table pass, ActQuant::lut) with vpshufb. The 256-entry table is 16
// sub-tables T_k of 16 bytes (entries 16k..16k+15); the pass keeps the differences
// D_k = T_k ^ T_(k-1) (D_0 = T_0, D_8 = T_8). For a byte x < 128, subs_epi8(x, 16k) (signed,
// saturating) is negative, so vpshufb gives 0, exactly when k > x >> 4, and otherwise has
// x & 15 in its low nibble: the XOR over k = 0..7 of vpshufb(D_k, subs(x, 16k)) telescopes to
// T_(x>>4)[x & 15], and every x >= 128 (negative as int8) gives 0. The upper half is the same
// on x ^ 0x80 with D_8..D_15. Three instructions per sub-table and 32 bytes; the tail goes to
// the scalar twin.
static void v_map_bytes(uint8_t* p, int64_t n, const uint8_t* table) {
  int64_t i = 0;
  if (n >= 32) {
    __m256i d[16];
    for (int k = 0; k < 16; ++k) {
      d[k] = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(table + 16 * k)));
      if (k % 8 != 0)
        d[k] = _mm256_xor_si256(d[k], _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(table + 16 * (k - 1)))));
    }
    const __m256i top = _mm256_set1_epi8(char(0x80));
    for (; i + 32 <= n; i += 32) {
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i));
      const __m256i y = _mm256_xor_si256(x, top);
      __m256i r = _mm256_setzero_si256();
      for (int k = 0; k < 8; ++k) {
        const __m256i step = _mm256_set1_epi8(char(16 * k));
        r = _mm256_xor_si256(r, _mm256_shuffle_epi8(d[k], _mm256_subs_epi8(x, step)));
        r = _mm256_xor_si256(r, _mm256_shuffle_epi8(d[k + 8], _mm256_subs_epi8(y, step)));
      }
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + i), r);
    }
  }
  if (i < n) vo_map_bytes(p + i, n - i, table);
}

static const VitRowOps v_table = {
    "avx2", vo_layernorm_quant, vo_layernorm_quant2, v_softmax_levels, v_gelu_quant, vo_quant_row,
    vo_quant_row_s8, v_exp_row, vo_gelu_row, v_codes_row, v_map_bytes, vo_layernorm_row, vo_ef_quant_rows,
};

}  // namespace vitops_avx2

namespace detail {
const VitRowOps& vit_row_ops_avx2() { return vitops_avx2::v_table; }
}  // namespace detail
}  // namespace reparq
