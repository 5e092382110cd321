// vit_ops_impl.h: the one source of the executor's float row operations (see vit_ops.h for
// the definitions). Included INSIDE a namespace by kernels/vit_ref.cpp (baseline flags) and by
// kernels/x86/vit_ops_{avx2,avx512}.cpp (ISA flags), after <cstdint> and "kernels/vit_ops.h".
// Rules for this file, so that every build is bit-identical to the reference:
//   - elementwise float/double arithmetic only, or reductions in the fixed 8-lane order;
//   - no library calls whose results could differ per build (our own exp/erf polynomials;
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

// erf(x): odd; on [0, 4) eight intervals of width 1/2, each a degree-7 polynomial in
// (|x| - centre) fitted to erf (Chebyshev least squares; max abs error 7e-8 in float);
// 1 from 4 on (erf(4) = 1 - 1.5e-8 rounds to 1.0f). erf(+-NaN) = +-1 (GELU(NaN) stays NaN).
static constexpr float vo_erf_coef[8][8] = {
    {2.763263881e-01f, 1.060014129e+00f, -2.650030851e-01f, -3.091705441e-01f, 1.269408762e-01f, 8.003829420e-02f, -3.941861168e-02f, -1.582425646e-02f},
    {7.111556530e-01f, 6.429310441e-01f, -4.821981788e-01f, 2.678843401e-02f, 1.506771892e-01f, -5.322016031e-02f, -2.660210989e-02f, 1.791717112e-02f},
    {9.229001403e-01f, 2.365211248e-01f, -2.956516743e-01f, 1.675358713e-01f, -6.135778502e-03f, -4.718590155e-02f, 2.064384148e-02f, 3.738367232e-03f},
    {9.866716862e-01f, 5.277499557e-02f, -9.235621244e-02f, 9.015736729e-02f, -4.810507968e-02f, 6.619183347e-03f, 9.044030681e-03f, -5.940426141e-03f},
    {9.985373020e-01f, 7.142319344e-03f, -1.607017033e-02f, 2.172452025e-02f, -1.908758655e-02f, 1.065977477e-02f, -2.787817735e-03f, -7.185895811e-04f},
    {9.998993874e-01f, 5.862772814e-04f, -1.612266409e-03f, 2.760381903e-03f, -3.257764271e-03f, 2.756232163e-03f, -1.667186851e-03f, 6.364222500e-04f},
    {9.999957085e-01f, 2.918901555e-05f, -9.486825729e-05f, 1.958120847e-04f, -2.862245019e-04f, 3.136490413e-04f, -2.730799897e-04f, 1.733881363e-04f},
    {9.999998808e-01f, 8.814297416e-07f, -3.305919108e-06f, 7.970193110e-06f, -1.379316109e-05f, 1.833502756e-05f, -2.059694452e-05f, 1.709348180e-05f},
};
static inline float vo_erf(float x) {
  const int32_t xb = vo_float_to_bits(x);
  const float ax = vo_bits_to_float(xb & 0x7FFFFFFF);
  const float ac = ax < 3.99f ? ax : 3.99f;  // NaN -> 3.99
  const int i = static_cast<int>(ac * 2.0f);
  const float t = ac - (static_cast<float>(i) * 0.5f + 0.25f);
  float p = vo_erf_coef[i][7];
  p = p * t + vo_erf_coef[i][6];
  p = p * t + vo_erf_coef[i][5];
  p = p * t + vo_erf_coef[i][4];
  p = p * t + vo_erf_coef[i][3];
  p = p * t + vo_erf_coef[i][2];
  p = p * t + vo_erf_coef[i][1];
  p = p * t + vo_erf_coef[i][0];
  p = p < 1.0f ? p : 1.0f;
  p = ax < 4.0f ? p : 1.0f;
  return vo_bits_to_float(vo_float_to_bits(p) | (xb & static_cast<int32_t>(0x80000000u)));
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
    float g = v * 0.5f * (1.0f + vo_erf(v * 0.70710678f));
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
static void vo_erf_row(const float* x, int n, float* out) {
  for (int i = 0; i < n; ++i) out[i] = vo_erf(x[i]);
}

static const VitRowOps vo_table = {
    VO_NAME, vo_layernorm_quant, vo_layernorm_quant2, vo_softmax_levels, vo_gelu_quant, vo_quant_row, vo_quant_row_s8, vo_exp_row, vo_erf_row, vo_codes_row,
};
