// Tests of quant/quantizers.h and the fake-quantization functions of quant/sim.h against the
// math of algorithms.md §2 (uniform quantizers), §5 (channel-wise -> layer-wise
// re-parameterization), §7 (log2 / log-sqrt2), §8.2 (TanQ), §6 (dual clipping) and §9
// (weights, GPTQ), and against the scalar definitions of kernels/qmodel.h (FORMAT.md).
// Every expected value is derived from the math, never copied from a run.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <set>
#include <vector>

#include "kernels/error.h"
#include "kernels/qmodel.h"
#include "kernels/vit_ops.h"
#include "quant/quantizers.h"
#include "quant/sim.h"

using namespace reparq;

namespace {

// ---- synthetic data ---------------------------------------------------------------------

torch::Tensor gaussian(int64_t n) { return torch::randn({n}) * 1.5 + 0.3; }
torch::Tensor uniform(int64_t n) { return torch::rand({n}) * 4.0 - 1.0; }
// Laplace(0, 1): difference of two unit exponentials.
torch::Tensor laplace(int64_t n) {
  return torch::empty({n}).exponential_() - torch::empty({n}).exponential_();
}
// Student t with nu degrees of freedom: z / sqrt(chi2_nu / nu).
torch::Tensor student(int64_t n, int nu) {
  torch::Tensor chi2 = torch::randn({n, nu}).pow(2).sum(1);
  return torch::randn({n}) / (chi2 / double(nu)).sqrt();
}

struct Dist {
  const char* name;
  torch::Tensor (*make)(int64_t);
};
torch::Tensor student3(int64_t n) { return student(n, 3); }
const Dist kDists[] = {{"gaussian", gaussian}, {"uniform", uniform}, {"laplace", laplace}, {"student3", student3}};

// The three per-tensor range rules under test, by name.
ActQuant make_act(const std::string& how, const torch::Tensor& x, int bits) {
  if (how == "from_range") return act_from_range(x.min().item<double>(), x.max().item<double>(), bits);
  if (how == "minmax") return act_minmax(x, bits);
  if (how == "percentile") return act_percentile(x, bits, false);
  return act_percentile(x, bits, true);
}
const char* const kActRules[] = {"from_range", "minmax", "percentile", "percentile-wide"};

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

double max_rel(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>() / b.abs().max().item<double>();
}

}  // namespace

// ================================ uniform activation quantizers (§2) ======================

TEST(ActQuant, RoundTripErrorAtMostHalfStepInsideClipRange) {
  torch::manual_seed(1);
  for (const Dist& d : kDists) {
    torch::Tensor x = d.make(20000);
    for (const char* rule : kActRules)
      for (int bits : {3, 4, 8}) {
        SCOPED_TRACE(std::string(d.name) + " " + rule + " " + std::to_string(bits) + " bits");
        ActQuant q = make_act(rule, x, bits);
        ASSERT_EQ(q.bits, bits);
        ASSERT_GT(q.scale, 0.0f);
        ASSERT_GE(q.zero, 0);
        ASSERT_LE(q.zero, q.qmax());
        // Representable interval of the quantizer: codes 0..Q.
        const double lo = double(q.scale) * (0 - q.zero), hi = double(q.scale) * (q.qmax() - q.zero);
        torch::Tensor inside = (x >= lo) & (x <= hi);
        ASSERT_GT(inside.sum().item<int64_t>(), x.numel() / 2) << "the clip range must cover most data";
        torch::Tensor err = (x - fake_quant(x, q)).abs().masked_select(inside);
        // Half a step, plus float rounding of x * inv_scale (|t| <= 2^16 ulps at 2^-24).
        EXPECT_LE(err.max().item<double>(), double(q.scale) * (0.5 + 1e-4));
        // Outside the range the value clips to the nearest end of the interval.
        torch::Tensor fq = fake_quant(x, q);
        torch::Tensor above = x > hi, below = x < lo;
        if (above.any().item<bool>()) {
          EXPECT_NEAR(fq.masked_select(above).max().item<double>(), hi, 1e-5 * std::abs(hi) + 1e-6);
        }
        if (below.any().item<bool>()) {
          EXPECT_NEAR(fq.masked_select(below).min().item<double>(), lo, 1e-5 * std::abs(lo) + 1e-6);
        }
      }
  }
}

TEST(ActQuant, MseDecreasesWithBits) {
  torch::manual_seed(2);
  for (const Dist& d : kDists) {
    torch::Tensor x = d.make(20000);
    for (const char* rule : kActRules) {
      SCOPED_TRACE(std::string(d.name) + " " + rule);
      double m8 = quant_mse(x, make_act(rule, x, 8));
      double m4 = quant_mse(x, make_act(rule, x, 4));
      double m3 = quant_mse(x, make_act(rule, x, 3));
      EXPECT_LT(m8, m4);
      EXPECT_LT(m4, m3);
      EXPECT_GT(m3, 0.0);
      // quant_mse is the MSE of fake_quant.
      ActQuant q = make_act(rule, x, 4);
      EXPECT_NEAR(quant_mse(x, q), (fake_quant(x, q) - x).pow(2).mean().item<double>(), 1e-12);
    }
  }
}

TEST(ActQuant, PercentileBeatsMinmaxOnHeavyTails) {
  torch::manual_seed(3);
  torch::Tensor x = student(20000, 2);
  // A handful of outliers, far beyond the bulk.
  x.index_put_({torch::arange(0, 20000, 4000)}, torch::tensor({60.0f, -45.0f, 80.0f, 55.0f, -70.0f}));
  for (int bits : {3, 4, 6}) {
    SCOPED_TRACE(bits);
    double mm = quant_mse(x, act_minmax(x, bits));
    double pc = quant_mse(x, act_percentile(x, bits, false));
    double pw = quant_mse(x, act_percentile(x, bits, true));
    EXPECT_LT(pc, mm);
    EXPECT_LT(pw, mm);
    EXPECT_LE(pw, pc) << "the wide grid contains the narrow one";
  }
  // On data without outliers minmax is one of the wide candidates (p = 1.0): wide <= minmax.
  torch::Tensor u = uniform(10000);
  EXPECT_LE(quant_mse(u, act_percentile(u, 4, true)), quant_mse(u, act_minmax(u, 4)) * (1 + 1e-6));
}

