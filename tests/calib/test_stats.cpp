// Tests of the streaming calibration statistics (calib/stats.h): the figures do not depend on
// the batch size, agree with the same statistics computed on all activations held in memory,
// and the running state does not grow with the number of images.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <random>
#include <vector>

#include "calib/data.h"
#include "calib/stats.h"
#include "calib/vit.h"
#include "kernels/error.h"

using namespace reparq;

namespace {

Vit small_vit() {
  VitConfig c;
  c.image_size = 28;
  c.patch = 7;
  c.dim = 24;
  c.depth = 2;
  c.heads = 2;
  c.mlp_hidden = 48;
  torch::manual_seed(3);
  return Vit(c);
}

ImageSet random_images(int64_t n) {
  ImageSet s;
  s.count = n;
  s.rows = s.cols = 28;
  s.pixels.resize(static_cast<size_t>(n * 28 * 28));
  s.labels.assign(static_cast<size_t>(n), 0);
  std::mt19937 rng(7);
  for (auto& p : s.pixels) p = static_cast<uint8_t>(rng() & 255);
  return s;
}

std::vector<int64_t> first(int64_t n) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = i;
  return v;
}

// Every activation of `site` in `block` for the given images, in one tensor.
torch::Tensor capture_all(const Vit& m, const ImageSet& d, int64_t n, int block, Site site) {
  torch::Tensor imgs = torch::from_blob(const_cast<uint8_t*>(d.pixels.data()), {n, 28, 28}, torch::kUInt8).clone();
  torch::Tensor got;
  torch::NoGradGuard ng;
  m.forward(imgs, [&](int b, Site s, const torch::Tensor& x) {
    if (b == block && s == site) got = x.detach().clone();
    return x;
  });
  return got;
}

}  // namespace

// Float rounding of the activations themselves: OpenBLAS may pick another micro-kernel for the
// last rows of a GEMM, so with a forced core type (OPENBLAS_CORETYPE=Haswell on an AVX-512 CPU,
// docs/RESULTS.md "Session 13") an image's activations can differ in their last bits between
// batch sizes. The statistics must then agree to that rounding; the counts exactly.
constexpr double kActRel = 1e-5;
bool near_act(double a, double b, double slack = 0) { return std::fabs(a - b) <= kActRel * (1 + std::fabs(b)) + slack; }
void expect_close(const std::vector<float>& a, const std::vector<float>& b, const std::vector<float>& slack,
                  const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t c = 0; c < a.size(); ++c)
    EXPECT_TRUE(near_act(a[c], b[c], slack.empty() ? 0.0 : slack[c])) << what << "[" << c << "]: " << a[c] << " vs " << b[c];
}

