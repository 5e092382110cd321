// vit_ops_avx512.cpp: the executor's float row operations for Avx512Vnni.
//
// LayerNorm and the plain quantizers are kernels/vit_ops_impl.h compiled with the avx512 flags
// (the compiler vectorizes those loops). Softmax + post-Softmax codes, GELU + quantize and exp
// are written with AVX-512 intrinsics below, because GCC 12 does not vectorize the table
// lookups (GELU's per-interval coefficients, the coder's start / threshold / level tables) and
// left those loops scalar. Their scalar reference twins are the vo_* functions of
// vit_ops_impl.h (kernels/vit_ref.cpp); every vector operation here is the same IEEE float or
// double operation on the same operands in the same order (no FMA: -ffp-contract=off, no
// fast-math), so results are bit-identical (tests/kernels/test_executor.cpp, VitRowOps.*).
// Flags (kernels/CMakeLists.txt): -mavx512f -mavx512bw -mavx512vl -mavx512dq; only F and BW
// instructions are used here.
// GCC 12 false positive inside avx512fintrin.h (the `__Y = __Y` idiom, GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu.h"
#include "kernels/vit_ops.h"

namespace reparq {
namespace vitops_avx512 {
#define VO_NAME "avx512"
#include "kernels/vit_ops_impl.h"
#undef VO_NAME

// ---- elementwise pieces, lane for lane the scalar vo_* helpers ------------------------------

// vo_round_even: (t + 1.5*2^23) - 1.5*2^23.
static inline __m512 v_round_even(__m512 t) {
  const __m512 magic = _mm512_set1_ps(12582912.0f);
  return _mm512_sub_ps(_mm512_add_ps(t, magic), magic);
}

// vo_quantize -> int32 codes in [0, qmax].
static inline __m512i v_quantize(__m512 y, QuantParams q) {
  __m512 t = _mm512_mul_ps(y, _mm512_set1_ps(q.inv_scale));
  t = _mm512_max_ps(t, _mm512_set1_ps(-65536.0f));  // t > lo ? t : lo (NaN -> lo)
  t = _mm512_min_ps(t, _mm512_set1_ps(65536.0f));   // t < hi ? t : hi
  __m512i c = _mm512_add_epi32(_mm512_cvttps_epi32(v_round_even(t)), _mm512_set1_epi32(q.zero));
  c = _mm512_max_epi32(c, _mm512_setzero_si512());
  return _mm512_min_epi32(c, _mm512_set1_epi32(q.qmax));
}

// vo_exp.
static inline __m512 v_exp(__m512 x) {
  const __mmask16 not_tiny = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_GE_OQ);
  __m512 xc = _mm512_min_ps(x, _mm512_set1_ps(88.0f));    // x < 88 ? x : 88 (NaN -> 88)
  xc = _mm512_max_ps(xc, _mm512_set1_ps(-87.0f));         // xc >= -87 ? xc : -87 (xc not NaN)
  const __m512 n = v_round_even(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269502f)));
  __m512 r = _mm512_sub_ps(xc, _mm512_mul_ps(n, _mm512_set1_ps(0.693359375f)));
  r = _mm512_sub_ps(r, _mm512_mul_ps(n, _mm512_set1_ps(-2.12194440e-4f)));
  __m512 p = _mm512_set1_ps(1.98412698e-4f);
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.38888889e-3f));
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(8.33333333e-3f));
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(4.16666667e-2f));
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.66666667e-1f));
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(0.5f));
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.0f));
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.0f));
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvttps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_maskz_mov_ps(not_tiny, _mm512_mul_ps(p, _mm512_castsi512_ps(e)));
}

// vo_gelu.
static inline __m512 v_gelu(__m512 y) {
  __m512 u = _mm512_add_ps(_mm512_mul_ps(y, _mm512_set1_ps(vo_phi_inv_w)), _mm512_set1_ps(16.0f));
  u = _mm512_max_ps(u, _mm512_setzero_ps());          // u > 0 ? u : 0 (NaN -> 0)
  u = _mm512_min_ps(u, _mm512_set1_ps(vo_phi_u_max));  // u < max ? u : max
  const __m512i i = _mm512_cvttps_epi32(u);
  const __m512 s = _mm512_sub_ps(u, _mm512_cvtepi32_ps(i));
  const VoPhiTable& tb = vo_phi_table;
  auto coef = [&](int j) { return _mm512_permutex2var_ps(_mm512_load_ps(tb.c[j]), i, _mm512_load_ps(tb.c[j] + 16)); };
  __m512 p = coef(5);
  for (int j = 4; j >= 0; --j) p = _mm512_add_ps(_mm512_mul_ps(p, s), coef(j));
  return _mm512_mul_ps(y, p);
}

