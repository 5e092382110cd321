// test_executor.cpp: the integer ViT executor against an independent double-precision reference
// written from docs/FORMAT.md; bit-identity across ISAs, threads and batch sizes; the float row
// ops' vectorized builds against their reference twin; the quantized file's round trip and the
// loader's rejections.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/error.h"
#include "kernels/executor.h"
#include "kernels/qmodel.h"
#include "kernels/safetensors.h"
#include "kernels/vit_ops.h"

using namespace reparq;

// Calls of the global operator new so far (tests/kernels/alloc_counter.cpp replaces it).
long test_new_calls();

namespace {

std::vector<Isa> available_isas() {
  std::vector<Isa> v;
  for (Isa i : {Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni, Isa::Neon, Isa::NeonDot, Isa::NeonI8mm})
    if (isa_available(i)) v.push_back(i);
  return v;
}

// ---- post-Softmax quantizers, built from FORMAT.md's table ---------------------------------
AttnQuant make_attn(const std::string& kind, int bits, float s, float alpha = 2.0f) {
  AttnQuant q;
  q.kind = kind;
  q.bits = bits;
  q.scale = s;
  q.param = alpha;
  const int L = 1 << bits, Q = L - 1;
  std::vector<double> level(L);
  for (int c = 0; c < L; ++c) {
    if (kind == "uniform") level[c] = s * double(Q - c) / Q;
    else if (kind == "log2") level[c] = c < Q ? s * std::pow(2.0, -c) : 0.0;
    else if (kind == "logsqrt2") level[c] = c < Q ? s * std::pow(2.0, -c / 2.0) : 0.0;
    else level[c] = s * (0.5 + std::atan((2.0 * (Q - c) / Q - 1) * std::tan(alpha / 2)) / alpha);
  }
  for (int c = 0; c + 1 < L; ++c) {
    double t;
    if (kind == "log2") t = c + 1 < Q ? std::sqrt(level[c] * level[c + 1]) : s * std::pow(2.0, -(Q - 1) - 0.5);
    else if (kind == "logsqrt2") t = c + 1 < Q ? std::sqrt(level[c] * level[c + 1]) : s * std::pow(2.0, -(Q - 1) / 2.0 - 0.25);
    else t = 0.5 * (level[c] + level[c + 1]);
    q.thresholds.push_back(float(t));
  }
  q.lut_scale = s / 255.0f;
  for (int c = 0; c < L; ++c) q.lut.push_back(uint8_t(std::nearbyint(level[c] / q.lut_scale)));
  return q;
}

// ---- a random model ------------------------------------------------------------------------
struct Cfg {
  int64_t dim = 32, depth = 2, heads = 2, image = 8, patch = 4, chans = 1, mlp = 64, classes = 10;
  int wbits = 8, abits = 8;
  std::vector<std::string> kinds = {"uniform", "logsqrt2"};
  std::vector<int> attn_bits = {8, 4};
  bool gelu_mul = false;   // give every block a GELU output multiplier (mlp.fc2.input_mul)
  bool levels = false;     // give every activation site non-uniform levels (<site>.lut), 8-bit grids
  int cls_bits = 0;        // give every block class-token quantizers of these bits (QBlock::cls)
  bool ef = false;         // error-feedback rounding at every block Linear's input (ef_damp 0.01)
  bool col_shift = false;  // random weight column shifts (QLinear::w_shift) at every Linear
  int ef_block = 0;        // with ef: error-feedback blocks of this many columns (QLinear::ef_block)
  bool cls_dynamic = false;  // every block's class-row post-Softmax with its own scale (QBlock::attn_cls_dynamic)
};

QLinear rand_linear(std::mt19937& rng, int64_t out, int64_t in, int wbits, int abits) {
  QLinear l;
  l.out = out;
  l.in = in;
  l.wbits = wbits;
  const int lo = -(1 << (wbits - 1)), hi = (1 << (wbits - 1)) - 1;
  std::uniform_int_distribution<int> wd(lo, hi), zd(std::max(lo, -2), std::min(hi, 2));
  std::uniform_real_distribution<float> u(0.5f, 1.5f), bd(-0.2f, 0.2f);
  for (int64_t i = 0; i < out * in; ++i) l.w.push_back(int8_t(wd(rng)));
  const float base = float(1.0 / std::sqrt(double(in)) / ((1 << wbits) / std::sqrt(12.0)));
  for (int64_t n = 0; n < out; ++n) {
    l.w_zero.push_back(zd(rng));
    l.w_scale.push_back(base * u(rng));
    l.bias.push_back(bd(rng));
  }
  l.input.bits = abits;
  return l;
}

// ---- the reference forward (double), straight from FORMAT.md -------------------------------
// calib != nullptr: no activation quantization; records the range of every site's input.
using Ranges = std::map<const ActQuant*, std::pair<double, double>>;

struct Ref {
  const QuantModel& m;
  Ranges* calib;
  int64_t act_flips_guard = 0;

  std::vector<double> q(const std::vector<double>& x, const ActQuant& a) {
    std::vector<double> out(x.size());
    if (calib != nullptr) {
      auto& r = (*calib)[&a];
      for (double v : x) {
        r.first = std::min(r.first, v);
        r.second = std::max(r.second, v);
      }
      return x;
    }
    for (size_t i = 0; i < x.size(); ++i) {
      double c = std::nearbyint(x[i] / double(a.scale)) + a.zero;
      c = std::min<double>(std::max(c, 0.0), a.qmax());
      if (!a.lut.empty()) c = a.lut[size_t(c)];   // non-uniform levels (FORMAT.md)
      out[i] = double(a.scale) * (c - a.zero);
    }
    return out;
  }
  // y[r][n] = sum_k x[r][k] W[n][k] + b[n], x already dequantized.
  std::vector<double> linear(const std::vector<double>& x, int64_t rows, const QLinear& l) {
    std::vector<double> y(rows * l.out);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t n = 0; n < l.out; ++n) {
        double s = 0;
        for (int64_t k = 0; k < l.in; ++k)
          s += x[r * l.in + k] * double(l.w_scale[n]) * double(int(l.w[n * l.in + k]) - l.w_zero[n]) * double(1 << l.shift(k));
        y[r * l.out + n] = s + l.bias[n];
      }
    return y;
  }
  std::vector<double> ln(const std::vector<double>& x, int64_t rows, const std::vector<float>& w,
                         const std::vector<float>& b) {
    const int64_t D = m.dim;
    std::vector<double> y(x.size());
    for (int64_t r = 0; r < rows; ++r) {
      double mean = 0, var = 0;
      for (int64_t j = 0; j < D; ++j) mean += x[r * D + j];
      mean /= D;
      for (int64_t j = 0; j < D; ++j) var += (x[r * D + j] - mean) * (x[r * D + j] - mean);
      var /= D;
      for (int64_t j = 0; j < D; ++j) y[r * D + j] = (x[r * D + j] - mean) / std::sqrt(var + m.ln_eps) * w[j] + b[j];
    }
    return y;
  }

  // The input rows of Linear `l` [rows x l.in] quantized and dequantized: with error feedback
  // when l.ef_damp > 0 (FORMAT.md: the float arithmetic of the contract, from the row's value
  // rounded to float), else q(); row 0 with `c` (round to nearest) when given.
  std::vector<double> qin(const std::vector<double>& x, const QLinear& l, const ActQuant* c) {
    if (calib != nullptr || !(l.ef_damp > 0)) return qc(x, l.input, c);
    const ActQuant& a = l.input;
    const int64_t n = l.in, rows = int64_t(x.size()) / n;
    const std::vector<float> g = ef_gains_dense(l);
    std::vector<double> out(x.size());
    for (int64_t r = 0; r < rows; ++r) {
      if (r == 0 && c != nullptr) {
        const std::vector<double> r0 = q(std::vector<double>(x.begin(), x.begin() + n), *c);
        std::copy(r0.begin(), r0.end(), out.begin());
        continue;
      }
      std::vector<float> t(static_cast<size_t>(n));
      for (int64_t j = 0; j < n; ++j) t[j] = std::clamp(float(x[r * n + j]) * a.inv_scale(), -65536.0f, 65536.0f);
      for (int64_t i = 0; i < n; ++i) {
        const float ti = std::clamp(t[i], -65536.0f, 65536.0f);
        int c2 = int(std::clamp<float>(std::nearbyint(ti) + float(a.zero), 0.0f, float(a.qmax())));
        if (!a.lut.empty()) c2 = a.lut[size_t(c2)];
        out[r * n + i] = double(a.scale) * (c2 - a.zero);
        const float e = ti - float(c2 - a.zero);
        for (int64_t j = i + 1; j < n; ++j) t[j] = t[j] - e * g[i * n + j];
      }
    }
    return out;
  }

  // q() of every row, the first (the class token's) with `c` instead when given.
  std::vector<double> qc(const std::vector<double>& x, const ActQuant& a, const ActQuant* c) {
    std::vector<double> out = q(x, a);
    if (c == nullptr) return out;
    const size_t w = x.size() / size_t(m.tokens());
    const std::vector<double> r0 = q(std::vector<double>(x.begin(), x.begin() + long(w)), *c);
    std::copy(r0.begin(), r0.end(), out.begin());
    return out;
  }

  std::vector<double> forward(const uint8_t* img) {
    const int64_t D = m.dim, T = m.tokens(), S = m.image_size, p = m.patch, g = S / p, hd = m.head_dim();
    const int64_t P = m.in_chans * p * p;
    std::vector<double> patches((T - 1) * P);
    for (int64_t i = 0; i < T - 1; ++i)
      for (int64_t c = 0; c < m.in_chans; ++c)
        for (int64_t yy = 0; yy < p; ++yy)
          for (int64_t xx = 0; xx < p; ++xx)
            patches[i * P + c * p * p + yy * p + xx] = img[((i / g) * p + yy) * S + (i % g) * p + xx];
    std::vector<double> pe = linear(patches, T - 1, m.patch_embed);
    std::vector<double> x(T * D);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < D; ++j)
        x[t * D + j] = (t == 0 ? double(m.cls_token[j]) : pe[(t - 1) * D + j]) + m.pos_embed[t * D + j];
    for (const QBlock& b : m.blocks) {
      const ClsQuant* cq = b.cls ? &*b.cls : nullptr;
      auto C = [&](const ActQuant ClsQuant::*f) { return cq ? &(cq->*f) : nullptr; };
      std::vector<double> h = qin(ln(x, T, b.ln1_w, b.ln1_b), b.qkv, C(&ClsQuant::qkv_in));
      std::vector<double> qkv = linear(h, T, b.qkv);
      std::vector<double> qv(T * D), kv(T * D), vv(T * D);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t j = 0; j < D; ++j) {
          qv[t * D + j] = qkv[t * 3 * D + j];
          kv[t * D + j] = qkv[t * 3 * D + D + j];
          vv[t * D + j] = qkv[t * 3 * D + 2 * D + j];
        }
      qv = qc(qv, b.q, C(&ClsQuant::q));
      kv = qc(kv, b.k, C(&ClsQuant::k));
      vv = q(vv, b.v);   // the class token's v row keeps the block's quantizer
      std::vector<double> o(T * D);
      for (int64_t hh = 0; hh < m.heads; ++hh)
        for (int64_t i = 0; i < T; ++i) {
          std::vector<double> s(T);
          double mx = -1e300, sum = 0;
          for (int64_t j = 0; j < T; ++j) {
            double d = 0;
            for (int64_t k = 0; k < hd; ++k) d += qv[i * D + hh * hd + k] * kv[j * D + hh * hd + k];
            s[j] = d / std::sqrt(double(hd));
            mx = std::max(mx, s[j]);
          }
          for (int64_t j = 0; j < T; ++j) sum += (s[j] = std::exp(s[j] - mx));
          for (int64_t j = 0; j < T; ++j) {
            double a = s[j] / sum;
            if (cq != nullptr && i == 0) {
              a = q({a}, cq->attn)[0];   // the class token's post-Softmax row: uniform
            } else if (b.attn_cls_dynamic && i == 0 && calib == nullptr) {
              // its own scale m / L, m = the row's largest probability = 1 / sum (FORMAT.md)
              const double L = double((1 << b.attn.bits) - 1), mrow = 1.0 / sum;
              a = std::nearbyint(a * (L / mrow)) * (mrow / L);
            } else if (calib == nullptr) {
              int c = 0;
              while (c < int(b.attn.thresholds.size()) && a < b.attn.thresholds[c]) ++c;
              a = double(b.attn.lut_scale) * b.attn.lut[c];
            }
            for (int64_t k = 0; k < hd; ++k) o[i * D + hh * hd + k] += a * vv[j * D + hh * hd + k];
          }
        }
      std::vector<double> pr = linear(qin(o, b.proj, C(&ClsQuant::proj_in)), T, b.proj);
      for (size_t i = 0; i < x.size(); ++i) x[i] += pr[i];
      std::vector<double> f1 = linear(qin(ln(x, T, b.ln2_w, b.ln2_b), b.fc1, C(&ClsQuant::fc1_in)), T, b.fc1);
      for (double& v : f1) v = 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
      if (!b.fc2_in_mul.empty())
        for (size_t j = 0; j < f1.size(); ++j) f1[j] *= b.fc2_in_mul[j % b.fc2_in_mul.size()];
      std::vector<double> f2 = linear(qin(f1, b.fc2, C(&ClsQuant::fc2_in)), T, b.fc2);
      for (size_t i = 0; i < x.size(); ++i) x[i] += f2[i];
    }
    std::vector<double> cls(x.begin(), x.begin() + D);
    return linear(q(ln(cls, 1, m.norm_w, m.norm_b), m.head.input), 1, m.head);
  }
};

