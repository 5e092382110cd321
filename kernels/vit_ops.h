// vit_ops.h: the executor's float row operations between GEMMs (LayerNorm + quantize,
// softmax + post-Softmax codes, GELU + quantize), with their exact arithmetic.
//
// kernels/vit_ops_impl.h holds the one source of these loops. kernels/vit_ref.cpp compiles it
// for the baseline ISA (the scalar reference twin); kernels/x86/vit_ops_avx2.cpp and
// vit_ops_avx512.cpp compile the SAME source with their -m flags so the compiler vectorizes
// the loops. Every operation is elementwise IEEE float/double arithmetic or a reduction in a
// fixed 8-lane order, with no FMA contraction (-ffp-contract=off) and no -ffast-math, so the
// vectorized builds are bit-identical to the reference (tests/kernels/test_executor.cpp
// checks it). exp and GELU are our own polynomials (vit_ops_impl.h), used by every build.
//
// Definitions (one row of n values; docs/FORMAT.md "The forward pass"):
//   sum8(v)      = double sum with 8 interleaved partial sums p[i % 8] += (double)v[i],
//                  combined ((p0+p4)+(p2+p6)) + ((p1+p5)+(p3+p7)).
//   quantize(y)  = ActQuant::quantize: t = y * inv_scale; clamp to [-65536, 65536] (NaN ->
//                  -65536); q = clamp(round_half_even(t) + zero, 0, qmax).
//   LayerNorm    mean = (float)(sum8(x) / n); d = x - mean (float);
//                var = (float)(sum8(d*d, products in double) / n);  sd = sqrtf(var + eps);
//                y = d / sd * w + b   (float: divide, multiply, add), then quantize.
//   Softmax      t = s * inv_sqrt_hd; m = max t; e = exp_poly(t - m); sum = (float)sum8(e);
//                a = e / sum; code c = #{i : a < thresholds[i]} (AttnQuant::code; 0 for any
//                NaN, whose sign the bucket key must not see); out lut[c].
//   GELU         g = y * Phi_poly(y) (vo_gelu: 32 intervals, degree 5), then quantize.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/cpu.h"
#include "kernels/qmodel.h"

