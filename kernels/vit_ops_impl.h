// vit_ops_impl.h: the one source of the executor's float row operations (see vit_ops.h for
// the definitions). Included INSIDE a namespace by kernels/vit_ref.cpp (baseline flags) and by
// kernels/x86/vit_ops_{avx2,avx512}.cpp (ISA flags), after <cstdint> and "kernels/vit_ops.h".
// Rules for this file, so that every build is bit-identical to the reference:
//   - elementwise float/double arithmetic only, or reductions in the fixed 8-lane order;
//   - no library calls whose results could differ per build (our own exp and GELU polynomials;
//     sqrt is IEEE correctly rounded);
//   - no std containers or templates (no inline functions that the linker could share
//     between builds with different -m flags).
// No include guard on purpose: each including translation unit wants its own copy.

static inline float vo_bits_to_float(int32_t i) {
  float f;
  __builtin_memcpy(&f, &i, 4);
  return f;
}
static inline int32_t vo_float_to_bits(float f) {
  int32_t i;
  __builtin_memcpy(&i, &f, 4);
  return i;
}

// Round half to even for |t| <= 2^22 (t is already clamped to +-65536): adding and
// subtracting 1.5 * 2^23 leaves the nearest integer under the default rounding mode.
static inline float vo_round_even(float t) { return (t + 12582912.0f) - 12582912.0f; }

static inline uint8_t vo_quantize(float y, QuantParams q) {
  float t = y * q.inv_scale;
  t = t > -65536.0f ? t : -65536.0f;
  t = t < 65536.0f ? t : 65536.0f;
  int32_t c = static_cast<int32_t>(vo_round_even(t)) + q.zero;
  c = c < 0 ? 0 : c;
  c = c > q.qmax ? q.qmax : c;
  return static_cast<uint8_t>(c);
}

// exp(x) for the softmax (x <= 0 there; valid on [-87, 88], 0 below -87, NaN -> 0).
// x = n ln2 + r, |r| <= ln2/2 (Cody-Waite split of ln2), exp(r) by its degree-7 Taylor
// polynomial (Horner, float), 2^n from the exponent bits. Max error about 2 ulp.
static inline float vo_exp(float x) {
  const bool tiny = !(x >= -87.0f);
  float xc = x < 88.0f ? x : 88.0f;
  xc = xc >= -87.0f ? xc : -87.0f;
  const float n = vo_round_even(xc * 1.44269502f);
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.98412698e-4f;  // 1/5040
  p = p * r + 1.38888889e-3f;
  p = p * r + 8.33333333e-3f;
  p = p * r + 4.16666667e-2f;
  p = p * r + 1.66666667e-1f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const float s = vo_bits_to_float((static_cast<int32_t>(n) + 127) << 23);
  const float e = p * s;
  return tiny ? 0.0f : e;
}