std::vector<uint8_t> rand_images(std::mt19937& rng, int64_t n, int64_t S) {
  std::vector<uint8_t> v(n * S * S);
  std::uniform_int_distribution<int> d(0, 255);
  // Smooth-ish images: a random gradient plus noise, like real pictures have structure.
  for (int64_t i = 0; i < n; ++i) {
    const int a = d(rng), bx = d(rng) % 16, by = d(rng) % 16;
    for (int64_t y = 0; y < S; ++y)
      for (int64_t x = 0; x < S; ++x)
        v[(i * S + y) * S + x] = uint8_t(std::clamp<int64_t>(a + bx * x - by * y + d(rng) / 4 - 32, 0, 255));
  }
  return v;
}

QuantModel make_model(const Cfg& c, uint32_t seed) {
  std::mt19937 rng(seed);
  QuantModel m;
  m.arch = "test-vit";
  m.image_size = c.image;
  m.patch = c.patch;
  m.in_chans = c.chans;
  m.dim = c.dim;
  m.depth = c.depth;
  m.heads = c.heads;
  m.mlp_hidden = c.mlp;
  m.num_classes = c.classes;
  m.ln_eps = 1e-6;
  const int64_t D = c.dim, T = m.tokens();
  std::normal_distribution<float> nd(0.f, 1.f);
  m.patch_embed = rand_linear(rng, D, c.chans * c.patch * c.patch, c.wbits, 8);
  for (float& s : m.patch_embed.w_scale) s /= 128.0f;  // raw pixels up to 255
  m.patch_embed.input = ActQuant{8, 1.0f, 0, {}};
  for (int64_t j = 0; j < D; ++j) m.cls_token.push_back(0.5f * nd(rng));
  for (int64_t j = 0; j < T * D; ++j) m.pos_embed.push_back(0.5f * nd(rng));
  for (int64_t i = 0; i < c.depth; ++i) {
    QBlock b;
    for (int64_t j = 0; j < D; ++j) {
      b.ln1_w.push_back(1.0f + 0.2f * nd(rng));
      b.ln1_b.push_back(0.1f * nd(rng));
      b.ln2_w.push_back(1.0f + 0.2f * nd(rng));
      b.ln2_b.push_back(0.1f * nd(rng));
    }
    b.qkv = rand_linear(rng, 3 * D, D, c.wbits, c.abits);
    for (float& s : b.qkv.w_scale) s *= 2.0f;  // sharper attention
    b.proj = rand_linear(rng, D, D, c.wbits, c.abits);
    b.fc1 = rand_linear(rng, c.mlp, D, c.wbits, c.abits);
    b.fc2 = rand_linear(rng, D, c.mlp, c.wbits, c.abits);
    b.q.bits = b.k.bits = b.v.bits = c.abits;
    const std::string kind = c.kinds[i % c.kinds.size()];
    b.attn = make_attn(kind, c.attn_bits[i % c.attn_bits.size()], 1.0f);
    if (c.gelu_mul)
      for (int64_t j = 0; j < c.mlp; ++j) b.fc2_in_mul.push_back(std::exp(0.7f * nd(rng)));
    b.attn_cls_dynamic = c.cls_dynamic;
    if (c.cls_bits > 0) {
      ClsQuant cq;
      for (ActQuant* a : cq.sites()) a->bits = c.cls_bits;
      b.cls = cq;
    }
    m.blocks.push_back(b);
  }
  for (int64_t j = 0; j < D; ++j) {
    m.norm_w.push_back(1.0f + 0.2f * nd(rng));
    m.norm_b.push_back(0.1f * nd(rng));
  }
  m.head = rand_linear(rng, c.classes, D, c.wbits, c.abits);
  m.metadata["recipe"] = "{\"method\":\"test\"}";
  if (c.col_shift) {   // about one column in four shifted, by 1..max_col_shift; scales shrunk to match
    std::vector<QLinear*> ls = {&m.patch_embed, &m.head};
    for (QBlock& b : m.blocks)
      for (QLinear* l : {&b.qkv, &b.proj, &b.fc1, &b.fc2}) ls.push_back(l);
    for (QLinear* l : ls) {
      std::uniform_int_distribution<int> sd(-3 * max_col_shift(l->wbits), max_col_shift(l->wbits));
      for (int64_t k = 0; k < l->in; ++k) l->w_shift.push_back(uint8_t(std::max(0, sd(rng))));
      for (float& sc : l->w_scale) sc /= 2.0f;
    }
  }

  // Calibrate every activation quantizer on a few images with the float reference.
  Ranges ranges;
  auto add = [&](ActQuant& a) { ranges[&a] = {1e300, -1e300}; };
  for (QBlock& b : m.blocks) {
    for (ActQuant* a : {&b.qkv.input, &b.q, &b.k, &b.v, &b.proj.input, &b.fc1.input, &b.fc2.input}) add(*a);
    if (b.cls)
      for (ActQuant* a : b.cls->sites()) add(*a);
  }
  add(m.head.input);
  std::vector<uint8_t> imgs = rand_images(rng, 4, c.image);
  for (int i = 0; i < 4; ++i) Ref{m, &ranges}.forward(imgs.data() + i * c.image * c.image);
  for (auto& [ptr, r] : ranges) {
    ActQuant& a = *const_cast<ActQuant*>(ptr);
    const double lo = std::min(r.first, 0.0), hi = std::max(r.second, 0.0);
    a.scale = float((hi - lo) / a.qmax());
    a.zero = int32_t(std::clamp<double>(std::nearbyint(-lo / a.scale), 0, a.qmax()));
    if (c.levels) {   // 16 random distinct level codes; each grid code maps to the nearest one
      std::vector<int> codes(size_t(a.qmax()) + 1);
      std::iota(codes.begin(), codes.end(), 0);
      std::shuffle(codes.begin(), codes.end(), rng);
      codes.resize(16);
      std::sort(codes.begin(), codes.end());
      for (int g = 0; g <= a.qmax(); ++g) {
        int best = codes[0];
        for (int l : codes)
          if (std::abs(l - g) < std::abs(best - g)) best = l;
        a.lut.push_back(uint8_t(best));
      }
    }
  }
  if (c.ef)
    for (QBlock& b : m.blocks)
      for (QLinear* l : {&b.qkv, &b.proj, &b.fc1, &b.fc2}) l->ef_damp = 0.01f, l->ef_block = c.ef_block;
  return m;
}

// ---- (a) executor vs reference --------------------------------------------------------------
void check_against_reference(const Cfg& c, uint32_t seed) {
  const QuantModel m = make_model(c, seed);
  std::mt19937 rng(seed + 1);
  const int64_t n = 8;
  std::vector<uint8_t> imgs = rand_images(rng, n, c.image);
  Executor ex(m, Isa::Scalar, 1);
  std::vector<float> logits(n * c.classes);
  ex.run(imgs.data(), n, logits.data());
  double max_diff = 0, max_abs = 0;
  int top1_agree = 0;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<double> r = Ref{m, nullptr}.forward(imgs.data() + i * c.image * c.image);
    int am = 0, bm = 0;
    for (int64_t k = 0; k < c.classes; ++k) {
      max_diff = std::max(max_diff, std::abs(r[k] - logits[i * c.classes + k]));
      max_abs = std::max(max_abs, std::abs(r[k]));
      if (r[k] > r[am]) am = int(k);
      if (logits[i * c.classes + k] > logits[i * c.classes + bm]) bm = int(k);
    }
    top1_agree += am == bm;
  }
  // Float vs double rounding flips a code only at a rounding tie's edge; nearly all logits
  // agree to float precision, a rare flip moves them by about one quantization step.
  EXPECT_LT(max_diff, 0.02 * max_abs + 1e-4) << "max |logit| " << max_abs;
  EXPECT_GE(top1_agree, n - 1);
  std::printf("  W%dA%d: max |logit diff| %.3g (max |logit| %.3g), top-1 agree %d/%d\n", c.wbits, c.abits,
              max_diff, max_abs, top1_agree, int(n));
}

}  // namespace

TEST(Executor, MatchesReferenceW8A8) {
  Cfg c;
  check_against_reference(c, 1);
}

TEST(Executor, MatchesReferenceW4A8ThreeChannels) {
  Cfg c;
  c.wbits = 4;
  c.dim = 48;
  c.heads = 3;
  c.image = 12;
  c.patch = 2;
  c.chans = 3;
  c.mlp = 96;
  c.classes = 7;
  c.kinds = {"log2", "tanq"};
  c.attn_bits = {4, 4};
  check_against_reference(c, 2);
}

TEST(Executor, MatchesReferenceW4A4) {
  Cfg c;
  c.wbits = 4;
  c.abits = 4;
  c.kinds = {"logsqrt2", "uniform"};
  c.attn_bits = {4, 3};
  check_against_reference(c, 3);
}

// The optional GELU output multiplier (FORMAT.md, mlp.fc2.input_mul).
TEST(Executor, MatchesReferenceW4A4GeluMultiplier) {
  Cfg c;
  c.wbits = 4;
  c.abits = 4;
  c.gelu_mul = true;
  check_against_reference(c, 6);
  // Sabotage: the executor must use the multiplier (dropping it changes the logits).
  QuantModel m = make_model(c, 6), plain = m;
  for (QBlock& b : plain.blocks) b.fc2_in_mul.clear();
  std::mt19937 rng(7);
  std::vector<uint8_t> imgs = rand_images(rng, 4, c.image);
  std::vector<float> a(4 * c.classes), b(4 * c.classes);
  Executor(m, Isa::Scalar, 1).run(imgs.data(), 4, a.data());
  Executor(plain, Isa::Scalar, 1).run(imgs.data(), 4, b.data());
  EXPECT_NE(a, b);
  for (Isa isa : available_isas()) {
    Executor(m, isa, 2).run(imgs.data(), 4, b.data());
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4)) << isa_name(isa);
  }
}

// Non-uniform activation levels (FORMAT.md, <site>.lut) at every site: LN outputs, q, k, v,
// the attention output, the GELU output and the head input.
TEST(Executor, MatchesReferenceNonUniformLevels) {
  Cfg c;
  c.wbits = 4;
  c.levels = true;
  check_against_reference(c, 8);
  // Sabotage: the executor must apply every table (dropping any one changes the logits).
  const QuantModel m = make_model(c, 8);
  std::mt19937 rng(9);
  std::vector<uint8_t> imgs = rand_images(rng, 4, c.image);
  std::vector<float> a(4 * c.classes), b(4 * c.classes);
  Executor(m, Isa::Scalar, 1).run(imgs.data(), 4, a.data());
  for (int site = 0; site < 8; ++site) {
    QuantModel plain = m;
    QBlock& q = plain.blocks[1];
    ActQuant* sites[] = {&q.qkv.input, &q.q, &q.k, &q.v, &q.proj.input, &q.fc1.input, &q.fc2.input, &plain.head.input};
    sites[site]->lut.clear();
    Executor(plain, Isa::Scalar, 1).run(imgs.data(), 4, b.data());
    EXPECT_NE(a, b) << "site " << site;
  }
  for (Isa isa : available_isas())
    for (int threads : {1, 3}) {
      Executor(m, isa, threads).run(imgs.data(), 4, b.data());
      EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4)) << isa_name(isa) << " threads " << threads;
    }
  // A table that is not monotone, or has the wrong size, is refused.
  QuantModel bad = m;
  std::swap(bad.blocks[0].v.lut[10], bad.blocks[0].v.lut[200]);
  EXPECT_THROW(Executor(bad, Isa::Scalar, 1), InputError);
  bad = m;
  bad.blocks[0].fc2.input.lut.pop_back();
  EXPECT_THROW(Executor(bad, Isa::Scalar, 1), InputError);
}

// `want`: the logits of the 4 images `imgs` (Isa::Scalar, 1 thread). Every ISA, 1 and 3 threads,
// batches of 1 and 4 give them bit for bit.
static void expect_same_logits_everywhere(const QuantModel& m, const Cfg& c, const std::vector<uint8_t>& imgs,
                                   const std::vector<float>& want) {
  std::vector<float> got(want.size());
  for (Isa isa : available_isas())
    for (int threads : {1, 3})
      for (int64_t batch : {1, 4}) {
        Executor ex(m, isa, threads);
        for (int64_t i = 0; i < 4; i += batch) ex.run(imgs.data() + i * c.image * c.image, batch, got.data() + i * c.classes);
        EXPECT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * 4)) << isa_name(isa) << " threads " << threads << " batch " << batch;
      }
}