static inline __mmask16 tail_mask(int r) { return r >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << r) - 1u); }

// ---- row functions ------------------------------------------------------------------------

// Main loops run whole vectors without masks, two per iteration (GELU) where that helped;
// the tail is one masked vector. Measured on Zen 5 (one core): GELU 0.735 -> 0.665 ns per
// element, softmax + codes 1.387 -> 1.318 ns (197 tokens), outputs unchanged.
static void v_gelu_quant(const float* y, int n, const float* mul, QuantParams q, uint8_t* out) {
  int i = 0;
  for (; i + 32 <= n; i += 32) {
    __m512 g0 = v_gelu(_mm512_loadu_ps(y + i)), g1 = v_gelu(_mm512_loadu_ps(y + i + 16));
    if (mul) {
      g0 = _mm512_mul_ps(g0, _mm512_loadu_ps(mul + i));
      g1 = _mm512_mul_ps(g1, _mm512_loadu_ps(mul + i + 16));
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm512_cvtepi32_epi8(v_quantize(g0, q)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i + 16), _mm512_cvtepi32_epi8(v_quantize(g1, q)));
  }
  for (; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    __m512 g = v_gelu(_mm512_maskz_loadu_ps(m, y + i));
    if (mul) g = _mm512_mul_ps(g, _mm512_maskz_loadu_ps(m, mul + i));
    _mm_mask_storeu_epi8(out + i, m, _mm512_cvtepi32_epi8(v_quantize(g, q)));
  }
}

static void v_exp_row(const float* x, int n, float* out) {
  for (int i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(out + i, m, v_exp(_mm512_maskz_loadu_ps(m, x + i)));
  }
}

static void v_gelu_row(const float* x, int n, float* out) {
  for (int i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(out + i, m, v_gelu(_mm512_maskz_loadu_ps(m, x + i)));
  }
}

// vo_code on 16 lanes: bucket start from the key, then `steps` threshold comparisons.
// vo_nan_to_inf.
static inline __m512 v_nan_to_inf(__m512 a) {
  return _mm512_mask_mov_ps(a, _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q), _mm512_set1_ps(__builtin_inff()));
}

static inline __m512i v_code(__m512 a0, const AttnCoder::View* cd) {
  const __m512 a = v_nan_to_inf(a0);
  __m512i key = _mm512_sra_epi32(_mm512_castps_si512(a), _mm_cvtsi32_si128(cd->shift));
  key = _mm512_max_epi32(key, _mm512_set1_epi32(cd->key_min));
  key = _mm512_min_epi32(key, _mm512_set1_epi32(cd->key_max));
  key = _mm512_sub_epi32(key, _mm512_set1_epi32(cd->key_min));
  __m512i c = _mm512_i32gather_epi32(key, cd->start, 4);
  const __m512i one = _mm512_set1_epi32(1);
  for (int s = 0; s < cd->steps; ++s) {
    const __m512 thr = _mm512_i32gather_ps(c, cd->thr, 4);
    c = _mm512_mask_add_epi32(c, _mm512_cmp_ps_mask(a, thr, _CMP_LT_OQ), c, one);  // c += a < thr[c]
  }
  return c;
}

// The register-resident binary search of AttnCoder::search_levels (vit_ops.h): t0/t1 hold
// thr32[0..15] / thr32[16..31]; the result is AttnCoder's code, with no table gathers.
static inline __m512i v_code_search(__m512 a, __m512 t0, __m512 t1, int levels) {
  __m512i c = _mm512_setzero_si512();
  for (int s = levels >> 1; s >= 1; s >>= 1) {
    const __m512 t = _mm512_permutex2var_ps(t0, _mm512_add_epi32(c, _mm512_set1_epi32(s - 1)), t1);
    c = _mm512_mask_add_epi32(c, _mm512_cmp_ps_mask(a, t, _CMP_LT_OQ), c, _mm512_set1_epi32(s));  // c += s if a < t
  }
  return c;
}