// GELU(y) = y * Phi(y), Phi the standard normal CDF, by a piecewise polynomial in float:
//   u = y * 2.65165043f + 16.0f  (u = 16 + y / w, w = 8 sqrt(2) / 30: 30 intervals of width w
//       cover [-4 sqrt(2), 4 sqrt(2)) as u in [1, 31));
//   u = u > 0 ? u : 0 (NaN -> 0);  u = u < 31.999998f ? u : 31.999998f (the float below 32);
//   i = (int)u;  s = u - (float)i  (exact, in [0, 1));
//   Phi = c[i][5]; Phi = Phi * s + c[i][4]; ... ; Phi = Phi * s + c[i][0]  (no FMA);
//   GELU = y * Phi.
// Intervals 1..30: degree-5 interpolation of Phi at the Chebyshev nodes of the interval
// (coefficients rounded to float); interval 0 (y < -4 sqrt(2)) is Phi = 0 and interval 31
// (y >= 4 sqrt(2)) Phi = 1, exactly. On 200,001 points of [-7, 7]: |Phi error| <= 1.8e-7 (max
// at y = 0.157), |GELU error| <= 5.2e-7 (at y = 4.9): the erf form y * 0.5 * (1 + erf(y / sqrt 2)) to float
// precision. 32 intervals so that a SIMD build looks each coefficient up with one two-register
// permute (AVX-512) instead of computing |y|, a sign and an erf. GELU(NaN) = NaN.
static constexpr float vo_phi_inv_w = 2.65165043f;
static constexpr float vo_phi_u_max = 31.999998092651367f;
static constexpr float vo_phi_coef[32][6] = {
    {0.000000000e+00f, 0.000000000e+00f, 0.000000000e+00f, 0.000000000e+00f, 0.000000000e+00f, 0.000000000e+00f},
    {7.707871674e-09f, 1.698536067e-08f, 1.743521594e-08f, 1.501960334e-08f, 1.538199568e-09f, 5.999761576e-09f},
    {6.468332003e-08f, 1.333975774e-07f, 1.295290275e-07f, 9.730308648e-08f, 1.631721425e-08f, 3.163058082e-08f},
    {4.728507861e-07f, 9.091548350e-07f, 8.274777770e-07f, 5.458349506e-07f, 1.175772795e-07f, 1.399674971e-07f},
    {3.012833531e-06f, 5.376390618e-06f, 4.546036052e-06f, 2.643549578e-06f, 6.491948170e-07f, 5.152326708e-07f},
    {1.674317173e-05f, 2.758458686e-05f, 2.147101077e-05f, 1.101261660e-05f, 2.852787929e-06f, 1.556113375e-06f},
    {8.122019790e-05f, 1.227820903e-04f, 8.711116971e-05f, 3.927502985e-05f, 1.010141295e-05f, 3.766802820e-06f},
    {3.442566958e-04f, 4.741055018e-04f, 3.031930537e-04f, 1.191717456e-04f, 2.879074782e-05f, 6.977674275e-06f},
    {1.276495634e-03f, 1.588075771e-03f, 9.034397663e-04f, 3.050270607e-04f, 6.514639244e-05f, 8.764402992e-06f},
    {4.146949854e-03f, 4.614381585e-03f, 2.297610044e-03f, 6.501924363e-04f, 1.129472075e-04f, 3.727954891e-06f},
    {1.182581019e-02f, 1.163041685e-02f, 4.963808693e-03f, 1.129725366e-03f, 1.362328912e-04f, -1.277274805e-05f},
    {2.967322059e-02f, 2.542801946e-02f, 9.042613208e-03f, 1.533911563e-03f, 7.210384501e-05f, -3.585673767e-05f},
    {6.571400911e-02f, 4.822399840e-02f, 1.371701155e-02f, 1.458022278e-03f, -1.169517709e-04f, -4.657602767e-05f},
    {1.289495081e-01f, 7.933165878e-02f, 1.692151278e-02f, 5.370932631e-04f, -3.645827819e-04f, -2.480841067e-05f},
    {2.253503799e-01f, 1.132041588e-01f, 1.609635539e-02f, -1.140837790e-03f, -4.946875270e-04f, 2.549414421e-05f},
    {3.530408740e-01f, 1.401235610e-01f, 9.962309152e-03f, -2.840169705e-03f, -3.556018637e-04f, 6.903289614e-05f},
    {5.000000000e-01f, 1.504504234e-01f, 1.482204993e-06f, -3.572248155e-03f, 1.043739667e-05f, 6.903289614e-05f},
    {6.469591260e-01f, 1.401230693e-01f, -9.960657917e-03f, -2.864646260e-03f, 3.672167950e-04f, 2.549414421e-05f},
    {7.746496201e-01f, 1.132035926e-01f, -1.609721221e-02f, -1.169322059e-03f, 4.886248498e-04f, -2.480841067e-05f},
    {8.710504770e-01f, 7.933140546e-02f, -1.692360826e-02f, 5.244549247e-04f, 3.498319129e-04f, -4.657602767e-05f},
    {9.342859983e-01f, 4.822411388e-02f, -1.371840388e-02f, 1.463759574e-03f, 1.071798397e-04f, -3.585673767e-05f},
    {9.703267813e-01f, 2.542827837e-02f, -9.042655118e-03f, 1.546929474e-03f, -7.236914826e-05f, -1.277274805e-05f},
    {9.881742001e-01f, 1.163060777e-02f, -4.963150248e-03f, 1.139260828e-03f, -1.315869886e-04f, 3.727954891e-06f},
    {9.958530664e-01f, 4.614443984e-03f, -2.297043335e-03f, 6.532566622e-04f, -1.089684083e-04f, 8.764402992e-06f},
    {9.987235069e-01f, 1.588058192e-03f, -9.032295202e-04f, 3.041114833e-04f, -6.367911556e-05f, 6.977674275e-06f},
    {9.996557236e-01f, 4.740691802e-04f, -3.032127570e-04f, 1.173487108e-04f, -2.893542660e-05f, 3.766802820e-06f},
    {9.999187589e-01f, 1.227561734e-04f, -8.718672325e-05f, 3.798490070e-05f, -1.063335458e-05f, 1.556113375e-06f},
    {9.999832511e-01f, 2.757205402e-05f, -2.152418165e-05f, 1.039265589e-05f, -3.225358341e-06f, 5.152326708e-07f},
    {9.999969602e-01f, 5.371761745e-06f, -4.570121291e-06f, 2.415818926e-06f, -8.174147297e-07f, 1.399674971e-07f},
    {9.999995232e-01f, 9.077866707e-07f, -8.356473700e-07f, 4.788777801e-07f, -1.744701166e-07f, 3.163057727e-08f},
    {9.999999404e-01f, 1.330662087e-07f, -1.317208529e-07f, 8.117005024e-08f, -3.153703787e-08f, 5.999770902e-09f},
    {1.000000000e+00f, 0.000000000e+00f, 0.000000000e+00f, 0.000000000e+00f, 0.000000000e+00f, 0.000000000e+00f}
};
// vo_phi_coef transposed for the SIMD builds: c[j][0..31] holds coefficient j of the 32
// intervals, so a permute by the interval index picks each lane's coefficient (AVX-512: one
// two-register permute of c[j][0..15] and c[j][16..31]; AVX2: four one-register permutes and
// blends). constexpr: no dynamic initializer (which in a SIMD file could run its instructions
// at start-up on a CPU without them).
struct VoPhiTable {
  alignas(64) float c[6][32];
  constexpr VoPhiTable() : c{} {
    for (int j = 0; j < 6; ++j)
      for (int i = 0; i < 32; ++i) c[j][i] = vo_phi_coef[i][j];
  }
};
static constexpr VoPhiTable vo_phi_table{};