// `m` with its head input quantizer widened to 8 bits over the same range (the sabotage tests
// below: a 4-bit head input absorbs the last block's smaller changes on a few images).
static QuantModel with_8bit_head_input(QuantModel m) {
  ActQuant& hi = m.head.input;
  hi.zero = int32_t(std::lround(hi.zero * 255.0 / hi.qmax()));
  hi.scale = hi.scale * float(hi.qmax()) / 255.0f;
  hi.bits = 8;
  return m;
}

// Class-token quantizers (FORMAT.md, blocks.i.cls.*): the class rows at 8 bits in a W4A4
// model, through the GEMMs, the attention's row 0 and column 0, and the last block's class-only
// path.
TEST(Executor, MatchesReferenceClassTokenQuantizers) {
  Cfg c;
  c.wbits = 4;
  c.abits = 4;
  c.depth = 3;
  c.cls_bits = 8;
  c.kinds = {"logsqrt2", "uniform", "log2"};
  c.attn_bits = {4, 3, 4};
  check_against_reference(c, 12);
  // Sabotage: each class quantizer of every block is used (coarsening any one changes the
  // logits), and so are they all together. (With an 8-bit head input: the 4-bit one absorbs
  // the last block's smaller changes on these few images.)
  QuantModel m = with_8bit_head_input(make_model(c, 12));
  std::mt19937 rng(13);
  std::vector<uint8_t> imgs = rand_images(rng, 4, c.image);
  std::vector<float> a(4 * c.classes), b(4 * c.classes);
  Executor(m, Isa::Scalar, 1).run(imgs.data(), 4, a.data());
  for (size_t blk = 0; blk < m.blocks.size(); ++blk)
    for (int site = 0; site < 7; ++site) {
      QuantModel p = m;
      p.blocks[blk].cls->sites()[size_t(site)]->scale *= 1.5f;
      Executor(p, Isa::Scalar, 1).run(imgs.data(), 4, b.data());
      EXPECT_NE(a, b) << "block " << blk << " site " << site;
    }
  QuantModel plain = m;
  for (QBlock& q : plain.blocks) q.cls.reset();
  Executor(plain, Isa::Scalar, 1).run(imgs.data(), 4, b.data());
  EXPECT_NE(a, b);
  expect_same_logits_everywhere(m, c, imgs, a);
  // In some blocks only, or with a level table: refused.
  QuantModel bad = m;
  bad.blocks[1].cls.reset();
  EXPECT_THROW(Executor(bad, Isa::Scalar, 1), InputError);
  bad = m;
  bad.blocks[0].cls->fc2_in.lut.assign(256, 0);
  EXPECT_THROW(Executor(bad, Isa::Scalar, 1), InputError);
}

// Dynamic class-row post-Softmax scale (FORMAT.md, blocks.i.attn.softmax.cls_dynamic) in a
// W4A4 model with three post-Softmax kinds: through the S GEMM's row 0, the attention's own
// row-0 output, the last block's class-only path, and with error feedback at proj's input.
TEST(Executor, MatchesReferenceDynamicClassRow) {
  Cfg c;
  c.wbits = 4;
  c.abits = 4;
  c.depth = 3;
  c.cls_dynamic = true;
  c.kinds = {"logsqrt2", "uniform", "log2"};
  c.attn_bits = {4, 3, 4};
  check_against_reference(c, 14);
  Cfg e = c;
  e.ef = true;
  check_against_reference(e, 15);
  // Sabotage: switching the dynamic row off in any one block changes the logits (with an
  // 8-bit head input, as above).
  QuantModel m = with_8bit_head_input(make_model(c, 14));
  std::mt19937 rng(16);
  std::vector<uint8_t> imgs = rand_images(rng, 4, c.image);
  std::vector<float> a(4 * c.classes), b(4 * c.classes);
  Executor(m, Isa::Scalar, 1).run(imgs.data(), 4, a.data());
  for (size_t blk = 0; blk < m.blocks.size(); ++blk) {
    QuantModel p = m;
    p.blocks[blk].attn_cls_dynamic = false;
    Executor(p, Isa::Scalar, 1).run(imgs.data(), 4, b.data());
    EXPECT_NE(a, b) << "block " << blk;
  }
  expect_same_logits_everywhere(m, c, imgs, a);
  // With class-token quantizers (their own class-row softmax quantizer): refused.
  Cfg cc = c;
  cc.cls_bits = 8;
  EXPECT_THROW(Executor(make_model(cc, 14), Isa::Scalar, 1), InputError);
}

// The logits of `imgs` (4 images of c.image pixels squared) on Isa::Scalar, one thread.
static std::vector<float> scalar_logits(const QuantModel& m, const Cfg& c, const std::vector<uint8_t>& imgs) {
  std::vector<float> y(4 * c.classes);
  Executor(m, Isa::Scalar, 1).run(imgs.data(), 4, y.data());
  return y;
}

// W4A4, three blocks with three post-Softmax kinds, error feedback at every block Linear.
static Cfg ef_cfg() {
  Cfg c;
  c.wbits = 4;
  c.abits = 4;
  c.depth = 3;
  c.ef = true;
  c.kinds = {"logsqrt2", "uniform", "log2"};
  c.attn_bits = {4, 3, 4};
  return c;
}

// Error-feedback rounding (FORMAT.md, <p>.input.ef_damp) at every block Linear's input: alone,
// with class-token quantizers (the class rows keep round to nearest, so the last block's proj,
// fc1 and fc2, which see only the class rows, do not use it) and with level tables.
TEST(Executor, MatchesReferenceErrorFeedback) {
  Cfg c = ef_cfg();
  check_against_reference(c, 14);
  Cfg cc = c;
  cc.cls_bits = 8;
  check_against_reference(cc, 15);
  Cfg cl = c;
  cl.levels = true;
  check_against_reference(cl, 16);
  // Sabotage: every Linear's feedback is used (turning off any one changes the logits).
  for (const Cfg* cfg : {&c, &cc}) {
    const QuantModel m = make_model(*cfg, 17);
    std::mt19937 rng(18);
    std::vector<uint8_t> imgs = rand_images(rng, 4, cfg->image);
    std::vector<float> a(4 * cfg->classes), b(4 * cfg->classes);
    Executor(m, Isa::Scalar, 1).run(imgs.data(), 4, a.data());
    for (size_t blk = 0; blk < m.blocks.size(); ++blk)
      for (int site = 0; site < 4; ++site) {
        QuantModel p = m;
        QBlock& q = p.blocks[blk];
        QLinear* ls[] = {&q.qkv, &q.proj, &q.fc1, &q.fc2};
        ls[site]->ef_damp = 0.0f;
        Executor(p, Isa::Scalar, 1).run(imgs.data(), 4, b.data());
        if (cfg->cls_bits > 0 && blk + 1 == m.blocks.size() && site > 0)
          EXPECT_EQ(a, b) << "the last block's proj / fc1 / fc2 see only the class rows, which keep their own quantizers";
        else
          EXPECT_NE(a, b) << "block " << blk << " site " << site << " cls " << cfg->cls_bits;
      }
    expect_same_logits_everywhere(m, *cfg, imgs, a);
  }
  // A negative or NaN damping, or feedback at the patch embedding or the head: refused.
  QuantModel bad = make_model(c, 17);
  bad.blocks[0].fc1.ef_damp = -1.0f;
  EXPECT_THROW(Executor(bad, Isa::Scalar, 1), InputError);
  bad.blocks[0].fc1.ef_damp = std::nanf("");
  EXPECT_THROW(Executor(bad, Isa::Scalar, 1), InputError);
  bad = make_model(c, 17);
  bad.head.ef_damp = 0.01f;
  EXPECT_THROW(Executor(bad, Isa::Scalar, 1), InputError);
}

// Power-of-two weight column factors (FORMAT.md, <p>.weight_shift): the executor multiplies
// (w - w_zero) by 2^shift into int8 at load; with W4 (packed int4 otherwise), W3 with error
// feedback, and W8 (max_col_shift 0: only zero shifts are valid).
TEST(Executor, MatchesReferenceColumnShifts) {
  EXPECT_EQ(max_col_shift(8), 0);
  EXPECT_EQ(max_col_shift(6), 1);
  EXPECT_EQ(max_col_shift(4), 3);
  EXPECT_EQ(max_col_shift(3), 4);
  EXPECT_EQ(max_col_shift(2), 5);
  Cfg c;
  c.wbits = 4;
  c.abits = 4;
  c.col_shift = true;
  check_against_reference(c, 40);
  Cfg e = ef_cfg();
  e.wbits = 3;
  e.col_shift = true;
  check_against_reference(e, 41);
  // Sabotage: the shifts are used (dropping those of any one Linear changes the logits).
  const QuantModel m = make_model(e, 42);
  std::mt19937 rng(43);
  const std::vector<uint8_t> imgs = rand_images(rng, 4, e.image);
  const std::vector<float> a = scalar_logits(m, e, imgs);
  for (size_t blk = 0; blk < m.blocks.size(); ++blk)
    for (int site = 0; site < 4; ++site) {
      QuantModel p = m;
      QBlock& q = p.blocks[blk];
      QLinear* ls[] = {&q.qkv, &q.proj, &q.fc1, &q.fc2};
      ls[site]->w_shift.clear();
      EXPECT_NE(a, scalar_logits(p, e, imgs)) << "block " << blk << " site " << site;
    }
  expect_same_logits_everywhere(m, e, imgs, a);
  // A shift above max_col_shift, or of the wrong length: refused.
  QuantModel bad = m;
  bad.blocks[1].fc2.w_shift[3] = uint8_t(max_col_shift(3) + 1);
  EXPECT_THROW(Executor(bad, Isa::Scalar, 1), InputError);
  bad = m;
  bad.head.w_shift.pop_back();
  EXPECT_THROW(Executor(bad, Isa::Scalar, 1), InputError);
  // Shifts on 8-bit weights (w - w_zero spans [-255, 255]: no room in int8), even all zero.
  Cfg c8;
  QuantModel w8 = make_model(c8, 42);
  w8.blocks[0].fc1.w_shift.assign(size_t(w8.blocks[0].fc1.in), 0);
  EXPECT_THROW(Executor(w8, Isa::Scalar, 1), InputError);
}

// Error-feedback blocks (FORMAT.md, <p>.input.ef_block): each block of K columns is rounded on
// its own through the gains of its own columns. Blocks of 12 leave shorter last blocks (32 =
// 12 + 12 + 8, 64 = 5 x 12 + 4); the executor agrees with the reference, on every ISA, thread
// count and batch; blocks change the logits; a block's gains are those of a Linear made of its
// columns alone, bit for bit.
TEST(Executor, MatchesReferenceErrorFeedbackBlocks) {
  Cfg c = ef_cfg();
  c.ef_block = 12;
  check_against_reference(c, 46);
  const QuantModel m = make_model(c, 47);
  std::mt19937 rng(48);
  const std::vector<uint8_t> imgs = rand_images(rng, 4, c.image);
  const std::vector<float> a = scalar_logits(m, c, imgs);
  QuantModel whole = m;
  for (QBlock& q : whole.blocks)
    for (QLinear* l : {&q.qkv, &q.proj, &q.fc1, &q.fc2}) l->ef_block = 0;
  EXPECT_NE(a, scalar_logits(whole, c, imgs));
  expect_same_logits_everywhere(m, c, imgs, a);
  // The gains of block [24, 32) of blocks.1.attn.qkv (8 columns) and of its first block.
  const QLinear& l = m.blocks[1].qkv;
  const std::vector<float> g = ef_gains(l);
  ASSERT_EQ(g.size(), size_t(2 * 12 * 12 + 8 * 8));
  for (int64_t s : {int64_t(0), int64_t(24)}) {
    const int64_t n = std::min<int64_t>(12, l.in - s);
    QLinear sub = l;
    sub.in = n;
    sub.ef_block = 0;
    sub.w.clear();
    for (int64_t r = 0; r < l.out; ++r)
      for (int64_t k = 0; k < n; ++k) sub.w.push_back(l.w[size_t(r * l.in + s + k)]);
    const std::vector<float> gs = ef_gains(sub);
    EXPECT_EQ(0, std::memcmp(gs.data(), g.data() + s * 12, gs.size() * sizeof(float))) << "block at " << s;
  }
  const std::vector<float> d = ef_gains_dense(l);
  EXPECT_EQ(d[size_t(1 * l.in + 2)], g[size_t(1 * 12 + 2)]);
  EXPECT_EQ(d[size_t(1 * l.in + 13)], 0.0f) << "across blocks";
  // A negative block, or a block without feedback: refused.
  QuantModel bad = m;
  bad.blocks[0].fc1.ef_block = -1;
  EXPECT_THROW(Executor(bad, Isa::Scalar, 1), InputError);
  bad = m;
  bad.blocks[0].fc1.ef_damp = 0.0f;
  EXPECT_THROW(Executor(bad, Isa::Scalar, 1), InputError);
}