TEST(ActQuant, SearchNeverWorseThanPercentileAndUsesTheLoss) {
  torch::manual_seed(4);
  torch::Tensor x = student(4000, 3).reshape({400, 10});
  x.index_put_({torch::indexing::Slice(), 3}, x.select(1, 3) * 8);   // one wide channel
  torch::Tensor w = torch::randn({6, 10}) * 0.2;
  w.index_put_({torch::indexing::Slice(), 3}, 0.001);                // ... that the consumer ignores
  LinearLossCtx c{x, w};
  for (int bits : {3, 4}) {
    SCOPED_TRACE(bits);
    // Plain MSE: contains the wide percentile candidates, so never worse on that loss.
    ActQuant m = act_search(x, bits, loss_mse_to, &x);
    EXPECT_LE(quant_mse(x, m), quant_mse(x, act_percentile(x, bits, true)) * (1 + 1e-9));
    // Output-aware: lower output error than the MSE choice, by clipping the ignored channel.
    ActQuant o = act_search(x, bits, loss_linear_out, &c);
    double eo = loss_linear_out(fake_quant(x, o), &c), em = loss_linear_out(fake_quant(x, m), &c);
    EXPECT_LT(eo, em * 0.9);
    EXPECT_LT(o.scale, m.scale);
  }
}

TEST(ActQuant, FromRangeFollowsTheFormula) {
  // scale = (hi - lo) / Q, zero = nearbyint(-lo / scale) clamped to [0, Q].
  ActQuant a = act_from_range(-1.0, 3.0, 4);
  EXPECT_FLOAT_EQ(a.scale, 4.0f / 15.0f);
  EXPECT_EQ(a.zero, int32_t(std::nearbyint(1.0 / double(a.scale))));
  // A range without 0 is widened to contain it (the zero point must be a code in [0, Q]).
  EXPECT_EQ(act_from_range(2.0, 5.0, 8).zero, 0);
  EXPECT_FLOAT_EQ(act_from_range(2.0, 5.0, 8).scale, 5.0f / 255.0f);
  EXPECT_EQ(act_from_range(-5.0, -2.0, 8).zero, 255);
  EXPECT_FLOAT_EQ(act_from_range(-5.0, -2.0, 8).scale, 5.0f / 255.0f);
  ActQuant flat = act_from_range(1.0, 1.0, 8);
  EXPECT_GT(flat.scale, 0.0f) << "degenerate range still gives a positive scale";
  EXPECT_THROW(act_from_range(0, 1, 1), UsageError);
  EXPECT_THROW(act_from_range(0, 1, 9), UsageError);
}

// Whatever the range, every value inside [lo, hi] is represented to half a step (minmax
// must not clip the data it was computed from), also when the range does not contain 0.
TEST(ActQuant, RangeCoveredEvenWithoutZero) {
  const std::pair<double, double> ranges[] = {{2, 5}, {-5, -2}, {0.1, 0.2}, {-3, 1}, {-0.01, 7}, {1000, 1001}};
  for (auto [lo, hi] : ranges)
    for (int bits : {2, 4, 8}) {
      SCOPED_TRACE(std::to_string(lo) + ".." + std::to_string(hi) + " " + std::to_string(bits) + " bits");
      torch::Tensor x = torch::linspace(lo, hi, 2001, torch::kFloat64).to(torch::kFloat32);
      for (const ActQuant& q : {act_from_range(lo, hi, bits), act_minmax(x, bits)}) {
        // Widening to 0 and the integer zero point each cost up to half a step at the ends.
        EXPECT_LE((x - fake_quant(x, q)).abs().max().item<double>(), double(q.scale) * (1.0 + 1e-4));
      }
    }
  // Per channel and per weight row as well (one all-positive, one all-negative channel/row).
  torch::manual_seed(5);
  torch::Tensor x = torch::randn({500, 4});
  x.select(1, 1).add_(10.0);
  x.select(1, 2).sub_(10.0);
  for (int bits : {3, 8}) {
    for (const ChannelQuant& q : {channel_minmax(x, bits), channel_percentile(x, bits)}) {
      torch::Tensor err = (fake_quant_channels(x, q) - x).abs().amax(0);
      EXPECT_LT((err / q.scale).max().item<double>(), 3.0) << "no channel is clipped wholesale";
    }
    WeightQuant w = quantize_weight(x.t().contiguous(), bits, "minmax");
    torch::Tensor err = (w.dequant() - x.t()).abs().amax(1);
    EXPECT_LE((err / w.scale).max().item<double>(), 1.0 + 1e-4);
  }
}

TEST(ActQuant, FakeQuantBitExactWithScalarDefinition) {
  torch::manual_seed(4);
  // A power-of-two scale makes (k + 0.5) * scale land exactly on rounding ties; the others
  // are arbitrary. Values cover ties, random reals far beyond the range, +-0, inf, NaN, huge.
  std::vector<ActQuant> qs = {{4, 0.25f, 7, {}}, {8, 0.0371f, 131, {}}, {3, 1.7f, 0, {}}, {8, 0.001f, 255, {}}, {2, 0.5f, 1, {}}};
  ActQuant lq{8, 0.0371f, 131, nearest_level_lut({0, 3, 40, 100, 128, 131, 140, 200, 254}, 255)};   // non-uniform levels
  qs.push_back(lq);
  for (const ActQuant& q : qs) {
    SCOPED_TRACE("bits " + std::to_string(q.bits) + " scale " + std::to_string(q.scale));
    std::vector<float> v;
    for (int k = -300; k <= 300; ++k) v.push_back((float(k) + 0.5f) * q.scale);     // ties
    for (int k = -300; k <= 300; ++k) v.push_back(float(k) * q.scale);              // exact levels
    torch::Tensor r = (torch::rand({4000}) * 4.0 - 2.0) * (q.scale * float(q.qmax()));
    v.insert(v.end(), r.data_ptr<float>(), r.data_ptr<float>() + r.numel());
    for (float f : {0.0f, -0.0f, 1e30f, -1e30f, 65536.0f * q.scale, -65537.0f * q.scale,
                    std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                    std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::denorm_min()})
      v.push_back(f);
    torch::Tensor x = torch::from_blob(v.data(), {int64_t(v.size())}, torch::kFloat32).clone();
    torch::Tensor codes = quant_codes(x, q), fq = fake_quant(x, q);
    ASSERT_EQ(codes.scalar_type(), torch::kFloat32);
    int64_t ties = 0;
    for (size_t i = 0; i < v.size(); ++i) {
      uint8_t c = q.quantize(v[i]);
      float want = q.dequantize(c);
      ASSERT_EQ(codes[int64_t(i)].item<float>(), float(c)) << "x = " << v[i];
      ASSERT_EQ(bits_of(fq[int64_t(i)].item<float>()), bits_of(want)) << "x = " << v[i];
      float t = v[i] * q.inv_scale();
      if (std::isfinite(t) && t - std::floor(t) == 0.5f) ++ties;
    }
    if (q.scale == 0.25f) {
      EXPECT_GT(ties, 500) << "the tie cases must really be ties";
    }
  }
}