static inline float vo_gelu(float y) {
  float u = y * vo_phi_inv_w + 16.0f;
  u = u > 0.0f ? u : 0.0f;
  u = u < vo_phi_u_max ? u : vo_phi_u_max;
  const int i = static_cast<int>(u);
  const float s = u - static_cast<float>(i);
  const float* c = vo_phi_coef[i];
  float p = c[5];
  p = p * s + c[4];
  p = p * s + c[3];
  p = p * s + c[2];
  p = p * s + c[1];
  p = p * s + c[0];
  return y * p;
}

// sum8 of n values v(i) given as a float array (products = false) or of squares of
// (x[i] - m) in double (products = true).
static inline double vo_reduce8(double p[8]) {
  for (int j = 0; j < 4; ++j) p[j] += p[j + 4];
  for (int j = 0; j < 2; ++j) p[j] += p[j + 2];
  return p[0] + p[1];
}
static inline double vo_sum8(const float* v, int n) {
  double p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) p[j] += static_cast<double>(v[i + j]);
  for (int j = 0; i + j < n; ++j) p[j] += static_cast<double>(v[i + j]);
  return vo_reduce8(p);
}
static inline double vo_sumsq8(const float* x, int n, float mean) {
  double p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) {
      const double d = static_cast<double>(x[i + j] - mean);
      p[j] += d * d;
    }
  for (int j = 0; i + j < n; ++j) {
    const double d = static_cast<double>(x[i + j] - mean);
    p[j] += d * d;
  }
  return vo_reduce8(p);
}