TEST(CalibStats, BatchSizeDoesNotChangeAnyFigure) {
  const Vit m = small_vit();
  const ImageSet d = random_images(23);
  StatsOptions o1, o2;
  o1.batch = 4;     // 6 batches, the last one of 3
  o2.batch = 23;    // one batch
  const CalibStats a = collect_calib_stats(m, d, first(23), o1), b = collect_calib_stats(m, d, first(23), o2);
  ASSERT_EQ(a.sites.size(), b.sites.size());
  // patch_in, patch_out, 2 blocks x 12 sites, norm_out, head_out
  EXPECT_EQ(a.sites.size(), 2u + 2u * 12u + 2u);
  for (size_t i = 0; i < a.sites.size(); ++i) {
    const SiteStats &x = a.sites[i], &y = b.sites[i];
    SCOPED_TRACE(x.name);
    EXPECT_EQ(x.name, y.name);
    EXPECT_EQ(x.count, y.count);
    EXPECT_TRUE(near_act(x.min, y.min)) << x.min << " vs " << y.min;
    EXPECT_TRUE(near_act(x.max, y.max)) << x.max << " vs " << y.max;
    // A percentile is exact to within one histogram bin; a value that moves across a bin edge
    // moves it by at most one bin.
    const double bin = (double(y.max) - y.min) / o1.bins;
    EXPECT_TRUE(near_act(x.p_lo, y.p_lo, bin)) << x.p_lo << " vs " << y.p_lo;
    EXPECT_TRUE(near_act(x.p_hi, y.p_hi, bin)) << x.p_hi << " vs " << y.p_hi;
    EXPECT_NEAR(x.mean, y.mean, kActRel * (1 + std::fabs(y.mean)));
    EXPECT_NEAR(x.std, y.std, kActRel * (1 + y.std));
    expect_close(x.channels.min, y.channels.min, {}, "channel min");
    expect_close(x.channels.max, y.channels.max, {}, "channel max");
    std::vector<float> cbin(y.channels.min.size());
    for (size_t c = 0; c < cbin.size(); ++c) cbin[c] = float((double(y.channels.max[c]) - y.channels.min[c]) / o1.bins);
    expect_close(x.channels.p_lo, y.channels.p_lo, cbin, "channel p_lo");
    expect_close(x.channels.p_hi, y.channels.p_hi, cbin, "channel p_hi");
    // Post-Softmax log2 histogram: the same total; at most a few values per thousand change bin.
    ASSERT_EQ(x.log2_hist.size(), y.log2_hist.size());
    int64_t tx = 0, ty = 0, moved = 0;
    for (size_t k = 0; k < x.log2_hist.size(); ++k) {
      tx += int64_t(x.log2_hist[k]);
      ty += int64_t(y.log2_hist[k]);
      moved += std::llabs(int64_t(x.log2_hist[k]) - int64_t(y.log2_hist[k]));
    }
    EXPECT_EQ(tx, ty);
    EXPECT_LE(moved, 2 + ty / 1000) << "log2 histogram entries moved";
  }
}

TEST(CalibStats, AgreesWithStatisticsOfAllActivationsInMemory) {
  const Vit m = small_vit();
  const int64_t n = 20;
  const ImageSet d = random_images(n);
  StatsOptions o;
  o.batch = 6;
  o.bins = 256;
  o.percentile = 99.0;
  const CalibStats cs = collect_calib_stats(m, d, first(n), o);

  // Post-LayerNorm, per channel.
  const torch::Tensor x = capture_all(m, d, n, 1, Site::Norm2Out);
  const int64_t C = x.size(-1);
  const torch::Tensor x2 = x.reshape({-1, C});
  const SiteStats& s = cs.find("blocks.1.norm2_out");
  EXPECT_EQ(s.count, x.numel());
  ASSERT_EQ(static_cast<int64_t>(s.channels.min.size()), C);
  ASSERT_EQ(static_cast<int64_t>(s.channels.p_hi.size()), C);
  // (the in-memory capture runs all images as one batch: see kActRel)
  EXPECT_TRUE(near_act(s.min, x.min().item<float>()));
  EXPECT_TRUE(near_act(s.max, x.max().item<float>()));
  EXPECT_NEAR(s.mean, x.to(torch::kFloat64).mean().item<double>(), kActRel * 1e-2);
  EXPECT_NEAR(s.std, x.to(torch::kFloat64).std(/*unbiased=*/false).item<double>(), 1e-6);
  const int64_t rows = x2.size(0);
  for (int64_t c = 0; c < C; ++c) {
    const torch::Tensor col = std::get<0>(x2.select(1, c).sort());
    const float* v = col.data_ptr<float>();
    EXPECT_TRUE(near_act(s.channels.min[c], v[0])) << "channel " << c;
    EXPECT_TRUE(near_act(s.channels.max[c], v[rows - 1])) << "channel " << c;
    EXPECT_NEAR(s.channels.mean[c], col.to(torch::kFloat64).mean().item<double>(), kActRel * 1e-2);
    // A histogram percentile lies between the order statistics around its rank, within one bin.
    const double w = (double(v[rows - 1]) - v[0]) / o.bins;
    for (auto [q, got] : {std::pair<double, float>{0.99, s.channels.p_hi[c]}, {0.01, s.channels.p_lo[c]}}) {
      const double r = q * rows;
      const int64_t lo = std::max<int64_t>(0, int64_t(std::floor(r)) - 1), hi = std::min<int64_t>(rows - 1, int64_t(std::ceil(r)));
      EXPECT_GE(got, v[lo] - w - 1e-6) << "channel " << c << " q " << q;
      EXPECT_LE(got, v[hi] + w + 1e-6) << "channel " << c << " q " << q;
    }
  }
  // Tensor-wide percentile of a non-LN site.
  {
    const torch::Tensor f = std::get<0>(capture_all(m, d, n, 0, Site::Fc1Out).reshape({-1}).sort());
    const SiteStats& t = cs.find("blocks.0.fc1_out");
    const int64_t N = f.numel();
    const double w = (double(t.max) - t.min) / o.bins;
    const double r = 0.99 * N;
    EXPECT_GE(t.p_hi, f[std::max<int64_t>(0, int64_t(r) - 1)].item<float>() - w - 1e-6);
    EXPECT_LE(t.p_hi, f[std::min<int64_t>(N - 1, int64_t(std::ceil(r)))].item<float>() + w + 1e-6);
  }
  // Post-Softmax: fractions below powers of two.
  {
    const torch::Tensor a = capture_all(m, d, n, 0, Site::Attn);
    const SiteStats& t = cs.find("blocks.0.attn");
    for (double th : {1.0 / 4, 1.0 / 16, 1.0 / 256}) {
      const double direct = (a < th).to(torch::kFloat64).mean().item<double>();
      EXPECT_NEAR(t.frac_below(th), direct, 1e-12) << th;
    }
    EXPECT_GT(t.frac_below(1.0 / 4), 0.5);   // 17 tokens: most weights are small
  }
}