// AttnCoder::affine_k: the clamped r = round(a * k) of 16 values and whether every lane is
// clear of the thresholds (else the caller takes the table path).
static inline bool v_affine_r(__m512 a, const AttnCoder::View* cd, __m512i* r_out) {
  const __m512 u = _mm512_mul_ps(a, _mm512_set1_ps(cd->affine_k));
  const __m512 r = _mm512_roundscale_ps(u, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 d = _mm512_abs_ps(_mm512_sub_ps(u, r));
  if (__builtin_expect(_mm512_cmp_ps_mask(d, _mm512_set1_ps(0.5f - AttnCoder::kAffineEta), _CMP_NLT_UQ) != 0, 0))
    return false;   // |u - r| >= 1/2 - eta, or NaN
  *r_out = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(r, _mm512_setzero_ps()), _mm512_set1_ps(float(cd->affine_q))));
  return true;
}

static void v_codes_row(const float* a, int n, const AttnCoder::View* cd, uint8_t* out) {
  if (cd->affine_k != 0.0f && !cd->search_levels) {
    for (int j = 0; j < n; j += 16) {
      const __mmask16 m = tail_mask(n - j);
      const __m512 x = _mm512_maskz_loadu_ps(m, a + j);
      __m512i r;
      const __m512i c = v_affine_r(x, cd, &r) ? _mm512_sub_epi32(_mm512_set1_epi32(cd->affine_q), r) : v_code(x, cd);
      _mm_mask_storeu_epi8(out + j, m, _mm512_cvtepi32_epi8(c));
    }
    return;
  }
  if (cd->search_levels) {
    const __m512 t0 = _mm512_loadu_ps(cd->thr32), t1 = _mm512_loadu_ps(cd->thr32 + 16);
    for (int j = 0; j < n; j += 16) {
      const __mmask16 m = tail_mask(n - j);
      _mm_mask_storeu_epi8(out + j, m, _mm512_cvtepi32_epi8(v_code_search(_mm512_maskz_loadu_ps(m, a + j), t0, t1, cd->search_levels)));
    }
    return;
  }
  for (int j = 0; j < n; j += 16) {
    const __mmask16 m = tail_mask(n - j);
    // Masked-off lanes read 0.0f: a valid key, and their codes are not stored.
    _mm_mask_storeu_epi8(out + j, m, _mm512_cvtepi32_epi8(v_code(_mm512_maskz_loadu_ps(m, a + j), cd)));
  }
}

// vo_reduce8 of 8 double partial sums: ((p0 + p4) + (p2 + p6)) + ((p1 + p5) + (p3 + p7)).
static inline double v_reduce8(__m512d p) {
  const __m256d q = _mm256_add_pd(_mm512_castpd512_pd256(p), _mm512_extractf64x4_pd(p, 1));
  const __m128d r = _mm_add_pd(_mm256_castpd256_pd128(q), _mm256_extractf128_pd(q, 1));
  return _mm_cvtsd_f64(_mm_add_sd(r, _mm_unpackhi_pd(r, r)));
}

// p[0..7] += the 16 floats of v as doubles, elements 0..7 then 8..15 (vo_sum8's order).
static inline __m512d v_add8x2(__m512d p, __m512 v) {
  p = _mm512_add_pd(p, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
  return _mm512_add_pd(p, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
}
// p[0..7] += d*d (double) for d = (double)(v - m) (a float subtraction), same order.
static inline __m512d v_addsq8x2(__m512d p, __m512 d) {
  const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(d));
  const __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(d), 1)));
  p = _mm512_add_pd(p, _mm512_mul_pd(lo, lo));
  return _mm512_add_pd(p, _mm512_mul_pd(hi, hi));
}