// Non-uniform levels on an 8-bit grid (act_grid_levels, Recipe::level_sites): on a GELU-shaped
// distribution (mass near 0, long positive tail) they beat the best uniform quantizer of the
// same bit width; the table is monotone, with at most 2^bits levels; channel weights move
// precision to the channels that matter.
TEST(ActQuant, GridLevelsBeatUniformOnSkewedData) {
  torch::manual_seed(11);
  torch::Tensor y = torch::randn({4000, 16}) * 1.5 + 0.3;
  torch::Tensor x = y * 0.5 * (1 + torch::erf(y / std::sqrt(2.0)));   // GELU
  for (int bits : {3, 4}) {
    SCOPED_TRACE("bits " + std::to_string(bits));
    const ActQuant u = act_search(x, bits, loss_mse_to, &x), g = act_grid_levels(x, bits);
    ASSERT_EQ(g.bits, 8);
    ASSERT_EQ(g.lut.size(), 256u);
    std::set<int> distinct(g.lut.begin(), g.lut.end());
    EXPECT_LE(distinct.size(), size_t(1) << bits);
    EXPECT_GE(distinct.size(), size_t(1) << bits) << "enough data for every level";
    for (size_t c = 1; c < g.lut.size(); ++c) ASSERT_LE(g.lut[c - 1], g.lut[c]);
    const double mu = quant_mse(x, u), mg = quant_mse(x, g);
    std::printf("  %d-bit MSE: uniform (clip search) %.5f, levels %.5f\n", bits, mu, mg);
    EXPECT_LT(mg, 0.8 * mu);
    EXPECT_EQ(std::get<0>(torch::_unique(fake_quant(x, g))).numel(), int64_t(distinct.size()));
    // Weighting channel 0 by 1000: its error falls, the others' rises.
    torch::Tensor w = torch::ones({16});
    w[0] = 1000.0;
    const ActQuant gw = act_grid_levels(x * torch::linspace(0.2, 1.0, 16), bits, w);
    const ActQuant g1 = act_grid_levels(x * torch::linspace(0.2, 1.0, 16), bits);
    torch::Tensor xs = x * torch::linspace(0.2, 1.0, 16);
    auto ch_mse = [&](const ActQuant& q, int c) { return (fake_quant(xs, q) - xs).select(1, c).pow(2).mean().item<double>(); };
    EXPECT_LT(ch_mse(gw, 0), ch_mse(g1, 0));
  }
}

// ========================== channel-wise -> layer-wise re-parameterization (§5) ===========

namespace {

// LN -> Linear with strongly varying post-LN channels: X = LN(Z; gamma, beta) with a few
// channels 20-40x wider and several channels shifted to mostly positive values (so that the
// channel zero points are skewed: mean and median targets differ).
struct LnLinear {
  torch::Tensor Z, gamma, beta, W, c;
  int64_t C = 16;
  double eps = 1e-6;
  torch::Tensor ln(const torch::Tensor& g, const torch::Tensor& b) const {
    return torch::layer_norm(Z, {C}, g, b, eps);
  }
  torch::Tensor X() const { return ln(gamma, beta); }
  LnLinear to(torch::ScalarType t) const {
    LnLinear o = *this;
    for (torch::Tensor* p : {&o.Z, &o.gamma, &o.beta, &o.W, &o.c}) *p = p->to(t);
    return o;
  }
};

LnLinear make_ln_linear(uint64_t seed) {
  torch::manual_seed(seed);
  LnLinear m;
  const int64_t n = 512, out = 8, C = m.C;
  m.Z = torch::randn({n, C}) * (torch::rand({n, 1}) + 0.5) + torch::randn({n, 1});
  m.gamma = torch::rand({C}) * 0.5 + 0.5;
  m.gamma[3] = m.gamma[3] * 40.0;
  m.gamma[9] = m.gamma[9] * 25.0;
  m.gamma[12] = m.gamma[12] * 20.0;
  m.beta = torch::randn({C}) * 0.2;
  for (int j : {0, 1, 2, 4, 5}) m.beta[j] = m.beta[j] + 2.5 * m.gamma[j];   // mostly positive
  m.beta[6] = m.beta[6] - 2.0 * m.gamma[6];                                   // mostly negative
  m.W = torch::randn({out, C}) * 0.3;
  m.c = torch::randn({out}) * 0.1;
  return m;
}

struct Folded {
  torch::Tensor gamma, beta, W, c;
};
// The fold exactly as pipeline.cpp applies it (algorithms.md §5.2).
Folded fold(const LnLinear& m, const Reparam& r) {
  Folded f;
  f.gamma = m.gamma / r.rho;
  f.beta = m.beta / r.rho - r.tau;
  f.W = m.W * r.rho.unsqueeze(0);
  f.c = m.c + torch::matmul(f.W, r.tau);
  return f;
}

// Per-tensor codes in double: clamp(nearbyint(x / scale) + zero, 0, Q).
torch::Tensor layer_codes(const torch::Tensor& x, const ActQuant& q) {
  return ((x / double(q.scale)).round() + double(q.zero)).clamp(0, q.qmax());
}
torch::Tensor channel_codes(const torch::Tensor& x, const ChannelQuant& q) {
  const double Q = double((1 << q.bits) - 1);
  return ((x / q.scale).round() + q.zero).clamp(0, Q);
}

}  // namespace