namespace reparq {

// Post-Softmax coder as a bucket table over the float's bit pattern (exact: equals
// AttnQuant::code for every float, NaN, infinities and negatives included).
//   key = clamp((int32 bits of a) >> shift, key_min, key_max) - key_min
//   c = start[key]; repeat `steps` times: c += (a < thr[c])      (thr padded with -inf)
struct AttnCoder {
  int shift = 23;
  int32_t key_min = 0, key_max = 0;
  int steps = 0;
  std::vector<int32_t> start;    // key_max - key_min + 1 (int32: vector gathers)
  std::vector<float> thr;        // 2^bits: thresholds, then -inf
  std::vector<int32_t> lut;      // 2^bits levels (int32: vector gathers)
  // Per key, when steps <= 1 and search_levels == 0 (else empty), for the vectorized softmax (one 64-bit gather per 8
  // values instead of three dependent 32-bit gathers): with c = start[key],
  //   low 32 bits:  the bits of thr[c] (-inf when steps == 0);
  //   high 32 bits: (lut[c] & 255) | (lut[c + 1] & 255) << 8 (lut[c] twice when c is the last code).
  // The level is then (a < threshold ? the high byte : the low byte) of the high word.
  std::vector<int64_t> key_entry;
  // When there are at most 32 codes (bits <= 5, every W4A4 / W3A3 model) and the thresholds
  // strictly decrease (the loader requires it), for a binary search held in two vector
  // registers (no table gathers): the thresholds padded with -inf and the levels padded with 0,
  // 32 each, and L = 2^bits. c = 0; for s = L/2, L/4, ..., 1: c += s if a < thr32[c + s - 1]
  // (the padded -inf never passes), which is #{i : a < thresholds[i]} = AttnQuant::code.
  int search_levels = 0;         // L, or 0 when the search is not used
  std::vector<float> thr32;
  std::vector<int32_t> lut32;
  // Arithmetic coding for a uniform grid (more than 32 codes, e.g. the 8-bit uniform
  // post-Softmax quantizer of W8A8 models), when make_attn_coder has verified that every
  // threshold times affine_k lies within kAffineEta / 2 of the midpoint Q - i - 1/2 (Q = L - 1,
  // products in exact arithmetic) and that lut[c] = lut[Q] + (Q - c) * affine_g exactly:
  //   u = a * affine_k (float), r = round_half_even(u);
  //   if |u - r| < 1/2 - kAffineEta:  c = Q - clamp(r, 0, Q), level = lut[Q] + clamp(r, 0, Q) * affine_g.
  // That is the threshold count: |u - a*k| <= 2^-24 * (Q + 1) < kAffineEta / 2 for the u that
  // matter, so a*k is strictly inside the bucket between the two thresholds around r. Values
  // with |u - r| >= 1/2 - kAffineEta (about 2 * kAffineEta of them), NaN and infinities take the
  // table path. affine_k = 0: not available.
  static constexpr float kAffineEta = 1.0f / 4096;
  float affine_k = 0.0f;
  int32_t affine_g = 0;
  int32_t affine_q = 0;          // Q
  int32_t affine_base = 0;       // lut[Q]
  struct View {
    int shift, key_min, key_max, steps;
    const int32_t* start;
    const float* thr;
    const int32_t* lut;
    const int64_t* key_entry;     // nullptr when steps > 1 or search_levels != 0
    int search_levels;            // 0, or L with thr32 / lut32 below
    const float* thr32;
    const int32_t* lut32;
    float affine_k;
    int32_t affine_g, affine_q, affine_base;
  };
  View view() const {
    const bool direct = steps <= 1 && !key_entry.empty();
    return {shift, key_min, key_max, steps, start.data(), thr.data(), lut.data(),
            direct ? key_entry.data() : nullptr, search_levels, thr32.data(), lut32.data(), affine_k, affine_g, affine_q, affine_base};
  }
};
AttnCoder make_attn_coder(const AttnQuant& q);

// Quantizer parameters as the row ops take them.
struct QuantParams {
  float inv_scale = 1.0f;
  int32_t zero = 0;
  int32_t qmax = 255;
};
inline QuantParams quant_params(const ActQuant& a) { return {a.inv_scale(), a.zero, a.qmax()}; }

// Plain-pointer row functions (one table per compiled ISA).
struct VitRowOps {
  const char* name;
  // out[i] = quantize(LayerNorm(x)[i]), i < n.
  void (*layernorm_quant)(const float* x, int n, const float* w, const float* b, float eps,
                          QuantParams q, uint8_t* out);
  // Two rows at once: exactly layernorm_quant(x0 -> out0) and layernorm_quant(x1 -> out1). The
  // Avx512Vnni version interleaves the two rows' reductions, whose fixed summation order
  // (8 partial sums in double) makes each row's a chain of dependent additions.
  void (*layernorm_quant2)(const float* x0, const float* x1, int n, const float* w, const float* b,
                           float eps, QuantParams q, uint8_t* out0, uint8_t* out1);
  // `rows` rows of n raw scores, row r at s + r*lds (overwritten with scratch values):
  // out[r*ldo + j] = lut[code(softmax(s_r*inv)_j)], each row exactly as the one-row definition
  // above (one call per attention head: the coder's setup is done once for all its rows).
  void (*softmax_levels)(float* s, int64_t lds, int n, int rows, float inv_sqrt_hd, const AttnCoder::View* coder,
                         uint8_t* out, int64_t ldo);
  // out[i] = quantize(gelu(y[i]) * mul[i]); mul may be null (no multiplier).
  void (*gelu_quant)(const float* y, int n, const float* mul, QuantParams q, uint8_t* out);
  // out[i] = quantize(y[i]); the signed form stores quantize(y[i]) - offset.
  void (*quant_row)(const float* y, int n, QuantParams q, uint8_t* out);
  void (*quant_row_s8)(const float* y, int n, QuantParams q, int32_t offset, int8_t* out);
  // Elementwise, exposed for tests: out[i] = exp_poly(x[i]) / gelu_poly(x[i]).
  void (*exp_row)(const float* x, int n, float* out);
  void (*gelu_row)(const float* x, int n, float* out);
  // out[i] = coder code of a[i] (not the level), exposed for tests.
  void (*codes_row)(const float* a, int n, const AttnCoder::View* coder, uint8_t* out);
  // p[i] = table[p[i]], i < n (256-entry table): non-uniform activation levels (ActQuant::lut).
  void (*map_bytes)(uint8_t* p, int64_t n, const uint8_t* table);
  // y[i] = LayerNorm(x)[i] in float, exactly the value layernorm_quant quantizes.
  void (*layernorm_row)(const float* x, int n, const float* w, const float* b, float eps, float* y);
  // Error-feedback rounding (FORMAT.md "Error-feedback rounding"); y is overwritten. One row:
  //   t[j] = clampf(y[j] * inv_scale) for every j; then for i = 0..n-1:
  //   c = clamp(round_half_even(t[i] clamped to +-65536) + zero, 0, qmax); c = lut[c] if lut;
  //   out[i] = c; e = (t[i] clamped) - (float)(c - zero); t[j] = t[j] - e * g[i*n + j], j > i.
  // `rows` rows at once (row r at y + r*ldy, codes at out + r*ldo), each exactly as one row alone.
  void (*ef_quant_rows)(float* y, int64_t ldy, int rows, int n, const float* g, QuantParams q, const uint8_t* lut,
                        uint8_t* out, int64_t ldo);
};

// The table compiled for `isa` (the reference for Isa::Scalar). Throws UsageError if `isa`
// is not available.
const VitRowOps& vit_row_ops(Isa isa);
const VitRowOps& vit_row_ops_ref();

namespace detail {
const VitRowOps& vit_row_ops_avx2();
const VitRowOps& vit_row_ops_avx512();
const VitRowOps& vit_row_ops_neon();   // Arm64: the reference ops but map_bytes
}  // namespace detail

}  // namespace reparq