static void vo_layernorm_quant(const float* x, int n, const float* w, const float* b, float eps,
                               QuantParams q, uint8_t* out) {
  const float mean = static_cast<float>(vo_sum8(x, n) / static_cast<double>(n));
  const float var = static_cast<float>(vo_sumsq8(x, n, mean) / static_cast<double>(n));
  const float sd = __builtin_sqrtf(var + eps);
  for (int i = 0; i < n; ++i) {
    const float d = x[i] - mean;
    const float y = d / sd * w[i] + b[i];
    out[i] = vo_quantize(y, q);
  }
}

static void vo_layernorm_quant2(const float* x0, const float* x1, int n, const float* w, const float* b,
                                float eps, QuantParams q, uint8_t* out0, uint8_t* out1) {
  vo_layernorm_quant(x0, n, w, b, eps, q, out0);
  vo_layernorm_quant(x1, n, w, b, eps, q, out1);
}

// A NaN codes as +inf does (code 0: no threshold t has NaN < t), whatever its sign bit; without
// this a negative NaN (0/0 on x86) would take the bucket of the smallest values.
static inline float vo_nan_to_inf(float a) { return a == a ? a : __builtin_inff(); }

static inline int vo_code(float a0, const AttnCoder::View* cd) {
  const float a = vo_nan_to_inf(a0);
  int32_t key = vo_float_to_bits(a) >> cd->shift;
  key = key < cd->key_min ? cd->key_min : key;
  key = key > cd->key_max ? cd->key_max : key;
  int c = cd->start[key - cd->key_min];
  const float* thr = cd->thr;
  for (int s = 0; s < cd->steps; ++s) c += a < thr[c] ? 1 : 0;
  return c;
}

static void vo_codes_row(const float* a, int n, const AttnCoder::View* cd, uint8_t* out) {
  for (int j = 0; j < n; ++j) out[j] = static_cast<uint8_t>(vo_code(a[j], cd));
}

static void vo_softmax_row(float* s, int n, float inv_sqrt_hd, const AttnCoder::View* cd, uint8_t* out) {
  float m = -__builtin_inff();
  for (int j = 0; j < n; ++j) {
    const float t = s[j] * inv_sqrt_hd;
    s[j] = t;
    m = t > m ? t : m;
  }
  for (int j = 0; j < n; ++j) s[j] = vo_exp(s[j] - m);
  const float sum = static_cast<float>(vo_sum8(s, n));
  for (int j = 0; j < n; ++j) s[j] = s[j] / sum;
  const int32_t* lut = cd->lut;
  if (cd->steps == 1) {  // the common case, written so that the compiler vectorizes it
    const float* thr = cd->thr;
    const int32_t* start = cd->start;
    const int shift = cd->shift, kmin = cd->key_min, kmax = cd->key_max;
    for (int j = 0; j < n; ++j) {
      const float a = vo_nan_to_inf(s[j]);
      int32_t key = vo_float_to_bits(a) >> shift;
      key = key < kmin ? kmin : key;
      key = key > kmax ? kmax : key;
      int c = start[key - kmin];
      c += a < thr[c] ? 1 : 0;
      out[j] = static_cast<uint8_t>(lut[c]);
    }
    return;
  }
  for (int j = 0; j < n; ++j) out[j] = static_cast<uint8_t>(lut[vo_code(s[j], cd)]);
}

static void vo_softmax_levels(float* s, int64_t lds, int n, int rows, float inv_sqrt_hd, const AttnCoder::View* cd,
                              uint8_t* out, int64_t ldo) {
  for (int r = 0; r < rows; ++r) vo_softmax_row(s + r * lds, n, inv_sqrt_hd, cd, out + r * ldo);
}

static void vo_gelu_quant(const float* y, int n, const float* mul, QuantParams q, uint8_t* out) {
  for (int i = 0; i < n; ++i) {
    const float v = y[i];
    float g = vo_gelu(v);
    if (mul) g = g * mul[i];
    out[i] = vo_quantize(g, q);
  }
}