// vo_layernorm_quant on two rows, their sums interleaved. Sums: vo_sum8 / vo_sumsq8 (masked
// tail lanes add +0.0: the partial sums start at +0 and so are never -0, and +0 is a no-op);
// y = (x - mean) / sd * w + b, left to right; quantized as vo_quantize.
static void v_layernorm_quant2(const float* x0, const float* x1, int n, const float* w, const float* b,
                               float eps, QuantParams q, uint8_t* out0, uint8_t* out1) {
  const int nf = n & ~15;
  const __mmask16 mt = tail_mask(n - nf);
  __m512d p0 = _mm512_setzero_pd(), p1 = _mm512_setzero_pd();
  for (int j = 0; j < nf; j += 16) {
    p0 = v_add8x2(p0, _mm512_loadu_ps(x0 + j));
    p1 = v_add8x2(p1, _mm512_loadu_ps(x1 + j));
  }
  if (nf < n) {
    p0 = v_add8x2(p0, _mm512_maskz_loadu_ps(mt, x0 + nf));
    p1 = v_add8x2(p1, _mm512_maskz_loadu_ps(mt, x1 + nf));
  }
  const float mean0 = static_cast<float>(v_reduce8(p0) / static_cast<double>(n));
  const float mean1 = static_cast<float>(v_reduce8(p1) / static_cast<double>(n));
  const __m512 m0 = _mm512_set1_ps(mean0), m1 = _mm512_set1_ps(mean1);
  p0 = _mm512_setzero_pd();
  p1 = _mm512_setzero_pd();
  for (int j = 0; j < nf; j += 16) {
    p0 = v_addsq8x2(p0, _mm512_sub_ps(_mm512_loadu_ps(x0 + j), m0));
    p1 = v_addsq8x2(p1, _mm512_sub_ps(_mm512_loadu_ps(x1 + j), m1));
  }
  if (nf < n) {  // masked lanes: d = 0
    p0 = v_addsq8x2(p0, _mm512_maskz_sub_ps(mt, _mm512_maskz_loadu_ps(mt, x0 + nf), m0));
    p1 = v_addsq8x2(p1, _mm512_maskz_sub_ps(mt, _mm512_maskz_loadu_ps(mt, x1 + nf), m1));
  }
  const float var0 = static_cast<float>(v_reduce8(p0) / static_cast<double>(n));
  const float var1 = static_cast<float>(v_reduce8(p1) / static_cast<double>(n));
  const __m512 sd0 = _mm512_set1_ps(__builtin_sqrtf(var0 + eps)), sd1 = _mm512_set1_ps(__builtin_sqrtf(var1 + eps));
  auto norm = [&](__m512 x, __m512 m, __m512 sd, __m512 wv, __m512 bv) {
    return _mm512_cvtepi32_epi8(v_quantize(_mm512_add_ps(_mm512_mul_ps(_mm512_div_ps(_mm512_sub_ps(x, m), sd), wv), bv), q));
  };
  for (int j = 0; j < nf; j += 16) {
    const __m512 wv = _mm512_loadu_ps(w + j), bv = _mm512_loadu_ps(b + j);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out0 + j), norm(_mm512_loadu_ps(x0 + j), m0, sd0, wv, bv));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out1 + j), norm(_mm512_loadu_ps(x1 + j), m1, sd1, wv, bv));
  }
  if (nf < n) {
    const __m512 wv = _mm512_maskz_loadu_ps(mt, w + nf), bv = _mm512_maskz_loadu_ps(mt, b + nf);
    _mm_mask_storeu_epi8(out0 + nf, mt, norm(_mm512_maskz_loadu_ps(mt, x0 + nf), m0, sd0, wv, bv));
    _mm_mask_storeu_epi8(out1 + nf, mt, norm(_mm512_maskz_loadu_ps(mt, x1 + nf), m1, sd1, wv, bv));
  }
}