// ef_gains is cache-blocked (panels of 32) and vectorized (target_clones on x86-64); its
// definition is the plain loops of docs/FORMAT.md "Error-feedback rounding", written out here
// one element at a time, in the documented order. The two must give the same bits, for sizes
// below, at and across the panel width.
TEST(ErrorFeedback, GainsBitIdenticalToThePlainLoops) {
  std::mt19937 rng(23);
  for (int64_t in : {1, 5, 32, 33, 70, 100}) {
    for (int64_t out : {3, 40, 100}) {
      QLinear l = rand_linear(rng, out, in, 4, 4);
      l.ef_damp = 0.05f;
      const int64_t n = in;
      std::vector<double> h(size_t(n * n), 0.0), R(size_t(n * n), 0.0), U(size_t(n * n), 0.0);
      for (int64_t i = 0; i < n; ++i)   // 1. H[i][j] = sum over rows r = 0.. in order
        for (int64_t j = i; j < n; ++j)
          for (int64_t r = 0; r < out; ++r) h[i * n + j] += double(l.weight(r, i)) * double(l.weight(r, j));
      double tr = 0;
      for (int64_t i = 0; i < n; ++i) tr += h[i * n + i];
      const double lambda = double(l.ef_damp) * tr / double(n);
      for (int64_t i = 0; i < n; ++i) h[i * n + i] += lambda;
      for (int64_t j = n - 1; j >= 0; --j) {   // 3. R from the last column, updates in decreasing j
        const double d = h[j * n + j];
        R[j * n + j] = std::sqrt(d > lambda ? d : lambda);
        for (int64_t i = 0; i < j; ++i) R[i * n + j] = h[i * n + j] / R[j * n + j];
        for (int64_t i = 0; i < j; ++i)
          for (int64_t c = i; c < j; ++c) h[i * n + c] = h[i * n + c] - R[i * n + j] * R[c * n + j];
      }
      std::vector<float> want(size_t(n * n), 0.0f);
      for (int64_t i = n - 1; i >= 0; --i) {   // 4. U = R^-1, sums in decreasing k
        U[i * n + i] = 1.0 / R[i * n + i];
        for (int64_t j = i + 1; j < n; ++j) {
          double acc = 0.0;
          for (int64_t k = j; k > i; --k) acc = acc + R[i * n + k] * U[k * n + j];
          U[i * n + j] = -acc / R[i * n + i];
          want[size_t(i * n + j)] = float(-acc);
        }
      }
      const std::vector<float> got = ef_gains(l);
      ASSERT_EQ(got.size(), want.size());
      EXPECT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * sizeof(float))) << "in " << in << " out " << out;
    }
  }
}

// ef_gains against GPTQ's factor computed another way (H^-1 by Gauss-Jordan, then its
// Cholesky factor), and error-feedback rounding against round to nearest: the Linear's output
// error |W^ (x - x^)|^2 must fall.
TEST(ErrorFeedback, GainsMatchGptqFactorAndLowerTheOutputError) {
  std::mt19937 rng(21);
  for (int64_t in : {16, 40, 70}) {
    QLinear l = rand_linear(rng, 24, in, 4, 4);   // out < in: W^T W is singular before damping
    l.ef_damp = 0.01f;
    const std::vector<float> g = ef_gains(l);
    const int64_t n = in;
    std::vector<double> h(size_t(n * n), 0.0), inv(size_t(n * n), 0.0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j)
        for (int64_t r = 0; r < l.out; ++r) h[i * n + j] += double(l.weight(r, i)) * double(l.weight(r, j));
    double tr = 0;
    for (int64_t i = 0; i < n; ++i) tr += h[i * n + i];
    for (int64_t i = 0; i < n; ++i) h[i * n + i] += 0.01 * tr / double(n), inv[i * n + i] = 1.0;
    for (int64_t c = 0; c < n; ++c) {   // Gauss-Jordan (H is positive definite: no pivoting)
      const double p = h[c * n + c];
      for (int64_t j = 0; j < n; ++j) h[c * n + j] /= p, inv[c * n + j] /= p;
      for (int64_t r = 0; r < n; ++r)
        if (r != c) {
          const double f = h[r * n + c];
          for (int64_t j = 0; j < n; ++j) h[r * n + j] -= f * h[c * n + j], inv[r * n + j] -= f * inv[c * n + j];
        }
    }
    std::vector<double> L(size_t(n * n), 0.0);   // inv = L L^T; U = L^T; G[i][j] = L[j][i] / L[i][i]
    for (int64_t j = 0; j < n; ++j) {
      double d = inv[j * n + j];
      for (int64_t k = 0; k < j; ++k) d -= L[j * n + k] * L[j * n + k];
      L[j * n + j] = std::sqrt(d);
      for (int64_t i = j + 1; i < n; ++i) {
        double s2 = inv[i * n + j];
        for (int64_t k = 0; k < j; ++k) s2 -= L[i * n + k] * L[j * n + k];
        L[i * n + j] = s2 / L[j * n + j];
      }
    }
    double worst = 0, gmax = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        const double want = j > i ? L[j * n + i] / L[i * n + i] : 0.0;
        worst = std::max(worst, std::abs(want - double(g[i * n + j])));
        gmax = std::max(gmax, std::abs(want));
      }
    EXPECT_LT(worst, 1e-5 * gmax) << "in " << in;
    // Output error over random rows, error feedback vs round to nearest (the zero-gain rows).
    const std::vector<float> zero(size_t(n * n), 0.0f);
    std::normal_distribution<float> nd(0.f, 1.f);
    const ActQuant a{4, 0.4f, 8, {}};
    const QuantParams qp = quant_params(a);
    double err_ef = 0, err_rtn = 0;
    for (int row = 0; row < 200; ++row) {
      std::vector<float> x(static_cast<size_t>(n)), t(static_cast<size_t>(n));
      for (float& v : x) v = nd(rng);
      std::vector<uint8_t> ce(static_cast<size_t>(n)), cr(static_cast<size_t>(n));
      t = x;
      vit_row_ops_ref().ef_quant_rows(t.data(), n, 1, int(n), g.data(), qp, nullptr, ce.data(), n);
      t = x;
      vit_row_ops_ref().ef_quant_rows(t.data(), n, 1, int(n), zero.data(), qp, nullptr, cr.data(), n);
      std::vector<uint8_t> plain(static_cast<size_t>(n));
      vit_row_ops_ref().quant_row(x.data(), int(n), qp, plain.data());
      EXPECT_EQ(cr, plain);   // zero gains: round to nearest
      for (int64_t o = 0; o < l.out; ++o) {
        double de = 0, dr = 0;
        for (int64_t k = 0; k < n; ++k) {
          de += double(l.weight(o, k)) * (x[k] - a.scale * (ce[k] - a.zero));
          dr += double(l.weight(o, k)) * (x[k] - a.scale * (cr[k] - a.zero));
        }
        err_ef += de * de;
        err_rtn += dr * dr;
      }
    }
    std::printf("  in %d: output error, error feedback / round to nearest = %.3f\n", int(in), err_ef / err_rtn);
    EXPECT_LT(err_ef, 0.8 * err_rtn) << "in " << in;
  }
}

TEST(Executor, MatchesReferenceW6A6) {
  Cfg c;
  c.wbits = 6;
  c.abits = 6;
  c.depth = 3;
  c.kinds = {"tanq", "log2", "uniform"};
  c.attn_bits = {8, 4, 4};
  check_against_reference(c, 4);
}

// ---- (b) bit-identity across ISAs, threads and batch sizes ---------------------------------
TEST(Executor, BitIdenticalAcrossIsaThreadsBatch) {
  for (int variant = 0; variant < 3; ++variant) {
    Cfg c;
    c.dim = 48;
    c.heads = 3;
    c.image = 12;
    c.patch = 2;
    c.chans = variant == 1 ? 3 : 1;
    c.mlp = 80;
    if (variant == 1) {
      c.wbits = 4;
      c.kinds = {"logsqrt2", "tanq"};
      c.attn_bits = {4, 4};
    }
    if (variant == 2) {  // DeiT's attention shapes: 197 tokens, head_dim 64, 8-bit uniform softmax codes
      c.dim = 128;
      c.heads = 2;
      c.image = 28;
      c.mlp = 128;
      c.kinds = {"uniform", "log2"};
      c.attn_bits = {8, 4};
    }
    const QuantModel m = make_model(c, 10 + variant);
    std::mt19937 rng(99);
    const int64_t n = 7;
    std::vector<uint8_t> imgs = rand_images(rng, n, c.image);
    std::vector<float> want;
    for (Isa isa : available_isas())
      for (int threads : {1, 2}) {
        Executor ex(m, isa, threads);
        for (int64_t batch : {1, 3, 7}) {
          std::vector<float> got(n * c.classes);
          for (int64_t i = 0; i < n; i += batch) {
            const int64_t b = std::min(batch, n - i);
            ex.run(imgs.data() + i * c.image * c.image, b, got.data() + i * c.classes);
          }
          if (want.empty()) want = got;
          EXPECT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * 4))
              << isa_name(isa) << " threads " << threads << " batch " << batch << " variant " << variant;
        }
        // Reusing the grown buffers with a smaller batch again.
        std::vector<float> again(c.classes);
        ex.run(imgs.data(), 1, again.data());
        EXPECT_EQ(0, std::memcmp(want.data(), again.data(), again.size() * 4));
      }
  }
}

// Once a batch size has been seen, run() allocates nothing (no per-head weight packing, no
// scratch growth), for every ISA and thread count, at that batch size and below.
TEST(Executor, NoAllocationAfterWarmUp) {
  Cfg c;
  c.dim = 64;
  c.heads = 2;
  c.image = 16;
  c.patch = 2;  // 65 tokens: partial GEMM panels, blocks and k-groups in the attention
  c.mlp = 96;
  const QuantModel m = make_model(c, 21);
  std::mt19937 rng(5);
  std::vector<uint8_t> imgs = rand_images(rng, 3, c.image);
  std::vector<float> logits(3 * c.classes);
  for (Isa isa : available_isas())
    for (int threads : {1, 2}) {
      Executor ex(m, isa, threads);
      ex.run(imgs.data(), 3, logits.data());
      const long before = test_new_calls();
      for (int64_t batch : {3, 1, 2}) ex.run(imgs.data(), batch, logits.data());
      EXPECT_EQ(before, test_new_calls()) << isa_name(isa) << " threads " << threads;
    }
}

TEST(Executor, RejectsBadArguments) {
  Cfg c;
  const QuantModel m = make_model(c, 5);
  EXPECT_THROW(Executor(m, Isa::Scalar, 0), UsageError);
  QuantModel bad = m;
  bad.blocks[1].fc1.bias.pop_back();
  EXPECT_THROW(Executor(bad, Isa::Scalar, 1), InputError);
  bad = m;
  bad.depth = 3;
  EXPECT_THROW(Executor(bad, Isa::Scalar, 1), InputError);
}