TEST(Reparam, TargetsAndShapes) {
  LnLinear m = make_ln_linear(10);
  ChannelQuant cq = channel_percentile(m.X(), 4);
  Reparam mean = make_reparam(cq, "mean"), med = make_reparam(cq, "median");
  // Target scale = mean / median of the channel scales (median of an even count: mean of the
  // two middle values); target zero = the rounded mean / median of the channel zero points.
  EXPECT_NEAR(mean.layer.scale, cq.scale.mean().item<double>(), 1e-6 * mean.layer.scale);
  torch::Tensor ss = std::get<0>(cq.scale.sort()), zs = std::get<0>(cq.zero.sort());
  EXPECT_NEAR(med.layer.scale, (ss[7] + ss[8]).item<double>() / 2, 1e-6 * med.layer.scale);
  EXPECT_EQ(mean.layer.zero, int32_t(std::nearbyint(cq.zero.mean().item<double>())));
  EXPECT_EQ(med.layer.zero, int32_t(std::nearbyint((zs[7] + zs[8]).item<double>() / 2)));
  EXPECT_NE(mean.layer.zero, med.layer.zero) << "test data must make the two targets differ";
  EXPECT_EQ(mean.layer.bits, 4);
  EXPECT_EQ(mean.rho.sizes(), cq.scale.sizes());
  EXPECT_EQ(mean.tau.sizes(), cq.scale.sizes());
  EXPECT_THROW(make_reparam(cq, "mode"), UsageError);
}

// (a) The fold preserves the float function LN -> Linear.
TEST(Reparam, FoldPreservesFloatOutputs) {
  LnLinear m = make_ln_linear(11);
  torch::Tensor Y = torch::linear(m.X(), m.W, m.c);
  for (const char* target : {"mean", "median"})
    for (bool pct : {true, false}) {
      SCOPED_TRACE(std::string(target) + (pct ? " channel_percentile" : " channel_minmax"));
      ChannelQuant cq = pct ? channel_percentile(m.X(), 4) : channel_minmax(m.X(), 4);
      Reparam r = make_reparam(cq, target);
      // rho really varies (the wide channels get the large ratios), so the check is not vacuous.
      ASSERT_GT((r.rho.max() / r.rho.min()).item<double>(), 10.0);
      Folded f = fold(m, r);
      torch::Tensor Y2 = torch::linear(m.ln(f.gamma, f.beta), f.W, f.c);
      EXPECT_LE(max_rel(Y2, Y), 1e-5);
    }
}

// (b) Quantization preserved: per-tensor codes of X' = channel-wise codes of X, all elements.
TEST(Reparam, LayerCodesOfFoldedEqualChannelCodes) {
  LnLinear m = make_ln_linear(12).to(torch::kFloat64);
  torch::Tensor X = m.X();
  for (int bits : {4, 3, 8})
    for (const char* target : {"mean", "median"}) {
      SCOPED_TRACE(std::string(target) + " " + std::to_string(bits) + " bits");
      ChannelQuant cq = channel_percentile(X, bits);   // double scales and zero points
      ASSERT_EQ(cq.scale.scalar_type(), torch::kFloat64);
      Reparam r = make_reparam(cq, target);
      Folded f = fold(m, r);
      torch::Tensor Xf = m.ln(f.gamma, f.beta);        // the folded LayerNorm's output
      torch::Tensor a = layer_codes(Xf, r.layer), b = channel_codes(X, cq);
      EXPECT_EQ((a != b).sum().item<int64_t>(), 0) << "codes differ";
      // Non-vacuous: the channel codes are spread over the whole range.
      EXPECT_EQ(b.min().item<double>(), 0.0);
      EXPECT_EQ(b.max().item<double>(), double((1 << bits) - 1));
      // Dequantized folded values = (channel-dequantized X) / rho - tau (§5.2).
      torch::Tensor deq_l = (a - double(r.layer.zero)) * double(r.layer.scale);
      torch::Tensor deq_c = (b - cq.zero) * cq.scale / r.rho - r.tau;
      EXPECT_LE((deq_l - deq_c).abs().max().item<double>(), 1e-9);
    }
}

// (c) With the bias folded from the QUANTIZED weights, the quantized layer does not depend on
// the target (§5.4(1)); with the bias from the float weights (RepQ-ViT) it does.
TEST(Reparam, ExactBiasMakesQuantizedOutputIndependentOfTarget) {
  LnLinear m = make_ln_linear(13).to(torch::kFloat64);
  ChannelQuant cq = channel_percentile(m.X(), 4);
  auto run = [&](const char* target, bool exact) {
    Reparam r = make_reparam(cq, target);
    Folded f = fold(m, r);
    WeightQuant wq = quantize_weight(f.W, 4, "percentile");
    torch::Tensor Wq = wq.dequant();
    torch::Tensor bias = m.c + torch::matmul(exact ? Wq : f.W, r.tau);
    torch::Tensor codes = layer_codes(m.ln(f.gamma, f.beta), r.layer);
    torch::Tensor Xq = (codes - double(r.layer.zero)) * double(r.layer.scale);
    return torch::linear(Xq, Wq, bias);
  };
  ASSERT_NE(make_reparam(cq, "mean").layer.zero, make_reparam(cq, "median").layer.zero);
  torch::Tensor ym = run("mean", true), yd = run("median", true);
  EXPECT_LE(max_rel(yd, ym), 1e-5);
  // Sensitivity: the float-weight bias leaves a target-dependent error (far above 1e-5).
  torch::Tensor fm = run("mean", false), fd = run("median", false);
  EXPECT_GT(max_rel(fd, fm), 1e-3);
  // And the quantized output approximates the float one (4-bit: loose sanity bound).
  torch::Tensor Y = torch::linear(m.X(), m.W, m.c);
  EXPECT_LT(max_rel(ym, Y), 0.5);
}

// ================================ post-Softmax quantizers (§7, §8.2) =======================