// vo_softmax_row: t = s * inv (stored), m = max t (lanes fold with t > m ? t : m, so NaNs are
// skipped as in the scalar fold; the maximum of non-NaN floats does not depend on the order,
// and a +-0 difference cannot change exp(t - m)); e = exp(t - m) (stored); the sum in double
// with the 8 interleaved partial sums of vo_sum8 (lanes 0..7 then 8..15 of each 16 floats add
// elements i..i+7 then i+8..i+15 to p[0..7]; masked tails add +0.0, a no-op on sums of values
// >= +0), combined in vo_reduce8's order; a = e / sum; out = level(a), `levels` mapping 16
// values of a to their 16 levels (in the lanes' low bytes). (Two rows interleaved, to hide
// each row's reductions behind the other's work, measured no faster: 62-69 vs 62-66 us per
// 197 rows; the op is throughput-bound.)
template <class Levels>
static inline void v_softmax_row(float* s, int n, float inv_sqrt_hd, uint8_t* out, const Levels& levels) {
  const int nf = n & ~15;  // whole vectors; then one masked tail vector if n % 16 != 0
  const __mmask16 mt = tail_mask(n - nf);
  const __m512 inv = _mm512_set1_ps(inv_sqrt_hd);
  __m512 vm = _mm512_set1_ps(-__builtin_inff());
  for (int j = 0; j < nf; j += 16) {
    const __m512 t = _mm512_mul_ps(_mm512_loadu_ps(s + j), inv);
    _mm512_storeu_ps(s + j, t);
    vm = _mm512_max_ps(t, vm);  // t > vm ? t : vm
  }
  if (nf < n) {
    const __m512 t = _mm512_mul_ps(_mm512_maskz_loadu_ps(mt, s + nf), inv);
    _mm512_mask_storeu_ps(s + nf, mt, t);
    vm = _mm512_mask_max_ps(vm, mt, t, vm);  // on the valid lanes only
  }
  const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(vm));
  __m512d p = _mm512_setzero_pd();
  for (int j = 0; j < nf; j += 16) {
    const __m512 e = v_exp(_mm512_sub_ps(_mm512_loadu_ps(s + j), mx));
    _mm512_storeu_ps(s + j, e);
    p = v_add8x2(p, e);
  }
  if (nf < n) {
    const __m512 e = _mm512_maskz_mov_ps(mt, v_exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(mt, s + nf), mx)));
    _mm512_mask_storeu_ps(s + nf, mt, e);
    p = v_add8x2(p, e);
  }
  const __m512 sum = _mm512_set1_ps(static_cast<float>(v_reduce8(p)));
  for (int j = 0; j < nf; j += 16)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j), _mm512_cvtepi32_epi8(levels(_mm512_div_ps(_mm512_loadu_ps(s + j), sum))));
  if (nf < n) _mm_mask_storeu_epi8(out + nf, mt, _mm512_cvtepi32_epi8(levels(_mm512_div_ps(_mm512_maskz_loadu_ps(mt, s + nf), sum))));
}

// Every row, with the coder's fastest level function.
template <class Levels>
static inline void v_softmax_each(float* s, int64_t lds, int n, int rows, float inv, uint8_t* out, int64_t ldo,
                                  const Levels& levels) {
  for (int r = 0; r < rows; ++r) v_softmax_row(s + r * lds, n, inv, out + r * ldo, levels);
}