// ---- float row ops: vectorized builds vs the reference twin --------------------------------
TEST(VitRowOps, BitIdenticalAcrossIsas) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 3.f);
  const VitRowOps& ref = vit_row_ops_ref();
  std::vector<AttnCoder> coders;
  for (auto [k, b] : std::vector<std::pair<std::string, int>>{{"uniform", 8}, {"log2", 4}, {"logsqrt2", 4}, {"tanq", 4}, {"uniform", 3}})
    coders.push_back(make_attn_coder(make_attn(k, b, 1.0f)));
  for (Isa isa : available_isas()) {
    const VitRowOps& ops = vit_row_ops(isa);
    for (int n : {1, 7, 8, 17, 64, 197, 385}) {
      std::vector<float> x(n), w(n), b(n);
      for (int i = 0; i < n; ++i) {
        x[i] = nd(rng) + 2.0f;
        w[i] = 1.0f + 0.1f * nd(rng);
        b[i] = 0.1f * nd(rng);
      }
      if (n > 3) {
        x[1] = 0.0f;
        x[2] = -0.0f;
      }
      std::vector<uint8_t> o1(n), o2(n);
      for (QuantParams q : {QuantParams{10.0f, 128, 255}, QuantParams{2.0f, 3, 15}, QuantParams{1e6f, 0, 255}}) {
        ref.layernorm_quant(x.data(), n, w.data(), b.data(), 1e-6f, q, o1.data());
        ops.layernorm_quant(x.data(), n, w.data(), b.data(), 1e-6f, q, o2.data());
        EXPECT_EQ(o1, o2) << isa_name(isa) << " layernorm n=" << n;
        {  // two rows at once (the second row: x reversed and shifted) = two single rows
          std::vector<float> x1(x.rbegin(), x.rend());
          for (float& v : x1) v = v * 0.5f - 1.0f;
          std::vector<uint8_t> r0(n), r1(n), t0(n, 0xEE), t1(n, 0xEE);
          ref.layernorm_quant(x.data(), n, w.data(), b.data(), 1e-6f, q, r0.data());
          ref.layernorm_quant(x1.data(), n, w.data(), b.data(), 1e-6f, q, r1.data());
          ops.layernorm_quant2(x.data(), x1.data(), n, w.data(), b.data(), 1e-6f, q, t0.data(), t1.data());
          EXPECT_EQ(r0, t0) << isa_name(isa) << " layernorm2 row 0 n=" << n;
          EXPECT_EQ(r1, t1) << isa_name(isa) << " layernorm2 row 1 n=" << n;
        }
        ref.gelu_quant(x.data(), n, nullptr, q, o1.data());
        ops.gelu_quant(x.data(), n, nullptr, q, o2.data());
        EXPECT_EQ(o1, o2) << isa_name(isa) << " gelu n=" << n;
        ref.gelu_quant(x.data(), n, w.data(), q, o1.data());   // with a per-channel multiplier
        ops.gelu_quant(x.data(), n, w.data(), q, o2.data());
        EXPECT_EQ(o1, o2) << isa_name(isa) << " gelu with multiplier n=" << n;
        ref.quant_row(x.data(), n, q, o1.data());
        ops.quant_row(x.data(), n, q, o2.data());
        EXPECT_EQ(o1, o2) << isa_name(isa) << " quant n=" << n;
      }
      for (const AttnCoder& cd : coders) {
        const AttnCoder::View v = cd.view();
        std::vector<float> s1 = x, s2 = x;
        ref.softmax_levels(s1.data(), n, n, 1, 0.125f * n, &v, o1.data(), n);
        ops.softmax_levels(s2.data(), n, n, 1, 0.125f * n, &v, o2.data(), n);
        EXPECT_EQ(o1, o2) << isa_name(isa) << " softmax n=" << n;
        // Several rows in one call (strided, odd and even row counts) = each
        // row alone through the reference; the padding between rows is not written.
        for (int rows : {2, 3, 5}) {
          const int64_t lds = n + 3, ldo = n + 5;
          std::vector<float> sr(size_t(rows) * lds, 0.0f);
          for (int r = 0; r < rows; ++r)
            for (int j = 0; j < n; ++j) sr[size_t(r * lds + j)] = x[size_t((j + 7 * r) % n)] * float(1 + r) - float(r);
          if (rows == 5) sr[size_t(3 * lds + n / 2)] = std::nanf("");   // a NaN row among normal ones
          std::vector<float> sa = sr;
          std::vector<uint8_t> want(size_t(rows) * ldo, 0xEE), got(size_t(rows) * ldo, 0xEE);
          for (int r = 0; r < rows; ++r) ref.softmax_levels(sa.data() + r * lds, lds, n, 1, 0.125f * n, &v, want.data() + r * ldo, ldo);
          ops.softmax_levels(sr.data(), lds, n, rows, 0.125f * n, &v, got.data(), ldo);
          EXPECT_EQ(want, got) << isa_name(isa) << " softmax " << rows << " rows n=" << n;
        }
      }
      std::vector<float> e1(n), e2(n);
      ref.exp_row(x.data(), n, e1.data());
      ops.exp_row(x.data(), n, e2.data());
      EXPECT_EQ(0, std::memcmp(e1.data(), e2.data(), n * 4)) << isa_name(isa) << " exp";
      ref.gelu_row(x.data(), n, e1.data());
      ops.gelu_row(x.data(), n, e2.data());
      EXPECT_EQ(0, std::memcmp(e1.data(), e2.data(), n * 4)) << isa_name(isa) << " gelu";
    }
  }
}

// The hand-vectorized ops (Avx512Vnni: exp, GELU, softmax + codes) at the edges of their
// piecewise definitions, bit for bit against the reference twin: GELU's interval boundaries
// (the floats around each), exp's -87 / 88 clamps, NaN, infinities, +-0, denormals, huge values,
// and softmax rows holding NaN / -inf / all-equal scores, at lengths around the 16-lane tails.
TEST(VitRowOps, VectorTwinsBitIdenticalAtEdges) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> x = {0.0f, -0.0f, nan, -nan, inf, -inf, 1e-45f, -1e-45f, 1e-38f, 3.99f, 4.0f, -4.0f,
                          3.98999f, 4.00001f, 1e30f, -1e30f, 87.0f, 88.0f, 89.0f, -87.0f, -86.9999f, -87.0001f,
                          -88.0f, -100.0f, 5.0f, -5.0f, 2.8284271f, 0.70710678f, 65536.0f, -65536.0f};
  for (int i = 0; i <= 8; ++i) {
    const float b = 0.5f * float(i);
    for (float v : {b, std::nextafter(b, 10.0f), std::nextafter(b, -10.0f)}) {
      x.push_back(v);
      x.push_back(-v);
    }
  }
  // GELU's interval boundaries: the floats y around u = y * inv_w + 16 = k, k = 0..32.
  for (int k = 0; k <= 32; ++k) {
    const float b = float((k - 16) / 2.65165043);
    float lo = b, hi = b;
    x.push_back(b);
    for (int u = 0; u < 4; ++u) {
      lo = std::nextafter(lo, -100.0f), hi = std::nextafter(hi, 100.0f);
      x.push_back(lo), x.push_back(hi);
    }
  }
  std::mt19937 rng(17);
  std::normal_distribution<float> nd(0.f, 20.f);
  for (int i = 0; i < 3000; ++i) x.push_back(nd(rng));
  const int n = int(x.size());
  const VitRowOps& ref = vit_row_ops_ref();
  std::vector<AttnCoder> coders;
  for (auto [k, b] : std::vector<std::pair<std::string, int>>{
           {"uniform", 8}, {"log2", 4}, {"logsqrt2", 8}, {"tanq", 4}, {"tanq", 8}, {"uniform", 2}, {"log2", 2}, {"logsqrt2", 4}})
    coders.push_back(make_attn_coder(make_attn(k, b, 1.0f)));
  int direct = 0, general = 0;
  for (const AttnCoder& cd : coders) (cd.view().key_entry != nullptr ? direct : general) += 1;
  EXPECT_GT(direct, 0);
  std::printf("  coders: %d with per-key tables (steps <= 1), %d without\n", direct, general);
  for (Isa isa : available_isas()) {
    const VitRowOps& ops = vit_row_ops(isa);
    std::vector<float> e1(n), e2(n);
    ref.exp_row(x.data(), n, e1.data());
    ops.exp_row(x.data(), n, e2.data());
    EXPECT_EQ(0, std::memcmp(e1.data(), e2.data(), size_t(n) * 4)) << isa_name(isa) << " exp";
    ref.gelu_row(x.data(), n, e1.data());
    ops.gelu_row(x.data(), n, e2.data());
    EXPECT_EQ(0, std::memcmp(e1.data(), e2.data(), size_t(n) * 4)) << isa_name(isa) << " gelu";
    std::vector<uint8_t> o1(n), o2(n);
    for (QuantParams q : {QuantParams{4.0f, 10, 255}, QuantParams{0.7f, 3, 15}, QuantParams{1e6f, 128, 255}}) {
      for (int len : {n, 1, 15, 16, 17, 33}) {
        std::fill(o2.begin(), o2.end(), 0xEE);
        std::fill(o1.begin(), o1.end(), 0xEE);
        ref.gelu_quant(x.data(), len, nullptr, q, o1.data());
        ops.gelu_quant(x.data(), len, nullptr, q, o2.data());
        EXPECT_EQ(o1, o2) << isa_name(isa) << " gelu len " << len;
        ref.gelu_quant(x.data(), len, e1.data(), q, o1.data());   // exp values as multipliers
        ops.gelu_quant(x.data(), len, e1.data(), q, o2.data());
        EXPECT_EQ(o1, o2) << isa_name(isa) << " gelu with multiplier len " << len;
        // LayerNorm, two rows (the special values, then the random tail as a second row):
        // NaN / inf rows included; each equals the reference on its own.
        const float* xb = x.data() + (n - len);
        std::vector<uint8_t> r1(len), t0(len, 0xEE), t1(len, 0xEE);
        ref.layernorm_quant(x.data(), len, e1.data(), e2.data(), 1e-6f, q, o1.data());
        ref.layernorm_quant(xb, len, e1.data(), e2.data(), 1e-6f, q, r1.data());
        ops.layernorm_quant2(x.data(), xb, len, e1.data(), e2.data(), 1e-6f, q, t0.data(), t1.data());
        EXPECT_TRUE(std::equal(t0.begin(), t0.end(), o1.begin())) << isa_name(isa) << " layernorm2 row 0 len " << len;
        EXPECT_EQ(r1, t1) << isa_name(isa) << " layernorm2 row 1 len " << len;
      }
    }
    // Softmax rows: random scores, with NaN / -inf / huge entries, all equal, tails 1..48.
    // Each coder through its own view and through the general path (no per-key tables).
    std::vector<AttnCoder::View> views;
    for (const AttnCoder& cd : coders) {
      views.push_back(cd.view());
      views.push_back(cd.view());
      views.back().key_entry = nullptr;
      if (cd.affine_k != 0.0f) {   // the table paths of a uniform grid, too
        views.push_back(cd.view());
        views.back().affine_k = 0.0f;
      }
    }
    for (const AttnCoder::View& v : views) {
      for (int len : {1, 2, 15, 16, 17, 31, 32, 33, 48, 197}) {
        for (int kind = 0; kind < 5; ++kind) {
          std::vector<float> row(len);
          for (int j = 0; j < len; ++j) row[j] = nd(rng) * 4.0f;
          if (kind == 1) row[len / 2] = nan;
          if (kind == 2) row[0] = -inf;
          if (kind == 3) std::fill(row.begin(), row.end(), 3.0f);
          if (kind == 4) row[len - 1] = 1e30f;
          std::vector<float> s1 = row, s2 = row;
          std::vector<uint8_t> l1(len + 1, 0xEE), l2(len + 1, 0xEE);
          ref.softmax_levels(s1.data(), len, len, 1, 0.125f, &v, l1.data(), len);
          ops.softmax_levels(s2.data(), len, len, 1, 0.125f, &v, l2.data(), len);
          EXPECT_EQ(l1, l2) << isa_name(isa) << " softmax len " << len << " kind " << kind;
        }
      }
    }
  }
}

// VitRowOps::map_bytes (non-uniform levels): every ISA's version equals the scalar twin on
// random tables, every length around the 64-byte vector, and at unaligned starts.
TEST(VitRowOps, MapBytesBitIdenticalAcrossIsas) {
  std::mt19937 rng(77);
  std::uniform_int_distribution<int> byte(0, 255);
  const VitRowOps& ref = vit_row_ops_ref();
  for (Isa isa : available_isas()) {
    const VitRowOps& ops = vit_row_ops(isa);
    for (int trial = 0; trial < 4; ++trial) {
      std::vector<uint8_t> table(256);
      for (uint8_t& t : table) t = uint8_t(byte(rng));
      for (int64_t n : {0, 1, 5, 31, 32, 33, 63, 64, 65, 127, 128, 129, 200, 1000, 1543}) {
        std::vector<uint8_t> buf(size_t(n) + 3);
        for (uint8_t& b : buf) b = uint8_t(byte(rng));
        std::vector<uint8_t> want = buf, got = buf;
        ref.map_bytes(want.data() + 3, n, table.data());
        ops.map_bytes(got.data() + 3, n, table.data());
        ASSERT_EQ(got, want) << isa_name(isa) << " n " << n;
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(want[size_t(i) + 3], table[buf[size_t(i) + 3]]);
      }
    }
  }
}