static void vo_quant_row(const float* y, int n, QuantParams q, uint8_t* out) {
  for (int i = 0; i < n; ++i) out[i] = vo_quantize(y[i], q);
}
static void vo_quant_row_s8(const float* y, int n, QuantParams q, int32_t offset, int8_t* out) {
  for (int i = 0; i < n; ++i) out[i] = static_cast<int8_t>(static_cast<int32_t>(vo_quantize(y[i], q)) - offset);
}

static void vo_exp_row(const float* x, int n, float* out) {
  for (int i = 0; i < n; ++i) out[i] = vo_exp(x[i]);
}
static void vo_gelu_row(const float* x, int n, float* out) {
  for (int i = 0; i < n; ++i) out[i] = vo_gelu(x[i]);
}

// The table is copied first so the byte stores cannot alias it (p and table are both uint8_t).
static void vo_map_bytes(uint8_t* p, int64_t n, const uint8_t* table) {
  uint8_t t[256];
  for (int i = 0; i < 256; ++i) t[i] = table[i];
  for (int64_t i = 0; i < n; ++i) p[i] = t[p[i]];
}

static void vo_layernorm_row(const float* x, int n, const float* w, const float* b, float eps, float* y) {
  const float mean = static_cast<float>(vo_sum8(x, n) / static_cast<double>(n));
  const float var = static_cast<float>(vo_sumsq8(x, n, mean) / static_cast<double>(n));
  const float sd = __builtin_sqrtf(var + eps);
  for (int i = 0; i < n; ++i) {
    const float d = x[i] - mean;
    y[i] = d / sd * w[i] + b[i];
  }
}

static inline float vo_clamp65536(float t) {
  t = t > -65536.0f ? t : -65536.0f;   // NaN -> -65536
  return t < 65536.0f ? t : 65536.0f;
}

// 16 floats as one value (GCC vector extension): elementwise IEEE operations, one zmm register
// in the AVX-512 build, two ymm in the AVX2 build, four xmm in the baseline build.
typedef float vo_f32x16 __attribute__((vector_size(64)));

// Error-feedback rounding of `rows` rows (vit_ops.h). Every t[j] takes its updates in the
// order i = 0, 1, ..., j-1, each a float multiply then a float subtract, as in the one-row
// definition: the loops below only reorder independent work. Up to 8 rows at a time (their
// dependency chains interleave, and each load of the gains serves all of them); columns in
// blocks of 16. Inside a full block the 16 values sit in one vector per row and each rounding
// updates the whole vector with the gains' row g[i][block] (zero at columns <= i, which are
// rounded already: subtracting 0 changes nothing that is read again); the block's 16 errors then
// update the columns after it, 16 at a time. The AVX-512 and AVX2 builds first take groups of
// 16 / 8 rows with the rows in the lanes instead (vo_ef_group_lanes, below).
static inline uint8_t vo_ef_code(float ti, QuantParams q, const uint8_t* lut, float* e) {
  int32_t c = static_cast<int32_t>(vo_round_even(ti)) + q.zero;
  c = c < 0 ? 0 : c;
  c = c > q.qmax ? q.qmax : c;
  if (lut) c = lut[c];
  *e = ti - static_cast<float>(c - q.zero);
  return static_cast<uint8_t>(c);
}

// The columns after a full block [ib, ib + 16) take that block's errors e[r][k], for nr <= 8
// rows: t[r][j] -= e[r][k] * g[ib + k][j] for k = 0..15 in order, 16 columns j at a time.
static inline __attribute__((always_inline)) void vo_ef_trailing(float* t0, int64_t ldt, int nr, int n, int ib,
                                                                 const float* g, const float (*e)[16]) {
  enum { kCols = 16, kRows = 8 };
  const int ie = ib + kCols;
  const float* gb = g + static_cast<int64_t>(ib) * n;
  int j0 = ie;
  for (; j0 + kCols <= n; j0 += kCols) {
    vo_f32x16 acc[kRows];
    for (int r = 0; r < nr; ++r) __builtin_memcpy(&acc[r], t0 + r * ldt + j0, sizeof(vo_f32x16));
    for (int k = 0; k < kCols; ++k) {
      vo_f32x16 gk;
      __builtin_memcpy(&gk, gb + static_cast<int64_t>(k) * n + j0, sizeof gk);
      for (int r = 0; r < nr; ++r) acc[r] = acc[r] - e[r][k] * gk;   // multiply, then subtract
    }
    for (int r = 0; r < nr; ++r) __builtin_memcpy(t0 + r * ldt + j0, &acc[r], sizeof(vo_f32x16));
  }
  for (int r = 0; r < nr; ++r) {
    float* tr = t0 + r * ldt;
    for (int j = j0; j < n; ++j) {
      float tj = tr[j];
      for (int k = 0; k < kCols; ++k) tj = tj - e[r][k] * gb[static_cast<int64_t>(k) * n + j];
      tr[j] = tj;
    }
  }
}