static void v_softmax_levels(float* s, int64_t lds, int n, int rows, float inv, const AttnCoder::View* cd, uint8_t* out,
                             int64_t ldo) {
  if (cd->search_levels) {
    // At most 32 codes: binary search in registers, levels by a two-register permute.
    const __m512 t0 = _mm512_loadu_ps(cd->thr32), t1 = _mm512_loadu_ps(cd->thr32 + 16);
    const __m512i l0 = _mm512_loadu_si512(cd->lut32), l1 = _mm512_loadu_si512(cd->lut32 + 16);
    const int L = cd->search_levels;
    v_softmax_each(s, lds, n, rows, inv, out, ldo,
                    [&](__m512 a) { return _mm512_permutex2var_epi32(l0, v_code_search(a, t0, t1, L), l1); });
    return;
  }
  if (cd->affine_k != 0.0f) {
    // Uniform grid (AttnCoder::affine_k): the level by arithmetic; a vector with a value near
    // a threshold, a NaN or an infinity takes the table path below.
    const __m512i base = _mm512_set1_epi32(cd->affine_base), g = _mm512_set1_epi32(cd->affine_g);
    const int32_t* lut = cd->lut;
    v_softmax_each(s, lds, n, rows, inv, out, ldo, [&](__m512 a) {
      __m512i r;
      if (v_affine_r(a, cd, &r)) return _mm512_add_epi32(base, _mm512_mullo_epi32(r, g));
      return _mm512_i32gather_epi32(v_code(a, cd), lut, 4);
    });
    return;
  }
  if (cd->key_entry != nullptr) {
    // steps <= 1: one 64-bit gather per 8 values brings the threshold and both candidate levels
    // (vit_ops.h, AttnCoder::key_entry); level = a < threshold ? high byte : low byte.
    const __m512i kmin = _mm512_set1_epi32(cd->key_min), kmax = _mm512_set1_epi32(cd->key_max);
    const __m128i shift = _mm_cvtsi32_si128(cd->shift);
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    const long long* table = reinterpret_cast<const long long*>(cd->key_entry);
    v_softmax_each(s, lds, n, rows, inv, out, ldo, [&](__m512 a0) {  // 16 levels, in the low bytes of the lanes
      const __m512 a = v_nan_to_inf(a0);
      __m512i key = _mm512_sra_epi32(_mm512_castps_si512(a), shift);
      key = _mm512_sub_epi32(_mm512_min_epi32(_mm512_max_epi32(key, kmin), kmax), kmin);
      const __m512i g0 = _mm512_i32gather_epi64(_mm512_castsi512_si256(key), table, 8);
      const __m512i g1 = _mm512_i32gather_epi64(_mm512_extracti64x4_epi64(key, 1), table, 8);
      const __m512 thr = _mm512_castsi512_ps(_mm512_permutex2var_epi32(g0, even, g1));
      const __m512i lv = _mm512_permutex2var_epi32(g0, odd, g1);
      return _mm512_mask_srli_epi32(lv, _mm512_cmp_ps_mask(a, thr, _CMP_LT_OQ), lv, 8);
    });
    return;
  }
  // Masked-off tail lanes divide 0 by the sum: a valid key, and their levels are not stored.
  const int32_t* lut = cd->lut;
  v_softmax_each(s, lds, n, rows, inv, out, ldo, [&](__m512 a) { return _mm512_i32gather_epi32(v_code(a, cd), lut, 4); });
}

// 256-entry byte table with AVX512-VBMI (vpermi2b looks up 128 entries from two registers; the
// index's top bit picks between the two halves); without VBMI (e.g. Cascade Lake), the AVX2
// vpshufb pass (kernels/x86/vit_ops_avx2.cpp). 4 instructions per 64 bytes.
__attribute__((target("avx512vbmi"))) static void v_map_bytes_vbmi(uint8_t* p, int64_t n, const uint8_t* table) {
  const __m512i t0 = _mm512_loadu_si512(table), t1 = _mm512_loadu_si512(table + 64);
  const __m512i t2 = _mm512_loadu_si512(table + 128), t3 = _mm512_loadu_si512(table + 192);
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    const __m512i x = _mm512_loadu_si512(p + i);
    const __m512i lo = _mm512_permutex2var_epi8(t0, x, t1), hi = _mm512_permutex2var_epi8(t2, x, t3);
    _mm512_storeu_si512(p + i, _mm512_mask_blend_epi8(_mm512_movepi8_mask(x), lo, hi));
  }
  if (i < n) {
    const __mmask64 m = ~0ull >> (64 - (n - i));   // 1 <= n - i < 64
    const __m512i x = _mm512_maskz_loadu_epi8(m, p + i);
    const __m512i lo = _mm512_permutex2var_epi8(t0, x, t1), hi = _mm512_permutex2var_epi8(t2, x, t3);
    _mm512_mask_storeu_epi8(p + i, m, _mm512_mask_blend_epi8(_mm512_movepi8_mask(x), lo, hi));
  }
}
static void v_map_bytes(uint8_t* p, int64_t n, const uint8_t* table) {
  static const bool vbmi = cpu_features().avx512vbmi;
  static const VitRowOps& avx2 = detail::vit_row_ops_avx2();
  if (vbmi) v_map_bytes_vbmi(p, n, table);
  else avx2.map_bytes(p, n, table);
}

static const VitRowOps v_table = {
    "avx512", vo_layernorm_quant, v_layernorm_quant2, v_softmax_levels, v_gelu_quant, vo_quant_row, vo_quant_row_s8,
    v_exp_row, v_gelu_row, v_codes_row, v_map_bytes, vo_layernorm_row, vo_ef_quant_rows,
};
}  // namespace vitops_avx512

namespace detail {
const VitRowOps& vit_row_ops_avx512() { return vitops_avx512::v_table; }
}  // namespace detail
}  // namespace reparq