// layernorm_row and ef_quant_rows: every ISA build equals the reference twin bit for bit, and
// ef_quant_rows (blocked, several rows interleaved) equals the one-row definition written out
// literally here (random gains, with and without a level table, NaN / inf / huge inputs);
// layernorm_row is the value layernorm_quant quantizes.
TEST(VitRowOps, ErrorFeedbackBitIdenticalAcrossIsas) {
  std::mt19937 rng(78);
  std::normal_distribution<float> nd(0.f, 2.f);
  const VitRowOps& ref = vit_row_ops_ref();
  std::vector<uint8_t> lut(256);
  for (int c = 0; c < 256; ++c) lut[size_t(c)] = uint8_t(c & ~7);   // non-decreasing levels
  for (Isa isa : available_isas()) {
    const VitRowOps& ops = vit_row_ops(isa);
    for (int n : {1, 7, 16, 33, 128, 385}) {
      std::vector<float> x(static_cast<size_t>(n)), w(static_cast<size_t>(n)), b(static_cast<size_t>(n)), g(size_t(n) * size_t(n));
      for (int i = 0; i < n; ++i) x[size_t(i)] = nd(rng), w[size_t(i)] = 1.0f + 0.1f * nd(rng), b[size_t(i)] = 0.1f * nd(rng);
      for (float& v : g) v = 0.3f * nd(rng);
      if (n > 5) {
        x[1] = std::nanf("");
        x[2] = INFINITY;
        x[3] = -1e30f;
      }
      std::vector<float> y1(static_cast<size_t>(n)), y2(static_cast<size_t>(n));
      ref.layernorm_row(x.data() + (n > 5 ? 4 : 0), n > 5 ? n - 4 : n, w.data(), b.data(), 1e-6f, y1.data());
      ops.layernorm_row(x.data() + (n > 5 ? 4 : 0), n > 5 ? n - 4 : n, w.data(), b.data(), 1e-6f, y2.data());
      EXPECT_EQ(0, std::memcmp(y1.data(), y2.data(), y1.size() * 4)) << isa_name(isa) << " layernorm_row n=" << n;
      const QuantParams q{3.0f, 7, 15};
      if (n > 5) {
        std::vector<uint8_t> want(size_t(n - 4)), got(size_t(n - 4));
        ref.layernorm_quant(x.data() + 4, n - 4, w.data(), b.data(), 1e-6f, q, want.data());
        ref.quant_row(y1.data(), n - 4, q, got.data());
        EXPECT_EQ(want, got) << "layernorm_row is layernorm_quant's value, n=" << n;
      }
      const uint8_t* lut_ptr = lut.data();
      for (const uint8_t* l : {static_cast<const uint8_t*>(nullptr), lut_ptr}) {
        const QuantParams qe = l ? QuantParams{3.0f, 128, 255} : q;
        for (int rows : {1, 3, 6, 16, 27, 40}) {
          // Row r: x scaled by (1 + r/4), rows n + 3 apart (the padding is not written).
          const int64_t ld = n + 3;
          std::vector<float> t0(size_t(rows * ld), 7.0f);
          for (int r = 0; r < rows; ++r)
            for (int j = 0; j < n; ++j) t0[size_t(r * ld + j)] = x[size_t(j)] * (1.0f + 0.25f * float(r));
          // The definition, literally (vit_ops.h): one row at a time, updates in order.
          std::vector<uint8_t> want(size_t(rows * ld), 0xEE);
          for (int r = 0; r < rows; ++r) {
            std::vector<float> t(static_cast<size_t>(n));
            for (int j = 0; j < n; ++j) {
              const float v = t0[size_t(r * ld + j)] * qe.inv_scale;
              t[size_t(j)] = std::isnan(v) ? -65536.0f : std::min(std::max(v, -65536.0f), 65536.0f);
            }
            for (int i = 0; i < n; ++i) {
              const float ti = std::min(std::max(t[size_t(i)], -65536.0f), 65536.0f);
              int c = std::min(std::max(int(std::nearbyint(ti)) + qe.zero, 0), qe.qmax);
              if (l) c = l[c];
              want[size_t(r * ld + i)] = uint8_t(c);
              const float e = ti - float(c - qe.zero);
              for (int j = i + 1; j < n; ++j) t[size_t(j)] = t[size_t(j)] - e * g[size_t(i * n + j)];
            }
          }
          for (const VitRowOps* o : {&ref, &ops}) {
            std::vector<float> t = t0;
            std::vector<uint8_t> got(size_t(rows * ld), 0xEE);
            o->ef_quant_rows(t.data(), ld, rows, n, g.data(), qe, l, got.data(), ld);
            EXPECT_EQ(want, got) << o->name << " ef_quant_rows n=" << n << " rows=" << rows << (l ? " lut" : "");
          }
          if (l) {
            for (int r = 0; r < rows; ++r)
              for (int j = 0; j < n; ++j) EXPECT_EQ(want[size_t(r * ld + j)] & 7, 0);
          }
        }
      }
    }
  }
}

TEST(VitRowOps, QuantizeMatchesActQuant) {
  std::mt19937 rng(8);
  std::uniform_real_distribution<float> ud(-300.f, 300.f);
  std::vector<float> x;
  for (int i = 0; i < 5000; ++i) x.push_back(ud(rng));
  for (float v : {0.5f, 1.5f, 2.5f, -0.5f, -1.5f, 127.5f, 128.5f, -0.0f, 1e30f, -1e30f,
                  std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                  std::numeric_limits<float>::quiet_NaN()})
    x.push_back(v);
  for (ActQuant a : {ActQuant{8, 1.0f, 128, {}}, ActQuant{4, 0.5f, 7, {}}, ActQuant{8, 0.37f, 0, {}}, ActQuant{2, 100.f, 1, {}}}) {
    for (Isa isa : available_isas()) {
      std::vector<uint8_t> out(x.size());
      vit_row_ops(isa).quant_row(x.data(), int(x.size()), quant_params(a), out.data());
      for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(a.quantize(x[i]), out[i]) << x[i] << " " << isa_name(isa);
    }
  }
}

TEST(VitRowOps, ExpAndGeluAccuracy) {
  const VitRowOps& ops = vit_row_ops_ref();
  std::vector<float> x;
  for (float v = -90.0f; v <= 0.0f; v += 0.00731f) x.push_back(v);
  std::vector<float> e(x.size());
  ops.exp_row(x.data(), int(x.size()), e.data());
  for (size_t i = 0; i < x.size(); ++i) {
    const double want = std::exp(double(x[i]));
    if (x[i] < -87.0f) {
      EXPECT_EQ(e[i], 0.0f);
    } else {
      EXPECT_NEAR(e[i], want, want * 4e-7) << x[i];
    }
  }
  // GELU: within 2e-7 * max(1, |y|) + 1e-7 of y * Phi(y) (vit_ops_impl.h: 5.2e-7 at most on
  // [-7, 7]); exactly y above 4 sqrt(2) and exactly 0 below -4 sqrt(2).
  x.clear();
  for (float v = -9.0f; v <= 9.0f; v += 0.000913f) x.push_back(v);
  e.resize(x.size());
  ops.gelu_row(x.data(), int(x.size()), e.data());
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double y = x[i], want = 0.5 * y * (1.0 + std::erf(y / std::sqrt(2.0)));
    EXPECT_NEAR(e[i], want, 2e-7 * std::max(1.0, std::fabs(y)) + 1e-7) << x[i];
    worst = std::max(worst, std::fabs(e[i] - want));
    if (y >= 5.6569f) {
      EXPECT_EQ(e[i], x[i]) << x[i];
    }
    if (y < -5.6569f) {
      EXPECT_EQ(e[i], 0.0f) << x[i];
    }
  }
  std::printf("  GELU polynomial: max |error| %.3g on [-9, 9]\n", worst);
  float special[3] = {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::infinity(), 0.0f};
  float out[3];
  ops.exp_row(special, 3, out);
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_EQ(out[1], 0.0f);
  EXPECT_EQ(out[2], 1.0f);
  ops.gelu_row(special, 3, out);
  EXPECT_TRUE(std::isnan(out[0]));   // GELU(NaN) = NaN
  EXPECT_TRUE(std::isnan(out[1]));   // -inf * 0, as torch's erf form gives
  EXPECT_EQ(out[2], 0.0f);
}

TEST(VitRowOps, CoderEqualsAttnQuantCode) {
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> ud(0.f, 1.2f);
  for (auto [k, b] : std::vector<std::pair<std::string, int>>{{"uniform", 8}, {"uniform", 2}, {"log2", 4}, {"log2", 6}, {"logsqrt2", 4},
                                                               {"logsqrt2", 8}, {"tanq", 4}, {"tanq", 8}}) {
    const AttnQuant q = make_attn(k, b, k == "tanq" ? 0.8f : 1.0f);
    const AttnCoder cd = make_attn_coder(q);
    std::vector<float> a;
    for (int i = 0; i < 20000; ++i) a.push_back(ud(rng) * (i % 2 ? 1.0f : std::pow(2.0f, -float(i % 40))));
    for (float t : q.thresholds) {
      a.push_back(t);
      a.push_back(std::nextafter(t, 2.0f));
      a.push_back(std::nextafter(t, -1.0f));
    }
    for (float v : {0.0f, -0.0f, 1.0f, -1.0f, 1e-40f, 3.0f, std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(),
                    -std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::denorm_min()})
      a.push_back(v);
    const AttnCoder::View v = cd.view();
    for (Isa isa : available_isas()) {
      std::vector<uint8_t> out(a.size());
      vit_row_ops(isa).codes_row(a.data(), int(a.size()), &v, out.data());
      for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(q.code(a[i]), out[i]) << k << b << " a=" << a[i] << " " << isa_name(isa);
    }
    EXPECT_LE(cd.steps, 2) << k << b;
  }
}

// The arithmetic path of a uniform grid (AttnCoder::affine_k): taken for the 8-bit uniform
// quantizers quant/ makes, at any clip scale, and exact against AttnQuant::code at every
// threshold and its float neighbours (where the path must hand over to the tables), at the
// ends of the grid, for NaN / infinities / negatives; refused when one threshold is moved by a
// tenth of the spacing, or when the levels are not affine in the code.
TEST(VitRowOps, AffineCoderEqualsAttnQuantCode) {
  std::mt19937 rng(10);
  std::uniform_real_distribution<float> ud(0.f, 1.0f);
  for (float s : {1.0f, 0.37f, 0.0123f, 0.9999f}) {
    AttnQuant q = make_attn("uniform", 8, s);
    for (int variant = 0; variant < 3; ++variant) {
      if (variant == 1) q.thresholds[100] = 0.9f * q.thresholds[100] + 0.1f * q.thresholds[101];   // off the grid
      if (variant == 2) q = make_attn("uniform", 8, s), q.lut[7] = uint8_t(q.lut[7] - 1);          // levels not affine
      const AttnCoder cd = make_attn_coder(q);
      if (variant == 0) {
        ASSERT_NE(cd.affine_k, 0.0f) << "s=" << s;
      } else {
        EXPECT_EQ(cd.affine_k, 0.0f) << "s=" << s << " variant " << variant;
      }
      std::vector<float> a;
      for (int i = 0; i < 20000; ++i) a.push_back(ud(rng) * s * 1.1f);
      for (float t : q.thresholds) {
        float lo = t, hi = t;
        a.push_back(t);
        for (int u = 0; u < 3; ++u) {
          lo = std::nextafter(lo, -1.0f), hi = std::nextafter(hi, 2.0f);
          a.push_back(lo), a.push_back(hi);
        }
        a.push_back(t * (1.0f + 2.0f * AttnCoder::kAffineEta / 255.0f));   // just outside the band
        a.push_back(t * (1.0f - 2.0f * AttnCoder::kAffineEta / 255.0f));
      }
      for (float v : {0.0f, -0.0f, s, std::nextafter(s, 2.0f), 2.0f * s, 1.0f, -1.0f, 1e-40f, 1e30f, 3.0f,
                      std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                      std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::quiet_NaN()})
        a.push_back(v);
      const AttnCoder::View v = cd.view();
      for (Isa isa : available_isas()) {
        std::vector<uint8_t> out(a.size());
        vit_row_ops(isa).codes_row(a.data(), int(a.size()), &v, out.data());
        for (size_t i = 0; i < a.size(); ++i)
          ASSERT_EQ(q.code(a[i]), out[i]) << "s=" << s << " variant " << variant << " a=" << a[i] << " " << isa_name(isa);
      }
    }
  }
}

// ---- (c) file round trip ------------------------------------------------------------------
namespace {

std::string tmp_path(const std::string& name) {
  return ::testing::TempDir() + "reparq_exec_" + name + ".safetensors";
}

void expect_linear_eq(const QLinear& a, const QLinear& b) {
  EXPECT_EQ(a.out, b.out);
  EXPECT_EQ(a.in, b.in);
  EXPECT_EQ(a.wbits, b.wbits);
  EXPECT_EQ(a.w, b.w);
  EXPECT_EQ(a.w_zero, b.w_zero);
  EXPECT_EQ(a.w_scale, b.w_scale);
  EXPECT_EQ(a.bias, b.bias);
  EXPECT_EQ(a.input.bits, b.input.bits);
  EXPECT_EQ(a.input.zero, b.input.zero);
  EXPECT_EQ(a.input.scale, b.input.scale);
}

}  // namespace

TEST(QuantModelFile, RoundTrip) {
  for (int wbits : {8, 4, 3}) {
    Cfg c;
    c.wbits = wbits;
    c.dim = 34;  // odd K/2 patterns for the int4 nibbles: in = 17 * 2, patch 4*4 = 16 ...
    c.heads = 2;
    c.mlp = 51;  // odd K for fc2
    const QuantModel m = make_model(c, 20 + wbits);
    const std::string path = tmp_path("roundtrip" + std::to_string(wbits));
    save_quant_model(m, path);
    EXPECT_TRUE(is_quant_model_file(path));
    const QuantModel r = load_quant_model(path);
    EXPECT_EQ(r.image_size, m.image_size);
    EXPECT_EQ(r.patch, m.patch);
    EXPECT_EQ(r.in_chans, m.in_chans);
    EXPECT_EQ(r.dim, m.dim);
    EXPECT_EQ(r.depth, m.depth);
    EXPECT_EQ(r.heads, m.heads);
    EXPECT_EQ(r.mlp_hidden, m.mlp_hidden);
    EXPECT_EQ(r.num_classes, m.num_classes);
    EXPECT_EQ(r.ln_eps, m.ln_eps);
    EXPECT_EQ(r.mean, m.mean);
    EXPECT_EQ(r.std, m.std);
    EXPECT_EQ(r.arch, m.arch);
    EXPECT_EQ(r.metadata.at("recipe"), m.metadata.at("recipe"));
    expect_linear_eq(r.patch_embed, m.patch_embed);
    EXPECT_EQ(r.cls_token, m.cls_token);
    EXPECT_EQ(r.pos_embed, m.pos_embed);
    ASSERT_EQ(r.blocks.size(), m.blocks.size());
    for (size_t i = 0; i < m.blocks.size(); ++i) {
      const QBlock &a = r.blocks[i], &b = m.blocks[i];
      EXPECT_EQ(a.ln1_w, b.ln1_w);
      EXPECT_EQ(a.ln1_b, b.ln1_b);
      EXPECT_EQ(a.ln2_w, b.ln2_w);
      EXPECT_EQ(a.ln2_b, b.ln2_b);
      expect_linear_eq(a.qkv, b.qkv);
      expect_linear_eq(a.proj, b.proj);
      expect_linear_eq(a.fc1, b.fc1);
      expect_linear_eq(a.fc2, b.fc2);
      for (auto [x, y] : {std::pair{&a.q, &b.q}, {&a.k, &b.k}, {&a.v, &b.v}}) {
        EXPECT_EQ(x->bits, y->bits);
        EXPECT_EQ(x->zero, y->zero);
        EXPECT_EQ(x->scale, y->scale);
      }
      EXPECT_EQ(a.attn.kind, b.attn.kind);
      EXPECT_EQ(a.attn.bits, b.attn.bits);
      EXPECT_EQ(a.attn.scale, b.attn.scale);
      EXPECT_EQ(a.attn.param, b.attn.param);
      EXPECT_EQ(a.attn.thresholds, b.attn.thresholds);
      EXPECT_EQ(a.attn.lut, b.attn.lut);
      EXPECT_EQ(a.attn.lut_scale, b.attn.lut_scale);
    }
    EXPECT_EQ(r.norm_w, m.norm_w);
    EXPECT_EQ(r.norm_b, m.norm_b);
    expect_linear_eq(r.head, m.head);
    // Same logits from the loaded model.
    std::mt19937 rng(1);
    std::vector<uint8_t> img = rand_images(rng, 2, c.image);
    std::vector<float> l1(2 * c.classes), l2(2 * c.classes);
    Executor(m, best_isa(), 1).run(img.data(), 2, l1.data());
    Executor(r, best_isa(), 1).run(img.data(), 2, l2.data());
    EXPECT_EQ(l1, l2);
    std::remove(path.c_str());
  }
}