TEST(CalibStats, RunningStateDoesNotGrowWithTheImageCount) {
  const Vit m = small_vit();
  const ImageSet d = random_images(64);
  StatsOptions o;
  o.batch = 8;
  const CalibStats a = collect_calib_stats(m, d, first(8), o), b = collect_calib_stats(m, d, first(64), o);
  EXPECT_GT(a.accumulator_bytes, 0u);
  EXPECT_EQ(a.accumulator_bytes, b.accumulator_bytes);
  EXPECT_EQ(b.sites.front().count, 64 * 28 * 28);
  // More bins: more state (so the figure measures something).
  o.bins = 1024;
  EXPECT_GT(collect_calib_stats(m, d, first(8), o).accumulator_bytes, a.accumulator_bytes);
}

TEST(CalibStats, BadOptionsAndBadModels) {
  const Vit m = small_vit();
  const ImageSet d = random_images(4);
  StatsOptions o;
  o.batch = 0;
  EXPECT_THROW(collect_calib_stats(m, d, first(4), o), UsageError);
  o = StatsOptions{};
  o.bins = 1;
  EXPECT_THROW(collect_calib_stats(m, d, first(4), o), UsageError);
  o = StatsOptions{};
  o.percentile = 40;
  EXPECT_THROW(collect_calib_stats(m, d, first(4), o), UsageError);
  o = StatsOptions{};
  EXPECT_THROW(collect_calib_stats(m, d, {}, o), UsageError);
  EXPECT_THROW(collect_calib_stats(m, d, {0, 4}, o), UsageError);
  // A NaN weight: the error names the first site where it shows.
  Vit bad = small_vit();
  torch::NoGradGuard ng;
  bad.params().at("blocks.1.mlp.fc1.weight").index_put_({0, 0}, std::numeric_limits<float>::quiet_NaN());
  try {
    collect_calib_stats(bad, d, first(4), o);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("blocks.1.fc1_out"), std::string::npos) << e.what();
  }
}