TEST(AttnQuant, LogSqrt2IsLog2WithParityScale) {
  for (int bits : {3, 4, 8})
    for (double s : {1.0, 0.37, 0.0625}) {
      SCOPED_TRACE("bits " + std::to_string(bits) + " s " + std::to_string(s));
      std::vector<double> lv = attn_levels("logsqrt2", bits, s, 0.0);
      const int Q = (1 << bits) - 1;
      ASSERT_EQ(int(lv.size()), Q + 1);
      for (int c = 0; c < Q; ++c) {
        const double st = (c % 2) ? std::sqrt(2.0) * s : s;   // s~(parity)
        const int k = (c + 1) / 2;                               // ceil(c / 2)
        const double want = st * std::ldexp(1.0, -k);
        EXPECT_NEAR(lv[c], want, 1e-12 * want) << "code " << c;
      }
      EXPECT_EQ(lv[Q], 0.0) << "last code is the zero state";
      // log2 levels: exactly s * 2^-c (pure shifts).
      std::vector<double> l2 = attn_levels("log2", bits, s, 0.0);
      for (int c = 0; c < Q; ++c) EXPECT_EQ(l2[c], std::ldexp(s, -c));
    }
}

namespace {
const char* const kKinds[] = {"uniform", "log2", "logsqrt2", "tanq"};
double kind_param(const std::string& k) { return k == "tanq" ? 1.7 : 0.0; }
}  // namespace

TEST(AttnQuant, MakeAttnQuantInvariants) {
  for (const char* kind : kKinds)
    for (int bits = 2; bits <= 8; ++bits)
      for (double s : {1.0, 0.43}) {
        SCOPED_TRACE(std::string(kind) + " bits " + std::to_string(bits) + " s " + std::to_string(s));
        AttnQuant q = make_attn_quant(kind, bits, s, kind_param(kind));
        const int L = 1 << bits, Q = L - 1;
        ASSERT_EQ(int(q.thresholds.size()), Q);
        ASSERT_EQ(int(q.lut.size()), L);
        EXPECT_EQ(q.kind, kind);
        EXPECT_EQ(q.bits, bits);
        for (int i = 1; i < Q; ++i) EXPECT_LT(q.thresholds[i], q.thresholds[i - 1]) << "threshold " << i;
        EXPECT_EQ(q.lut[0], 255);
        EXPECT_FLOAT_EQ(q.lut_scale, float(s / 255.0));
        for (int c = 1; c < L; ++c) EXPECT_LE(q.lut[c], q.lut[c - 1]) << "levels decrease with the code";
        // Values above s clip to code 0; 0 goes to the last code, whose level is 0 for every
        // kind (the zero state of the log kinds; the lowest level of uniform and TanQ).
        for (double a : {s * 1.0001, s * 2, 1.0 + s, 1e9}) EXPECT_EQ(q.code(float(a)), 0);
        EXPECT_EQ(q.code(float(s)), 0);
        EXPECT_EQ(q.code(0.0f), Q);
        EXPECT_EQ(q.level(Q), 0.0f);
        EXPECT_EQ(q.level(0), float(s / 255.0) * 255.0f);
        // Round trips: code(level(c)) == c for every nonzero level that the 8-bit LUT keeps
        // distinct from its neighbours; always idempotent (fq(fq(a)) == fq(a)).
        for (int c = 0; c < L; ++c) {
          const float lv = q.level(c);
          EXPECT_EQ(q.level(q.code(lv)), lv) << "code " << c;
          bool distinct = (c == 0 || q.lut[c - 1] != q.lut[c]) && (c == Q || q.lut[c + 1] != q.lut[c]);
          if (q.lut[c] != 0 && distinct) {
            EXPECT_EQ(q.code(lv), c) << "code " << c;
          }
        }
        // The float levels themselves (before LUT rounding) always round trip.
        std::vector<double> fl = attn_levels(kind, bits, s, kind_param(kind));
        for (int c = 0; c < Q; ++c)
          if (fl[c] > 1e-30) {
            EXPECT_EQ(q.code(float(fl[c])), c) << "code " << c;
          }
      }
}

TEST(AttnQuant, LutMatchesFloatLevels) {
  for (const char* kind : kKinds)
    for (int bits : {3, 4, 8}) {
      AttnQuant q = make_attn_quant(kind, bits, 0.8, kind_param(kind));
      std::vector<double> fl = attn_levels(kind, bits, 0.8, kind_param(kind));
      for (size_t c = 0; c < fl.size(); ++c)
        EXPECT_LE(std::abs(double(q.level(int(c))) - fl[c]), q.lut_scale * (0.5 + 1e-4))
            << kind << " bits " << bits << " code " << c;
    }
}

// The executor codes 8-bit uniform post-Softmax quantizers arithmetically
// (AttnCoder::affine_k, kernels/vit_ops.h) only when the thresholds sit on a uniform grid's
// midpoints and the levels are affine: what this library writes must pass that check at any
// clip scale, or W8A8 models silently fall back to the table path.
TEST(AttnQuant, UniformEightBitTakesTheExecutorsArithmeticCoder) {
  for (double s : {1.0, 0.9804, 0.7316, 0.5032, 0.25, 0.1, 0.0137}) {
    const AttnCoder cd = make_attn_coder(make_attn_quant("uniform", 8, s));
    EXPECT_NE(cd.affine_k, 0.0f) << "clip " << s;
  }
  EXPECT_EQ(make_attn_coder(make_attn_quant("log2", 8, 1.0)).affine_k, 0.0f);
}

TEST(AttnQuant, BadArguments) {
  EXPECT_THROW(make_attn_quant("log10", 4, 1.0), UsageError);
  EXPECT_THROW(make_attn_quant("log2", 1, 1.0), UsageError);
  EXPECT_THROW(make_attn_quant("log2", 9, 1.0), UsageError);
  EXPECT_THROW(make_attn_quant("tanq", 4, 1.0, 0.0), UsageError);
  EXPECT_THROW(make_attn_quant("tanq", 4, 1.0, M_PI), UsageError);
}