// ---- (d) the loader's rejections ----------------------------------------------------------
namespace {

// Copies `src` to `dst` through SafeTensorsWriter, letting `edit` change each tensor (return
// false to drop it) and `meta` change the metadata.
struct Tensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};
void rewrite(const std::string& src, const std::string& dst, const std::function<bool(Tensor&)>& edit,
             const std::function<void(std::map<std::string, std::string>&)>& meta = nullptr) {
  SafeTensorsFile f = SafeTensorsFile::open(src);
  SafeTensorsWriter w;
  for (const TensorView& v : f.tensors()) {
    Tensor t{v.name, v.dtype, v.shape, std::vector<uint8_t>(v.data, v.data + v.nbytes)};
    if (!edit(t)) continue;
    w.add(t.name, t.dtype, t.shape, t.bytes.data(), t.bytes.size());
  }
  std::map<std::string, std::string> md = f.metadata();
  if (meta) meta(md);
  for (const auto& [k, v] : md) w.set_metadata(k, v);
  w.write(dst);
}

template <class T>
void set_elem(Tensor& t, size_t i, T v) {
  std::memcpy(t.bytes.data() + i * sizeof(T), &v, sizeof(T));
}

void expect_rejected(const std::string& path, const std::string& what) {
  try {
    load_quant_model(path);
    ADD_FAILURE() << "accepted: expected an error mentioning '" << what << "'";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find(what), std::string::npos) << msg;
  }
  std::remove(path.c_str());
}

// `good` rewritten as `bad` with its format metadata set to the older `older`: refused, naming
// the version its tensors need.
void expect_needs_format(const std::string& good, const std::string& bad, const std::string& older,
                         const std::string& needed) {
  rewrite(good, bad, [](Tensor&) { return true; }, [&](std::map<std::string, std::string>& md) { md["format"] = older; });
  expect_rejected(bad, "needs format " + needed);
}

// `good` rewritten as `bad` with element i of `tensor` set to v: refused, naming the tensor.
template <class T>
void expect_element_rejected(const std::string& good, const std::string& bad, const std::string& tensor, size_t i, T v) {
  rewrite(good, bad, [&](Tensor& t) {
    if (t.name == tensor) set_elem(t, i, v);
    return true;
  });
  expect_rejected(bad, tensor);
}

// The executor gives `a` and `b` (a model and its saved-and-loaded copy) the same logits.
void expect_same_executor_logits(const QuantModel& a, const QuantModel& b, const Cfg& c, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> imgs = rand_images(rng, 2, c.image);
  std::vector<float> x(2 * c.classes), y(2 * c.classes);
  Executor(a, Isa::Scalar, 1).run(imgs.data(), 2, x.data());
  Executor(b, Isa::Scalar, 1).run(imgs.data(), 2, y.data());
  EXPECT_EQ(x, y);
}

// m written to `path`, whose format metadata must be `format` (`why` says why), and read back.
QuantModel save_and_load(const QuantModel& m, const std::string& path, const char* format, const char* why) {
  save_quant_model(m, path);
  EXPECT_EQ(SafeTensorsFile::open(path).meta_str("format", ""), format) << why;
  return load_quant_model(path);
}

}  // namespace

TEST(QuantModelFile, GeluMultiplierRoundTripAndRejections) {
  Cfg c;
  c.gelu_mul = true;
  const QuantModel m = make_model(c, 32);
  const std::string good = tmp_path("gmul"), bad = tmp_path("gmul_bad");
  const QuantModel l = save_and_load(m, good, "reparq-quant-2", "a file with the multiplier is version 2");
  for (size_t i = 0; i < m.blocks.size(); ++i) {
    ASSERT_EQ(l.blocks[i].fc2_in_mul.size(), size_t(c.mlp));
    EXPECT_EQ(l.blocks[i].fc2_in_mul, m.blocks[i].fc2_in_mul);
  }
  for (float v : {std::numeric_limits<float>::quiet_NaN(), -1.0f, 0.0f, std::numeric_limits<float>::infinity()}) {
    rewrite(good, bad, [v](Tensor& t) {
      if (t.name == "blocks.1.mlp.fc2.input_mul") set_elem(t, 3, v);
      return true;
    });
    expect_rejected(bad, "blocks.1.mlp.fc2.input_mul");
  }
  rewrite(good, bad, [](Tensor& t) {
    if (t.name == "blocks.0.mlp.fc2.input_mul") t.dtype = DType::I32;
    return true;
  });
  expect_rejected(bad, "dtype");
  // The multiplier in a version-1 file: refused (an old reader would ignore it).
  rewrite(good, bad, [](Tensor&) { return true; }, [](std::map<std::string, std::string>& md) { md["format"] = "reparq-quant-1"; });
  expect_rejected(bad, "needs format reparq-quant-2");
  std::remove(good.c_str());
  std::remove(bad.c_str());
}

TEST(QuantModelFile, LevelsRoundTripAndRejections) {
  Cfg c;
  c.levels = true;
  const QuantModel m = make_model(c, 33);
  const std::string good = tmp_path("levels"), bad = tmp_path("levels_bad");
  const QuantModel l = save_and_load(m, good, "reparq-quant-3", "a file with level tables is version 3");
  EXPECT_EQ(l.blocks[1].fc2.input.lut, m.blocks[1].fc2.input.lut);
  EXPECT_EQ(l.blocks[0].k.lut, m.blocks[0].k.lut);
  EXPECT_EQ(l.head.input.lut, m.head.input.lut);
  ASSERT_EQ(l.blocks[0].q.lut.size(), 256u);
  rewrite(good, bad, [](Tensor& t) {
    if (t.name == "blocks.1.attn.v.lut") std::swap(t.bytes[3], t.bytes[250]);
    return true;
  });
  expect_rejected(bad, "blocks.1.attn.v.lut' must be non-decreasing");
  rewrite(good, bad, [](Tensor& t) { return t.name != "blocks.0.mlp.fc1.input.lut" || (t.shape = {255}, t.bytes.pop_back(), true); });
  expect_rejected(bad, "blocks.0.mlp.fc1.input.lut");
  // Tables in a version-1 file: refused (an old reader would ignore them).
  rewrite(good, bad, [](Tensor&) { return true; }, [](std::map<std::string, std::string>& md) { md["format"] = "reparq-quant-1"; });
  expect_rejected(bad, "needs format reparq-quant-3");
  std::remove(good.c_str());
  std::remove(bad.c_str());
}

TEST(QuantModelFile, ClassTokenQuantizersRoundTripAndRejections) {
  Cfg c;
  c.cls_bits = 8;
  const QuantModel m = make_model(c, 34);
  const std::string good = tmp_path("cls"), bad = tmp_path("cls_bad");
  const QuantModel l = save_and_load(m, good, "reparq-quant-4", "a file with class-token quantizers is version 4");
  for (size_t i = 0; i < m.blocks.size(); ++i) {
    ASSERT_TRUE(l.blocks[i].cls.has_value());
    const ClsQuant &x = *l.blocks[i].cls, &y = *m.blocks[i].cls;
    const auto xs = x.sites(), ys = y.sites();
    for (int j = 0; j < 7; ++j) {
      EXPECT_EQ(xs[j]->scale, ys[j]->scale) << i << " " << j;
      EXPECT_EQ(xs[j]->zero, ys[j]->zero) << i << " " << j;
      EXPECT_EQ(xs[j]->bits, ys[j]->bits) << i << " " << j;
    }
  }
  // One site missing, in one block only, in a version-3 file, or with a bad zero point: refused.
  rewrite(good, bad, [](Tensor& t) { return t.name.rfind("blocks.1.cls.softmax.", 0) != 0; });
  expect_rejected(bad, "blocks.1.cls.softmax");
  rewrite(good, bad, [](Tensor& t) { return t.name.rfind("blocks.1.cls.", 0) != 0; });
  expect_rejected(bad, "in every block or in none");
  rewrite(good, bad, [](Tensor&) { return true; }, [](std::map<std::string, std::string>& md) { md["format"] = "reparq-quant-3"; });
  expect_rejected(bad, "needs format reparq-quant-4");
  rewrite(good, bad, [](Tensor& t) {
    if (t.name == "blocks.0.cls.q.zero_bits") set_elem(t, 0, 300);
    return true;
  });
  expect_rejected(bad, "blocks.0.cls.q");
  std::remove(good.c_str());
  std::remove(bad.c_str());
}

TEST(QuantModelFile, ColumnShiftsRoundTripAndRejections) {
  Cfg c;
  c.wbits = 3;
  c.abits = 4;
  c.col_shift = true;
  const QuantModel m = make_model(c, 44);
  const std::string good = tmp_path("shift"), bad = tmp_path("shift_bad");
  const QuantModel l = save_and_load(m, good, "reparq-quant-6", "a file with weight column shifts is version 6");
  EXPECT_EQ(l.head.w_shift, m.head.w_shift);
  EXPECT_EQ(l.patch_embed.w_shift, m.patch_embed.w_shift);
  for (size_t i = 0; i < m.blocks.size(); ++i) {
    EXPECT_EQ(l.blocks[i].qkv.w_shift, m.blocks[i].qkv.w_shift);
    EXPECT_EQ(l.blocks[i].fc2.w_shift, m.blocks[i].fc2.w_shift);
  }
  expect_same_executor_logits(m, l, c, 45);
  // In a version-5 file, a shift above max_col_shift(3) = 4: refused.
  expect_needs_format(good, bad, "reparq-quant-5", "reparq-quant-6");
  expect_element_rejected(good, bad, "blocks.1.mlp.fc1.weight_shift", 2, uint8_t(5));
  // On 8-bit weights: refused, even with every shift 0.
  const std::string w8 = tmp_path("shift_w8");
  Cfg c8;
  QuantModel m8 = make_model(c8, 44);
  m8.blocks[0].fc1.w_shift.assign(size_t(m8.blocks[0].fc1.in), 0);
  save_quant_model(m8, w8);
  expect_rejected(w8, "needs weights of at most 7 bits");
  std::remove(w8.c_str());
  std::remove(good.c_str());
  std::remove(bad.c_str());
}

TEST(QuantModelFile, DynamicClassRowRoundTripAndRejections) {
  Cfg c;
  c.wbits = 4;
  c.abits = 4;
  c.cls_dynamic = true;
  QuantModel m = make_model(c, 52);
  m.blocks[0].attn_cls_dynamic = false;   // per block
  const std::string good = tmp_path("cdyn"), bad = tmp_path("cdyn_bad");
  const QuantModel l = save_and_load(m, good, "reparq-quant-7", "a file with a dynamic class-row scale is version 7");
  EXPECT_FALSE(l.blocks[0].attn_cls_dynamic);
  EXPECT_TRUE(l.blocks[1].attn_cls_dynamic);
  expect_same_executor_logits(m, l, c, 53);
  // In a version-6 file, or any value but 1: refused.
  expect_needs_format(good, bad, "reparq-quant-6", "reparq-quant-7");
  expect_element_rejected(good, bad, "blocks.1.attn.softmax.cls_dynamic", 0, int32_t(2));
  // With class-token quantizers in the same block: refused by the writer and by the reader.
  Cfg cc = c;
  cc.cls_bits = 8;
  const QuantModel mc = make_model(cc, 54);
  EXPECT_THROW(save_quant_model(mc, bad), Error);
  QuantModel mc_ok = mc;
  for (QBlock& q : mc_ok.blocks) q.attn_cls_dynamic = false;
  save_quant_model(mc_ok, good);
  rewrite(good, bad, [](Tensor&) { return true; }, [](std::map<std::string, std::string>& md) { md["format"] = "reparq-quant-7"; });
  {
    SafeTensorsFile f = SafeTensorsFile::open(bad);
    SafeTensorsWriter w;
    for (const TensorView& v : f.tensors()) w.add(v.name, v.dtype, v.shape, v.data, v.nbytes);
    const int32_t one = 1;
    w.add("blocks.0.attn.softmax.cls_dynamic", DType::I32, {1}, &one, 4);
    for (const auto& [k, v] : f.metadata()) w.set_metadata(k, v);
    w.write(good);
  }
  expect_rejected(good, "cannot go with class-token quantizers");
  std::remove(good.c_str());
  std::remove(bad.c_str());
}

