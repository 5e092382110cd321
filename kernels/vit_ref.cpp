// vit_ref.cpp: the reference (baseline-ISA) build of the executor's float row operations
// (vit_ops_impl.h), the post-Softmax bucket coder, and the per-ISA table lookup.
#include <algorithm>
#include <cstdint>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "kernels/error.h"
#include "kernels/vit_ops.h"

namespace reparq {

namespace vitops_ref {
#define VO_NAME "ref"
#include "kernels/vit_ops_impl.h"
#undef VO_NAME
}  // namespace vitops_ref

namespace {

float bits_float(int64_t bits) {
  const int32_t b = static_cast<int32_t>(bits);
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

int32_t float_bits(float f) {
  int32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

}  // namespace

AttnCoder make_attn_coder(const AttnQuant& q) {
  const int L = 1 << q.bits;
  if (static_cast<int>(q.thresholds.size()) != L - 1 || static_cast<int>(q.lut.size()) != L)
    throw InputError("post-Softmax quantizer: " + std::to_string(q.thresholds.size()) + " thresholds and " +
                     std::to_string(q.lut.size()) + " levels for " + std::to_string(q.bits) + " bits");
  const float inf = std::numeric_limits<float>::infinity();
  const int32_t inf_bits = float_bits(inf);
  // Smallest positive threshold and largest threshold decide the table's range.
  float lo_thr = inf, hi_thr = 1.0f;
  for (float t : q.thresholds) {
    if (t > 0 && t < lo_thr) lo_thr = t;
    if (t > hi_thr) hi_thr = t;
  }
  AttnCoder best;
  bool have = false;
  for (int shift = 23; shift >= 0; --shift) {
    AttnCoder c;
    c.shift = shift;
    c.key_min = lo_thr < inf ? (float_bits(lo_thr) >> shift) : 0;
    c.key_max = std::min<int64_t>(int64_t(float_bits(hi_thr) >> shift) + 1, inf_bits >> shift);
    const int64_t size = int64_t(c.key_max) - c.key_min + 1;
    if (size > (1 << 16)) break;
    c.start.resize(size);
    int steps = 0;
    for (int64_t key = c.key_min; key <= c.key_max; ++key) {
      // Bucket [lower, upper] of floats with this key; the end buckets take everything beyond.
      const float lower = key == c.key_min ? -inf : bits_float(key << shift);
      const float upper = key == c.key_max ? inf : bits_float(((key + 1) << shift) - 1);
      const int c_lo = q.code(upper), c_hi = q.code(lower);
      c.start[key - c.key_min] = c_lo;
      steps = std::max(steps, c_hi - c_lo);
    }
    c.steps = steps;
    if (!have || steps < best.steps) {
      best = std::move(c);
      have = true;
    }
    if (best.steps <= 1) break;
  }
  best.thr.assign(q.thresholds.begin(), q.thresholds.end());
  best.thr.push_back(-inf);
  best.lut.assign(q.lut.begin(), q.lut.end());
  bool decreasing = true;
  for (size_t i = 1; i < q.thresholds.size(); ++i) decreasing = decreasing && q.thresholds[i] < q.thresholds[i - 1];
  if (L <= 32 && decreasing) {
    best.search_levels = L;
    best.thr32.assign(32, -inf);
    std::copy(q.thresholds.begin(), q.thresholds.end(), best.thr32.begin());
    best.lut32.assign(32, 0);
    std::copy(q.lut.begin(), q.lut.end(), best.lut32.begin());
  }
  if (L > 32 && decreasing && q.thresholds.back() > 0) {   // the arithmetic path (AttnCoder::affine_k)
    const int Q = L - 1;
    const double span = double(q.thresholds.front()) - double(q.thresholds.back());
    const float k = static_cast<float>(double(Q - 1) / span);
    bool ok = std::isfinite(k) && k > 0;
    // Products of two floats are exact in double.
    for (int i = 0; ok && i < Q; ++i)
      ok = std::fabs(double(q.thresholds[size_t(i)]) * double(k) - (Q - i - 0.5)) <= double(AttnCoder::kAffineEta) / 2;
    const int32_t g = int32_t(q.lut[size_t(Q - 1)]) - int32_t(q.lut[size_t(Q)]);
    for (int c = 0; ok && c <= Q; ++c) ok = int32_t(q.lut[size_t(c)]) == int32_t(q.lut[size_t(Q)]) + (Q - c) * g;
    if (ok) best.affine_k = k, best.affine_g = g, best.affine_q = Q, best.affine_base = q.lut[size_t(Q)];
  }
  if (best.steps <= 1 && best.search_levels == 0) {   // (the register search needs no per-key table)
    const size_t n_keys = best.start.size();
    best.key_entry.resize(n_keys);
    for (size_t key = 0; key < n_keys; ++key) {
      const int c = best.start[key];
      const uint32_t lv0 = uint32_t(best.lut[c]) & 255, lv1 = c + 1 < L ? uint32_t(best.lut[c + 1]) & 255 : lv0;
      const uint32_t thr_bits = uint32_t(float_bits(best.steps == 1 ? best.thr[c] : -inf));
      best.key_entry[key] = int64_t((uint64_t(lv0 | (lv1 << 8)) << 32) | thr_bits);
    }
  }
  return best;
}

const VitRowOps& vit_row_ops_ref() { return vitops_ref::vo_table; }

const VitRowOps& vit_row_ops(Isa isa) {
  if (!isa_available(isa)) throw UsageError(std::string("this CPU or build lacks ISA ") + isa_name(isa));
  switch (isa) {
#if defined(REPARQ_HAVE_X86_KERNELS)
    case Isa::Avx2: return detail::vit_row_ops_avx2();
    case Isa::Avx512Vnni: return detail::vit_row_ops_avx512();
#endif
#if defined(REPARQ_HAVE_ARM_KERNELS)
    case Isa::Neon:
    case Isa::NeonDot:
    case Isa::NeonI8mm: return detail::vit_row_ops_neon();
#endif
    default: return vit_row_ops_ref();
  }
}

}  // namespace reparq