TEST(AttnQuant, FakeQuantAttnBitExactWithScalar) {
  torch::manual_seed(20);
  for (const char* kind : kKinds)
    for (int bits : {2, 3, 4, 6, 8}) {
      SCOPED_TRACE(std::string(kind) + " bits " + std::to_string(bits));
      AttnQuant q = make_attn_quant(kind, bits, 0.6, kind_param(kind));
      // Softmax rows (realistic), uniform values, log-spread small values, every threshold and
      // its float neighbours, the levels themselves, 0, s, values above s.
      torch::Tensor sm = (torch::randn({64, 50}) * 3).softmax(-1).reshape({-1});
      torch::Tensor un = torch::rand({2000});
      torch::Tensor lg = torch::pow(2.0, -torch::rand({2000}) * 40).to(torch::kFloat32);
      std::vector<float> extra = {0.0f, 0.6f, 0.6000001f, 1.0f, 3.0f, 1e-30f};
      for (float t : q.thresholds) {
        extra.push_back(t);
        extra.push_back(std::nextafter(t, 0.0f));
        extra.push_back(std::nextafter(t, 2.0f));
      }
      for (int c = 0; c < (1 << bits); ++c) extra.push_back(q.level(c));
      torch::Tensor ex = torch::from_blob(extra.data(), {int64_t(extra.size())}, torch::kFloat32).clone();
      torch::Tensor a = torch::cat({sm, un, lg, ex});
      torch::Tensor fq = fake_quant_attn(a, q);
      ASSERT_EQ(fq.sizes(), a.sizes());
      const float* pa = a.data_ptr<float>();
      const float* pf = fq.data_ptr<float>();
      for (int64_t i = 0; i < a.numel(); ++i)
        ASSERT_EQ(bits_of(pf[i]), bits_of(q.level(q.code(pa[i])))) << "a = " << pa[i];
      // Shape is kept for attention maps [B, H, N, N].
      torch::Tensor a4 = sm.reshape({2, 2, 16, 50});
      EXPECT_EQ(fake_quant_attn(a4, q).sizes(), a4.sizes());
    }
}

TEST(AttnQuant, TanQSmallAlphaApproachesUniform) {
  for (int bits : {3, 4, 8}) {
    std::vector<double> u = attn_levels("uniform", bits, 0.9, 0.0);
    double prev = INFINITY;
    for (double alpha : {1.0, 0.1, 1e-3}) {
      std::vector<double> t = attn_levels("tanq", bits, 0.9, alpha);
      double d = 0;
      for (size_t c = 0; c < u.size(); ++c) d = std::max(d, std::abs(t[c] - u[c]));
      EXPECT_LT(d, prev) << "bits " << bits << " alpha " << alpha;
      prev = d;
    }
    EXPECT_LT(prev, 1e-6) << "alpha = 1e-3: deviation O(alpha^2)";
  }
}

TEST(AttnQuant, TanQDenserAtTheEnds) {
  for (int bits : {3, 4, 8})
    for (double alpha : {1.0, 2.0, 3.0}) {
      SCOPED_TRACE("bits " + std::to_string(bits) + " alpha " + std::to_string(alpha));
      std::vector<double> lv = attn_levels("tanq", bits, 1.0, alpha);
      const int Q = (1 << bits) - 1;
      EXPECT_NEAR(lv[0], 1.0, 1e-12);
      EXPECT_NEAR(lv[Q], 0.0, 1e-12);
      for (int c = 1; c <= Q; ++c) EXPECT_LT(lv[c], lv[c - 1]);
      const double top = lv[0] - lv[1], bottom = lv[Q - 1] - lv[Q];
      const double mid = lv[Q / 2] - lv[Q / 2 + 1];
      EXPECT_LT(top, mid);
      EXPECT_LT(bottom, mid);
      EXPECT_NEAR(top, bottom, 1e-12) << "symmetric around s/2";
      EXPECT_LT(top, 1.0 / Q) << "denser than uniform near 0 and s";
    }
}

TEST(AttnQuant, SearchFindsReasonableScale) {
  torch::manual_seed(21);
  torch::Tensor a = (torch::randn({8, 2, 17, 17}) * 2).softmax(-1);
  for (const char* kind : kKinds) {
    AttnQuant q = search_attn_quant(a, kind, 4);
    EXPECT_EQ(q.kind, kind);
    EXPECT_GT(q.scale, 0.0f);
    EXPECT_LE(q.scale, 1.0f);
    double m = (fake_quant_attn(a, q) - a).pow(2).mean().item<double>();
    // The search keeps the best candidate; scale 1 is one of them.
    AttnQuant one = make_attn_quant(kind, 4, 1.0, q.kind == "tanq" ? q.param : 0.0);
    EXPECT_LE(m, (fake_quant_attn(a, one) - a).pow(2).mean().item<double>() * (1 + 1e-6)) << kind;
  }
}

// ================================ dual clipping (§6) ========================================

namespace {
// Post-LN-like activations with one-sided outlier channels: a few channels carry a long
// positive (or negative) exponential tail on one side only.
torch::Tensor one_sided_outliers(int64_t n, int64_t C) {
  torch::Tensor x = torch::randn({n, C}) * (torch::rand({C}) * 0.5 + 0.5);
  for (int j : {1, 5, 9}) {
    if (j >= C) continue;
    torch::Tensor tail = torch::empty({n}).exponential_(1.0).pow(2.5);   // heavy, positive
    x.select(1, j).add_(tail);
  }
  for (int j : {3, 12})
    if (j < C) x.select(1, j).sub_(torch::empty({n}).exponential_(1.0).pow(2.5) * 2);
  return x;
}
}  // namespace

TEST(DualClip, LowersLayerOutputError) {
  torch::manual_seed(30);
  const int64_t n = 1024, C = 16, out = 12;
  torch::Tensor x = one_sided_outliers(n, C);
  torch::Tensor w = torch::randn({out, C}) * 0.3;
  for (int bits : {3, 4}) {
    SCOPED_TRACE(bits);
    double mm = layer_output_mse(x, channel_minmax(x, bits), w);
    double pc = layer_output_mse(x, channel_percentile(x, bits), w);
    double d0 = layer_output_mse(x, channel_dual_clip(x, w, bits, 0), w);
    double dl = layer_output_mse(x, channel_dual_clip(x, w, bits, 100), w);
    EXPECT_LT(d0, mm);
    EXPECT_LT(dl, mm);
    EXPECT_LT(dl, pc);
    EXPECT_LE(dl, d0);
  }
}