TEST(QuantModelFile, ErrorFeedbackBlocksRoundTripAndRejections) {
  Cfg c;
  c.wbits = 4;
  c.abits = 4;
  c.ef = true;
  c.ef_block = 12;
  const QuantModel m = make_model(c, 49);
  const std::string good = tmp_path("efb"), bad = tmp_path("efb_bad");
  const QuantModel l = save_and_load(m, good, "reparq-quant-6", "a file with error-feedback blocks is version 6");
  for (size_t i = 0; i < m.blocks.size(); ++i) EXPECT_EQ(l.blocks[i].fc2.ef_block, 12);
  EXPECT_EQ(l.head.ef_block, 0);
  expect_same_executor_logits(m, l, c, 50);
  // In a version-5 file, 0, larger than the Linear's input, or without ef_damp: refused.
  expect_needs_format(good, bad, "reparq-quant-5", "reparq-quant-6");
  expect_element_rejected(good, bad, "blocks.1.mlp.fc1.input.ef_block", 0, int32_t(0));
  expect_element_rejected(good, bad, "blocks.0.attn.proj.input.ef_block", 0, int32_t(33));
  rewrite(good, bad, [](Tensor& t) { return t.name != "blocks.0.mlp.fc2.input.ef_damp"; });
  expect_rejected(bad, "needs 'blocks.0.mlp.fc2.input.ef_damp'");
  std::remove(good.c_str());
  std::remove(bad.c_str());
}

TEST(QuantModelFile, ErrorFeedbackRoundTripAndRejections) {
  Cfg c;
  c.wbits = 4;
  c.abits = 4;
  c.ef = true;
  const QuantModel m = make_model(c, 35);
  const std::string good = tmp_path("ef"), bad = tmp_path("ef_bad");
  const QuantModel l = save_and_load(m, good, "reparq-quant-5", "a file with error feedback is version 5");
  for (size_t i = 0; i < m.blocks.size(); ++i) {
    EXPECT_EQ(l.blocks[i].qkv.ef_damp, 0.01f);
    EXPECT_EQ(l.blocks[i].proj.ef_damp, 0.01f);
    EXPECT_EQ(l.blocks[i].fc1.ef_damp, 0.01f);
    EXPECT_EQ(l.blocks[i].fc2.ef_damp, 0.01f);
  }
  EXPECT_EQ(l.head.ef_damp, 0.0f);
  expect_same_executor_logits(m, l, c, 36);   // same logits from the loaded file
  // In a version-4 file, a damping <= 0 or NaN, or at the head: refused.
  expect_needs_format(good, bad, "reparq-quant-4", "reparq-quant-5");
  expect_element_rejected(good, bad, "blocks.1.mlp.fc1.input.ef_damp", 0, -0.5f);
  expect_element_rejected(good, bad, "blocks.0.attn.proj.input.ef_damp", 0, std::nanf(""));
  rewrite(good, bad, [](Tensor& t) {
    if (t.name == "blocks.0.attn.proj.input.ef_damp") t.name = "head.input.ef_damp";
    return true;
  });
  expect_rejected(bad, "blocks' Linears only");
  std::remove(good.c_str());
  std::remove(bad.c_str());
}

TEST(QuantModelFile, Rejections) {
  Cfg c;
  const QuantModel m = make_model(c, 30);
  const std::string good = tmp_path("good");
  save_quant_model(m, good);
  const std::string bad = tmp_path("bad");

  rewrite(good, bad, [](Tensor& t) { return t.name != "blocks.1.mlp.fc1.bias"; });
  expect_rejected(bad, "missing tensor 'blocks.1.mlp.fc1.bias'");

  rewrite(good, bad, [](Tensor& t) {
    if (t.name == "blocks.0.attn.qkv.weight_scale") t.dtype = DType::I32;
    return true;
  });
  expect_rejected(bad, "dtype");

  rewrite(good, bad, [](Tensor& t) {
    if (t.name == "blocks.0.attn.q.scale") set_elem(t, 0, std::numeric_limits<float>::quiet_NaN());
    return true;
  });
  expect_rejected(bad, "NaN");

  rewrite(good, bad, [](Tensor& t) {
    if (t.name == "head.weight_scale") set_elem(t, 3, 0.0f);
    return true;
  });
  expect_rejected(bad, "scale <= 0");

  rewrite(good, bad, [](Tensor& t) {
    if (t.name == "blocks.0.attn.k.zero_bits") set_elem<int32_t>(t, 0, 300);
    return true;
  });
  expect_rejected(bad, "zero point 300");

  rewrite(good, bad, [](Tensor& t) {
    if (t.name == "blocks.1.attn.qkv.weight_zero") set_elem<int32_t>(t, 5, 128);
    return true;
  });
  expect_rejected(bad, "weight_zero");

  rewrite(good, bad, [](Tensor& t) {
    if (t.name == "blocks.0.attn.v.zero_bits") set_elem<int32_t>(t, 1, 9);
    return true;
  });
  expect_rejected(bad, "9-bit");

  rewrite(good, bad, [](Tensor& t) {
    if (t.name == "blocks.1.attn.softmax.thresholds") {
      float a, b;
      std::memcpy(&a, t.bytes.data() + 4, 4);
      std::memcpy(&b, t.bytes.data() + 8, 4);
      set_elem(t, 1, b);
      set_elem(t, 2, a);
    }
    return true;
  });
  expect_rejected(bad, "not strictly decreasing");

  rewrite(good, bad, [](Tensor&) { return true; }, [](std::map<std::string, std::string>& md) { md.erase("format"); });
  expect_rejected(bad, "not a reparq quantized model");

  // A float (not quantized) checkpoint.
  {
    SafeTensorsWriter w;
    std::vector<float> wts(16, 0.5f);
    w.add("patch_embed.proj.weight", DType::F32, {4, 4}, wts.data(), wts.size() * 4);
    w.set_metadata("arch", "vit");
    w.write(bad);
    expect_rejected(bad, "not a reparq quantized model");
  }

  // K above the int32 accumulation bound: fc2 with K = 33026 at W8A8.
  {
    Cfg k;
    k.depth = 1;
    k.kinds = {"uniform"};
    k.attn_bits = {8};
    QuantModel big = make_model(k, 31);
    std::mt19937 rng(3);
    big.mlp_hidden = 33026;
    big.blocks[0].fc1 = rand_linear(rng, big.mlp_hidden, big.dim, 8, 8);
    big.blocks[0].fc2 = rand_linear(rng, big.dim, big.mlp_hidden, 8, 8);
    big.blocks[0].fc1.input = m.blocks[0].fc1.input;
    big.blocks[0].fc2.input = ActQuant{8, 0.01f, 10, {}};
    save_quant_model(big, bad);
    expect_rejected(bad, "above the int32 accumulation bound 33025");
  }
  std::remove(good.c_str());
}

// ---- (e) cross-platform golden logits -------------------------------------------------------
// Two small random models (W8A8 and W4A4, generated by make_model on x86-64 and committed as
// tests/data/golden_*.safetensors) and their logits from the x86-64 scalar path, committed as
// tests/data/golden_*.logits (one line per image: the 32-bit patterns of its logits in hex).
// Every ISA of every platform (Arm64 under qemu included) must reproduce them bit for bit.
// The model is a file, not regenerated, because make_model draws floats through <random>
// distributions whose float arithmetic the compiler may contract into FMAs on Arm64; the
// images are drawn from raw mt19937 words (integers only). Regenerate both files on x86-64
// with REPARQ_WRITE_GOLDEN=1 (and review the diff: it should only happen on a format change).
namespace {

std::vector<uint8_t> golden_images(int64_t n, int64_t S) {
  std::mt19937 rng(2024);
  std::vector<uint8_t> v(static_cast<size_t>(n * S * S));
  for (uint8_t& p : v) p = static_cast<uint8_t>(rng() >> 24);
  return v;
}

std::string golden_hex(const std::vector<float>& logits, int64_t classes) {
  std::string s;
  char buf[16];
  for (size_t i = 0; i < logits.size(); ++i) {
    uint32_t bits;
    std::memcpy(&bits, &logits[i], 4);
    std::snprintf(buf, sizeof buf, "%08x", bits);
    s += buf;
    s += (int64_t(i) % classes == classes - 1) ? '\n' : ' ';
  }
  return s;
}

void check_golden(const std::string& stem, Cfg c, uint32_t seed) {
  const std::string dir = std::string(REPARQ_SOURCE_DIR) + "/tests/data/";
  const std::string model_path = dir + stem + ".safetensors", logits_path = dir + stem + ".logits";
  const int64_t n = 5;
  const std::vector<uint8_t> imgs = golden_images(n, c.image);
  const char* write = std::getenv("REPARQ_WRITE_GOLDEN");
  if (write != nullptr && std::string(write) == "1") {
#if !defined(__x86_64__)
    GTEST_SKIP() << "golden files are written on x86-64 only";
#endif
    save_quant_model(make_model(c, seed), model_path);
    Executor ex(load_quant_model(model_path), Isa::Scalar, 1);
    std::vector<float> logits(n * c.classes);
    ex.run(imgs.data(), n, logits.data());
    std::FILE* f = std::fopen(logits_path.c_str(), "w");
    ASSERT_NE(f, nullptr) << logits_path;
    const std::string text = golden_hex(logits, c.classes);
    std::fwrite(text.data(), 1, text.size(), f);
    std::fclose(f);
  }
  std::string want;
  {
    std::FILE* f = std::fopen(logits_path.c_str(), "r");
    ASSERT_NE(f, nullptr) << "missing golden file " << logits_path;
    char buf[4096];
    size_t got;
    while ((got = std::fread(buf, 1, sizeof buf, f)) > 0) want.append(buf, got);
    std::fclose(f);
  }
  const QuantModel m = load_quant_model(model_path);
  for (Isa isa : available_isas())
    for (int threads : {1, 3}) {
      Executor ex(m, isa, threads);
      std::vector<float> logits(n * m.num_classes);
      ex.run(imgs.data(), n, logits.data());
      EXPECT_EQ(want, golden_hex(logits, m.num_classes))
          << stem << ": " << isa_name(isa) << " (" << ex.kernel_summary() << "), " << threads
          << " threads: logits differ from the x86-64 golden file " << logits_path;
    }
}

}  // namespace

TEST(Executor, GoldenLogitsW8A8BitIdenticalToX86) {
  Cfg c;
  c.dim = 48;
  c.heads = 3;
  c.image = 16;
  c.mlp = 96;
  c.kinds = {"logsqrt2", "uniform"};
  check_golden("golden_vit_w8a8", c, 41);
}

TEST(Executor, GoldenLogitsW4A4BitIdenticalToX86) {
  Cfg c;
  c.dim = 48;
  c.heads = 3;
  c.image = 16;
  c.mlp = 96;
  c.wbits = 4;
  c.abits = 4;
  c.kinds = {"log2", "tanq"};
  c.attn_bits = {4, 3};
  check_golden("golden_vit_w4a4", c, 42);
}

// Determinism on the shipped files (docs/RELIABILITY.md): 45 images run as batches of 1, 7 and
// 32 (the last batch partial), with 1 and 2 threads, each configuration twice on the same
// executor and once more on a fresh one: every logit bit-identical, on every ISA.
TEST(Executor, LogitsBitIdenticalAcrossRepeatsThreadsAndBatches) {
  for (const char* stem : {"golden_vit_w8a8", "golden_vit_w4a4"}) {
    const QuantModel m = load_quant_model(std::string(REPARQ_SOURCE_DIR) + "/tests/data/" + stem + ".safetensors");
    const int64_t n = 45, S = m.image_size, C = m.num_classes;
    const std::vector<uint8_t> imgs = golden_images(n, S);
    std::vector<float> want;
    for (Isa isa : available_isas())
      for (int threads : {1, 2}) {
        Executor ex(m, isa, threads);
        for (int64_t batch : {1, 7, 32})
          for (int repeat = 0; repeat < 2; ++repeat) {
            std::vector<float> got(size_t(n * C));
            for (int64_t i = 0; i < n; i += batch)
              ex.run(imgs.data() + i * S * S, std::min(batch, n - i), got.data() + i * C);
            if (want.empty()) {
              Executor fresh(m, Isa::Scalar, 1);
              want.resize(got.size());
              fresh.run(imgs.data(), n, want.data());
            }
            EXPECT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * sizeof(float)))
                << stem << ": " << isa_name(isa) << ", " << threads << " threads, batch " << batch
                << ", repeat " << repeat;
          }
      }
  }
}