// The last, partial block [ib, n) of nr rows: one column at a time.
static inline void vo_ef_tail(float* t0, int64_t ldt, int nr, int n, int ib, const float* g, QuantParams q,
                              const uint8_t* lut, uint8_t* o0, int64_t ldo) {
  for (int i = ib; i < n; ++i) {
    const float* gi = g + static_cast<int64_t>(i) * n;
    for (int r = 0; r < nr; ++r) {
      float* tr = t0 + r * ldt;
      float ei;
      o0[r * ldo + i] = vo_ef_code(vo_clamp65536(tr[i]), q, lut, &ei);
      for (int j = i + 1; j < n; ++j) tr[j] = tr[j] - ei * gi[j];
    }
  }
}

// One group of nr <= 8 rows (inlined twice: with nr = 8 a constant, so the per-row loops unroll
// and the row vectors stay in registers).
static inline __attribute__((always_inline)) void vo_ef_group(float* t0, int64_t ldt, int nr, int n, const float* g,
                                                              QuantParams q, const uint8_t* lut, uint8_t* o0,
                                                              int64_t ldo) {
  enum { kCols = 16, kRows = 8 };
  float e[kRows][kCols];
  for (int ib = 0; ib < n; ib += kCols) {
    if (n - ib < kCols) {
      vo_ef_tail(t0, ldt, nr, n, ib, g, q, lut, o0, ldo);
      break;
    }
    vo_f32x16 tb[kRows];
    for (int r = 0; r < nr; ++r) __builtin_memcpy(&tb[r], t0 + r * ldt + ib, sizeof(vo_f32x16));
    for (int i = 0; i < kCols; ++i) {
      vo_f32x16 gi;
      __builtin_memcpy(&gi, g + static_cast<int64_t>(ib + i) * n + ib, sizeof gi);
      for (int r = 0; r < nr; ++r) {
        float ei;
        o0[r * ldo + ib + i] = vo_ef_code(vo_clamp65536(tb[r][i]), q, lut, &ei);
        e[r][i] = ei;
        tb[r] = tb[r] - ei * gi;
      }
    }
    vo_ef_trailing(t0, ldt, nr, n, ib, g, e);
  }
}

// Rows per group: 8 with 32 vector registers (AVX-512), else 4 (fewer registers: 8 rows spill).
#ifdef __AVX512F__
#define VO_EF_ROWS 8
#else
#define VO_EF_ROWS 4
#endif

#if defined(__AVX512F__) || defined(__AVX2__)
// Rows in the lanes: 16 rows with AVX-512 (its 32 registers hold a 16 x 16 tile), 8 with AVX2.
#ifdef __AVX512F__
#define VO_EF_LANES 16
#else
#define VO_EF_LANES 8
#endif
typedef float vo_lanes __attribute__((vector_size(VO_EF_LANES * 4)));

static inline vo_lanes vo_splat_lanes(float x) {
  vo_lanes v;
  for (int l = 0; l < VO_EF_LANES; ++l) v[l] = x;
  return v;
}