TEST(DualClip, ZeroItersIsTheGridStart) {
  torch::manual_seed(31);
  const int64_t n = 600, C = 8;
  torch::Tensor x = one_sided_outliers(n, C);
  torch::Tensor w1 = torch::randn({4, C}), w2 = torch::randn({6, C}) * 3;
  const int bits = 4;
  ChannelQuant g = channel_dual_clip(x, w1, bits, 0);
  // Independent of the consumer's weights: the grid is chosen by each channel's own MSE.
  ChannelQuant g2 = channel_dual_clip(x, w2, bits, 0);
  EXPECT_TRUE(torch::equal(g.scale, g2.scale));
  EXPECT_TRUE(torch::equal(g.zero, g2.zero));
  EXPECT_EQ(g.bits, bits);
  // It is the per-channel MSE minimum over the 5 x 5 grid of (lower, upper) percentiles,
  // recomputed here channel by channel in double with plain loops.
  const double grid[] = {0.99, 0.999, 0.9999, 0.99999, 1.0};
  const double Q = 15;
  torch::Tensor fq = fake_quant_channels(x, g);
  for (int64_t j = 0; j < C; ++j) {
    torch::Tensor col = x.select(1, j).to(torch::kFloat64);
    std::vector<double> v(col.data_ptr<double>(), col.data_ptr<double>() + n);
    std::sort(v.begin(), v.end());
    auto quant = [&](double p) {
      double pos = p * double(n - 1);
      int64_t lo = int64_t(std::floor(pos)), hi = std::min<int64_t>(lo + 1, n - 1);
      return v[lo] * (1 - (pos - lo)) + v[hi] * (pos - lo);
    };
    double best = INFINITY;
    for (double pl : grid)
      for (double pu : grid) {
        double lo = quant(1 - pl), hi = quant(pu), sc = (hi - lo) / Q, z = std::min(Q, std::max(0.0, std::nearbyint(-lo / sc)));
        double m = 0;
        for (double e : v) {
          double c = std::min(Q, std::max(0.0, std::nearbyint(e / sc) + z));
          m += (sc * (c - z) - e) * (sc * (c - z) - e);
        }
        best = std::min(best, m / double(n));
      }
    double got = (fq.select(1, j) - x.select(1, j)).pow(2).mean().item<double>();
    EXPECT_LE(got, best * (1 + 1e-4) + 1e-12) << "channel " << j;
  }
}

TEST(DualClip, LearningNeverWorseThanGrid) {
  torch::manual_seed(32);
  torch::Tensor x = one_sided_outliers(512, 12);
  torch::Tensor w = torch::randn({5, 12});
  for (int bits : {2, 4, 8}) {
    double d0 = layer_output_mse(x, channel_dual_clip(x, w, bits, 0), w);
    for (int iters : {1, 3, 40})
      EXPECT_LE(layer_output_mse(x, channel_dual_clip(x, w, bits, iters), w), d0)
          << "bits " << bits << " iters " << iters;
  }
}

// ================================ weights (§9) ============================================

TEST(WeightQuant, CodesRangesAndRoundTrip) {
  torch::manual_seed(40);
  torch::Tensor w = torch::randn({24, 40}) * 0.05;
  w.select(0, 3).add_(0.2);                    // an all-positive row: zero point clamps
  w.select(0, 7).mul_(30);                     // a wide row
  w[10][5] = 1.5;                              // an outlier inside a row
  for (const char* method : {"minmax", "percentile"})
    for (int bits = 2; bits <= 8; ++bits) {
      SCOPED_TRACE(std::string(method) + " " + std::to_string(bits) + " bits");
      WeightQuant q = quantize_weight(w, bits, method);
      const double lo = -double(1 << (bits - 1)), hi = double(1 << (bits - 1)) - 1;
      ASSERT_EQ(q.bits, bits);
      ASSERT_EQ(q.codes.sizes(), w.sizes());
      ASSERT_EQ(q.scale.size(0), w.size(0));
      ASSERT_EQ(q.zero.size(0), w.size(0));
      EXPECT_TRUE(torch::equal(q.codes, q.codes.round())) << "codes are integers";
      EXPECT_TRUE(torch::equal(q.zero, q.zero.round())) << "zero points are integers";
      EXPECT_GE(q.codes.min().item<double>(), lo);
      EXPECT_LE(q.codes.max().item<double>(), hi);
      EXPECT_GE(q.zero.min().item<double>(), lo);
      EXPECT_LE(q.zero.max().item<double>(), hi);
      EXPECT_GT(q.scale.min().item<double>(), 0.0);
      // Inside each row's representable range the error is at most half a step.
      torch::Tensor s = q.scale.unsqueeze(1), z = q.zero.unsqueeze(1);
      torch::Tensor rlo = s * (lo - z), rhi = s * (hi - z);
      torch::Tensor inside = (w >= rlo) & (w <= rhi);
      torch::Tensor err = (w - q.dequant()).abs();
      torch::Tensor excess = (err - s * (0.5 + 1e-4)).masked_select(inside);
      EXPECT_LE(excess.max().item<double>(), 0.0);
      if (std::string(method) == "minmax") {
        // minmax covers the row up to the zero point's rounding: error <= one step.
        EXPECT_LE((err - s * (1.0 + 1e-4)).max().item<double>(), 0.0);
      }
    }
  EXPECT_THROW(quantize_weight(w, 1, "minmax"), UsageError);
  EXPECT_THROW(quantize_weight(w, 9, "minmax"), UsageError);
  EXPECT_THROW(quantize_weight(w, 4, "kmeans"), UsageError);
}

TEST(WeightQuant, GptqLowersOutputErrorOnCorrelatedInputs) {
  torch::manual_seed(41);
  const int64_t in = 64, out = 32;
  torch::Tensor A = torch::randn({in, in}) / 8.0 + torch::eye(in) * 0.3;   // random mixing
  torch::Tensor X = torch::matmul(torch::randn({2048, in}), A);
  torch::Tensor Xt = torch::matmul(torch::randn({2048, in}), A);          // held out
  torch::Tensor w = torch::randn({out, in}) * 0.1;
  auto err = [&](const WeightQuant& q, const torch::Tensor& x) {
    return torch::matmul(w - q.dequant(), x.t()).pow(2).sum().item<double>();
  };
  for (const char* method : {"percentile", "minmax"})
    for (int bits : {4, 3}) {
      SCOPED_TRACE(std::string(method) + " " + std::to_string(bits) + " bits");
      WeightQuant plain = quantize_weight(w, bits, method);
      WeightQuant g = quantize_weight_gptq(w, X, bits, method);
      const double lo = -double(1 << (bits - 1)), hi = double(1 << (bits - 1)) - 1;
      EXPECT_GE(g.codes.min().item<double>(), lo);
      EXPECT_LE(g.codes.max().item<double>(), hi);
      EXPECT_TRUE(torch::equal(g.codes, g.codes.round()));
      // GPTQ keeps the row quantizers of `method` and only changes the rounding.
      EXPECT_TRUE(torch::allclose(g.scale, plain.scale));
      EXPECT_TRUE(torch::equal(g.zero, plain.zero));
      EXPECT_LT(err(g, X), err(plain, X));
      EXPECT_LT(err(g, Xt), err(plain, Xt));
    }
  // Dead inputs (a column of X always 0) are handled: no NaN, codes still in range.
  torch::Tensor Xd = X.clone();
  Xd.select(1, 7).zero_();
  WeightQuant g = quantize_weight_gptq(w, Xd, 4, "percentile");
  EXPECT_TRUE(torch::isfinite(g.dequant()).all().item<bool>());
  EXPECT_TRUE(torch::isfinite(quantize_weight_gptq(w, Xd, 4, "percentile", 0.01, true).dequant()).all().item<bool>());
}

// act-order: the columns are visited by decreasing input energy and the codes come back in the
// original order. With a few high-energy input channels (outlier features) it beats the plain
// column order; with inputs of equal energy in index order it is the plain order exactly.
TEST(WeightQuant, GptqActOrderHelpsWithOutlierInputChannels) {
  torch::manual_seed(43);
  const int64_t in = 64, out = 32;
  torch::Tensor A = torch::randn({in, in}) / 8.0 + torch::eye(in) * 0.3;
  torch::Tensor gain = torch::ones({in});
  for (int64_t c : {5, 22, 40, 61}) gain[c] = 12.0;   // outlier features, not the first columns
  torch::Tensor X = torch::matmul(torch::randn({2048, in}), A) * gain;
  torch::Tensor Xt = torch::matmul(torch::randn({2048, in}), A) * gain;
  torch::Tensor w = torch::randn({out, in}) * 0.1;
  auto err = [&](const WeightQuant& q, const torch::Tensor& x) {
    return torch::matmul(w - q.dequant(), x.t()).pow(2).sum().item<double>();
  };
  for (int bits : {4, 3}) {
    SCOPED_TRACE(std::to_string(bits) + " bits");
    const WeightQuant rtn = quantize_weight(w, bits, "percentile");
    const WeightQuant plain = quantize_weight_gptq(w, X, bits, "percentile");
    const WeightQuant ao = quantize_weight_gptq(w, X, bits, "percentile", 0.01, true);
    EXPECT_TRUE(torch::equal(ao.scale, plain.scale));   // same row quantizers
    EXPECT_TRUE(torch::equal(ao.codes, quantize_weight_gptq(w, X, bits, "percentile", 0.01, true).codes));  // deterministic
    std::printf("  %d bits: output error RTN %.4g, GPTQ %.4g, GPTQ act-order %.4g (held out)\n", bits, err(rtn, Xt),
                err(plain, Xt), err(ao, Xt));
    EXPECT_LT(err(ao, X), err(plain, X));
    EXPECT_LT(err(ao, Xt), err(plain, Xt));
  }
  // Equal-energy inputs already in decreasing order: act-order is the identity permutation.
  torch::Tensor Xs = torch::randn({4096, in});
  Xs = Xs / Xs.norm(2, 0, true) * torch::linspace(2.0, 1.0, in) * 64.0;   // column norms strictly decreasing
  EXPECT_TRUE(torch::equal(quantize_weight_gptq(w, Xs, 4, "percentile", 0.01, true).codes,
                           quantize_weight_gptq(w, Xs, 4, "percentile").codes));
}

// The simulated engine's error-feedback rounding (ef_fake_quant) gives the executor's codes
// (VitRowOps::ef_quant_rows) bit for bit, with and without a level table: the same float32
// operations in the same order.
TEST(ErrorFeedback, SimulatedEqualsExecutorRowOp) {
  torch::manual_seed(5);
  const int64_t M = 37;
  for (int64_t n : {1, 9, 64, 130}) {
    QLinear l;
    l.out = 20;
    l.in = n;
    l.wbits = 4;
    torch::Tensor wc = torch::randint(-8, 8, {20, n}, torch::kInt32);
    for (int64_t i = 0; i < 20 * n; ++i) l.w.push_back(int8_t(wc.data_ptr<int32_t>()[i]));
    l.w_zero.assign(20, 1);
    l.w_scale.assign(20, 0.05f);
    l.bias.assign(20, 0.0f);
    l.ef_damp = 0.01f;
    const std::vector<float> g = ef_gains(l);
    torch::Tensor gt = torch::from_blob(const_cast<float*>(g.data()), {n, n}, torch::kFloat32);
    torch::Tensor x = torch::randn({M, n}) * 2.0;
    x[0][0] = std::numeric_limits<float>::quiet_NaN();
    for (int with_lut = 0; with_lut < 2; ++with_lut) {
      ActQuant a{with_lut ? 8 : 4, with_lut ? 0.03f : 0.4f, with_lut ? 128 : 8, {}};
      if (with_lut)
        for (int c = 0; c < 256; ++c) a.lut.push_back(uint8_t(c & ~15));
      const torch::Tensor sim = ef_fake_quant(x, gt, a);
      const QuantParams qp = quant_params(a);
      for (int64_t r = 0; r < M; ++r) {
        std::vector<float> t(x[r].data_ptr<float>(), x[r].data_ptr<float>() + n);
        std::vector<uint8_t> codes(static_cast<size_t>(n));
        vit_row_ops_ref().ef_quant_rows(t.data(), n, 1, int(n), g.data(), qp, a.lut.empty() ? nullptr : a.lut.data(), codes.data(), n);
        for (int64_t j = 0; j < n; ++j)
          ASSERT_EQ(sim[r][j].item<float>(), (float(codes[size_t(j)]) - float(a.zero)) * a.scale)
              << "n " << n << " row " << r << " col " << j << " lut " << with_lut;
      }
    }
  }
}