// VO_EF_LANES rows with the rows in the lanes. Inside each full block of 16 columns the tile is
// transposed, so that one vector holds column i of every row: the rounding of column i is then
// vector work (round, clamp; the level table per lane), and its errors update the block's later
// columns with the gains g[i][j] broadcast. Every element still takes its updates in the order
// of the one-row definition, each a float multiply then a float subtract; the columns after the
// block are updated as in vo_ef_group, VO_EF_ROWS rows at a time.
static void vo_ef_group_lanes(float* t0, int64_t ldt, int n, const float* g, QuantParams q, const uint8_t* lut,
                              uint8_t* o0, int64_t ldo) {
  enum { kCols = 16, kLanes = VO_EF_LANES };
  float e[kLanes][kCols];
  float tile[kCols][kLanes];
  const vo_lanes lo = vo_splat_lanes(-65536.0f), hi = vo_splat_lanes(65536.0f), big = vo_splat_lanes(12582912.0f);
  const vo_lanes zero = vo_splat_lanes(static_cast<float>(q.zero)), vmax = vo_splat_lanes(static_cast<float>(q.qmax));
  const vo_lanes nil = vo_splat_lanes(0.0f);
  int ib = 0;
  for (; ib + kCols <= n; ib += kCols) {
    for (int r = 0; r < kLanes; ++r)
      for (int k = 0; k < kCols; ++k) tile[k][r] = t0[r * ldt + ib + k];
    vo_lanes tc[kCols];
    for (int k = 0; k < kCols; ++k) __builtin_memcpy(&tc[k], tile[k], sizeof(vo_lanes));
    for (int i = 0; i < kCols; ++i) {
      vo_lanes ti = tc[i] > lo ? tc[i] : lo;   // NaN -> -65536, as vo_clamp65536
      ti = ti < hi ? ti : hi;
      vo_lanes c = ((ti + big) - big) + zero;   // round half to even, + zero (exact integers)
      c = c < nil ? nil : c;
      c = c > vmax ? vmax : c;
      if (lut)
        for (int r = 0; r < kLanes; ++r) c[r] = static_cast<float>(lut[static_cast<int32_t>(c[r])]);
      const vo_lanes ei = ti - (c - zero);
      for (int r = 0; r < kLanes; ++r) {
        o0[r * ldo + ib + i] = static_cast<uint8_t>(static_cast<int32_t>(c[r]));
        e[r][i] = ei[r];
      }
      const float* gi = g + static_cast<int64_t>(ib + i) * n + ib;
      for (int j = i + 1; j < kCols; ++j) tc[j] = tc[j] - ei * gi[j];
    }
    for (int r = 0; r < kLanes; r += VO_EF_ROWS) vo_ef_trailing(t0 + r * ldt, ldt, VO_EF_ROWS, n, ib, g, e + r);
  }
  if (ib < n) vo_ef_tail(t0, ldt, kLanes, n, ib, g, q, lut, o0, ldo);
}
#endif

static void vo_ef_quant_rows(float* t, int64_t ldt, int rows, int n, const float* g, QuantParams q,
                             const uint8_t* lut, uint8_t* out, int64_t ldo) {
  for (int r = 0; r < rows; ++r) {
    float* tr = t + r * ldt;
    for (int j = 0; j < n; ++j) tr[j] = vo_clamp65536(tr[j] * q.inv_scale);
  }
  int r0 = 0;
#ifdef VO_EF_LANES
  for (; r0 + VO_EF_LANES <= rows; r0 += VO_EF_LANES) vo_ef_group_lanes(t + r0 * ldt, ldt, n, g, q, lut, out + r0 * ldo, ldo);
#endif
  for (; r0 + VO_EF_ROWS <= rows; r0 += VO_EF_ROWS)
    vo_ef_group(t + r0 * ldt, ldt, VO_EF_ROWS, n, g, q, lut, out + r0 * ldo, ldo);
  if (r0 < rows) vo_ef_group(t + r0 * ldt, ldt, rows - r0, n, g, q, lut, out + r0 * ldo, ldo);
}

static const VitRowOps vo_table = {
    VO_NAME, vo_layernorm_quant, vo_layernorm_quant2, vo_softmax_levels, vo_gelu_quant, vo_quant_row, vo_quant_row_s8, vo_exp_row, vo_gelu_row, vo_codes_row,
    vo_map_bytes, vo_layernorm_row, vo_ef_quant_rows,
};
