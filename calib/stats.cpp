// stats.cpp: streaming calibration statistics (see stats.h).
#include "calib/stats.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>

#include "kernels/error.h"

namespace reparq {

namespace {

constexpr int kLog2BinsPerOctave = 4;
constexpr int kLog2Bins = 32 * kLog2BinsPerOctave;   // -log2(a) in [0, 32); the last bin takes the rest

bool is_post_ln(Site s) { return s == Site::Norm1Out || s == Site::Norm2Out || s == Site::NormOut; }
// Sites whose last dimension is a feature (channel) dimension: the Linear inputs and outputs.
bool has_channels(Site s) {
  switch (s) {
    case Site::PatchIn: case Site::Q: case Site::K: case Site::V: case Site::Attn: return false;
    default: return true;
  }
}

std::string site_full_name(int block, Site s) {
  return block < 0 ? std::string(site_name(s)) : "blocks." + std::to_string(block) + "." + site_name(s);
}

// The running state of one site.
struct Acc {
  SiteStats out;
  int64_t C = 1;
  double sum = 0, sumsq = 0;
  torch::Tensor cmin, cmax, csum, csumsq;   // [C] float / double (per-channel sites)
  torch::Tensor hist;                       // [bins] int64 (tensor-wide, pass 2)
  torch::Tensor chist;                      // [C * bins] int64 (post-LN, pass 2)
  torch::Tensor lhist;                      // [kLog2Bins] int64 (attn, pass 1)

  size_t bytes() const {
    size_t b = sizeof(*this);
    for (const torch::Tensor* t : {&cmin, &cmax, &csum, &csumsq, &hist, &chist, &lhist})
      if (t->defined()) b += t->nbytes();
    return b;
  }
};

// Bin index of each value of x [R, C] on per-channel ranges lo/hi [C] (or scalars), clamped.
torch::Tensor bin_index(const torch::Tensor& x, const torch::Tensor& lo, const torch::Tensor& hi, int bins) {
  torch::Tensor width = ((hi - lo) / bins).clamp_min(std::numeric_limits<float>::min());
  return ((x - lo) / width).floor().clamp(0, bins - 1).to(torch::kLong);
}

// The q-quantile (q in [0, 1]) of values binned in h[0..bins) over [lo, hi], interpolated.
float hist_quantile(const int64_t* h, int bins, double lo, double hi, double q) {
  int64_t n = 0;
  for (int k = 0; k < bins; ++k) n += h[k];
  if (n == 0) return static_cast<float>(lo);
  const double rank = q * static_cast<double>(n);
  const double w = (hi - lo) / bins;
  int64_t cum = 0;
  for (int k = 0; k < bins; ++k) {
    if (h[k] > 0 && static_cast<double>(cum + h[k]) >= rank) {
      const double f = std::clamp((rank - static_cast<double>(cum)) / static_cast<double>(h[k]), 0.0, 1.0);
      return static_cast<float>(std::clamp(lo + (k + f) * w, lo, hi));
    }
    cum += h[k];
  }
  return static_cast<float>(hi);
}

std::vector<float> to_floats(const torch::Tensor& t) {
  torch::Tensor c = t.to(torch::kFloat32).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}
std::vector<double> to_doubles(const torch::Tensor& t) {
  torch::Tensor c = t.to(torch::kFloat64).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

}  // namespace

double SiteStats::frac_below(double a) const {
  if (log2_hist.empty() || count == 0 || !(a > 0)) return 0.0;
  // Bins wholly below a: -log2(v) >= -log2(a) on their lower edge.
  const double t = -std::log2(a) * kLog2BinsPerOctave;
  const int first = static_cast<int>(std::ceil(t - 1e-9));
  int64_t n = 0;
  for (int k = std::max(first, 0); k < static_cast<int>(log2_hist.size()); ++k) n += log2_hist[k];
  return static_cast<double>(n) / static_cast<double>(count);
}

const SiteStats& CalibStats::find(const std::string& name) const {
  for (const SiteStats& s : sites)
    if (s.name == name) return s;
  throw UsageError("no calibration statistics for site '" + name + "'");
}

void StatsOptions::validate() const {
  if (batch < 1) throw UsageError("--batch must be >= 1");
  if (bins < 2 || bins > (1 << 16)) throw UsageError("--bins must be in 2..65536");
  if (!(percentile > 50.0 && percentile <= 100.0)) throw UsageError("--percentile must be in (50, 100]");
}

CalibStats collect_calib_stats(const Vit& model, const ImageSet& data, const std::vector<int64_t>& ids,
                               const StatsOptions& opt) {
  opt.validate();
  if (ids.empty()) throw UsageError("calibration needs at least one image");
  const VitConfig& cfg = model.config();
  if (data.rows != cfg.image_size || data.cols != cfg.image_size)
    throw UsageError("data set images are " + std::to_string(data.rows) + "x" + std::to_string(data.cols) +
                     ", the model expects " + std::to_string(cfg.image_size) + "x" + std::to_string(cfg.image_size));
  for (int64_t id : ids)
    if (id < 0 || id >= data.count) throw UsageError("calibration image index " + std::to_string(id) + " out of range");

  torch::NoGradGuard ng;
  std::vector<Acc> accs;
  std::map<std::pair<int, int>, size_t> index;   // (block, site) -> accs position
  const int bins = opt.bins;

  auto batch_images = [&](size_t i0, size_t i1) {
    torch::Tensor t = torch::empty({static_cast<int64_t>(i1 - i0), data.rows, data.cols}, torch::kUInt8);
    const int64_t px = data.rows * data.cols;
    for (size_t i = i0; i < i1; ++i) std::copy_n(data.image(ids[i]), px, t.data_ptr<uint8_t>() + (i - i0) * px);
    return t;
  };

  // Pass 1: ranges, sums, the attention histogram.
  auto pass1 = [&](int block, Site site, const torch::Tensor& x) {
    const auto key = std::make_pair(block, static_cast<int>(site));
    auto it = index.find(key);
    if (it == index.end()) {
      Acc a;
      a.out.block = block;
      a.out.site = site;
      a.out.name = site_full_name(block, site);
      a.out.shape = x.sizes().vec();
      a.out.shape.erase(a.out.shape.begin());
      a.out.min = std::numeric_limits<float>::infinity();
      a.out.max = -std::numeric_limits<float>::infinity();
      if (has_channels(site)) {
        a.C = x.size(-1);
        a.cmin = torch::full({a.C}, std::numeric_limits<float>::infinity());
        a.cmax = torch::full({a.C}, -std::numeric_limits<float>::infinity());
        a.csum = torch::zeros({a.C}, torch::kFloat64);
        a.csumsq = torch::zeros({a.C}, torch::kFloat64);
      }
      if (site == Site::Attn) a.lhist = torch::zeros({kLog2Bins}, torch::kLong);
      it = index.emplace(key, accs.size()).first;
      accs.push_back(std::move(a));
    }
    Acc& a = accs[it->second];
    // min and max propagate NaN: one check covers NaN and infinities.
    const float mn = x.min().item<float>(), mx = x.max().item<float>();
    if (!std::isfinite(mn) || !std::isfinite(mx))
      throw InputError("the float model produces NaN or infinity at " + a.out.name);
    const torch::Tensor xd = x.to(torch::kFloat64);
    a.out.count += x.numel();
    a.out.min = std::min(a.out.min, mn);
    a.out.max = std::max(a.out.max, mx);
    a.sum += xd.sum().item<double>();
    a.sumsq += xd.square().sum().item<double>();
    if (has_channels(site)) {
      const torch::Tensor x2 = x.reshape({-1, a.C}), d2 = xd.reshape({-1, a.C});
      a.cmin = torch::minimum(a.cmin, std::get<0>(x2.min(0)));
      a.cmax = torch::maximum(a.cmax, std::get<0>(x2.max(0)));
      a.csum += d2.sum(0);
      a.csumsq += d2.square().sum(0);
    }
    if (site == Site::Attn) {
      // -log2(a) * 4, floor; zeros give +inf and land in the last bin with everything below 2^-32.
      torch::Tensor k = (-torch::log2(x.to(torch::kFloat64)) * kLog2BinsPerOctave).floor().clamp(0, kLog2Bins - 1).to(torch::kLong);
      a.lhist += torch::bincount(k.reshape({-1}), {}, kLog2Bins);
    }
    return x;
  };
  // Pass 2: histograms on pass 1's ranges.
  auto pass2 = [&](int block, Site site, const torch::Tensor& x) {
    Acc& a = accs[index.at({block, static_cast<int>(site)})];
    if (!a.hist.defined()) a.hist = torch::zeros({bins}, torch::kLong);
    const torch::Tensor lo = torch::tensor(a.out.min), hi = torch::tensor(a.out.max);
    a.hist += torch::bincount(bin_index(x.reshape({-1}), lo, hi, bins), {}, bins);
    if (is_post_ln(site)) {
      if (!a.chist.defined()) a.chist = torch::zeros({a.C * bins}, torch::kLong);
      const torch::Tensor idx = bin_index(x.reshape({-1, a.C}), a.cmin, a.cmax, bins) +
                                torch::arange(a.C, torch::kLong).mul(bins);
      a.chist += torch::bincount(idx.reshape({-1}), {}, a.C * bins);
    }
    return x;
  };

  for (int pass = 1; pass <= 2; ++pass)
    for (size_t i0 = 0; i0 < ids.size(); i0 += static_cast<size_t>(opt.batch)) {
      const size_t i1 = std::min(ids.size(), i0 + static_cast<size_t>(opt.batch));
      const torch::Tensor imgs = batch_images(i0, i1);
      if (pass == 1) model.forward(imgs, pass1);
      else model.forward(imgs, pass2);
    }

  CalibStats cs;
  cs.images = static_cast<int64_t>(ids.size());
  cs.options = opt;
  const double plo = (100.0 - opt.percentile) / 100.0, phi = opt.percentile / 100.0;
  for (Acc& a : accs) {
    cs.accumulator_bytes += a.bytes();
    SiteStats s = std::move(a.out);
    const double n = static_cast<double>(s.count);
    s.mean = a.sum / n;
    s.std = std::sqrt(std::max(0.0, a.sumsq / n - s.mean * s.mean));
    const torch::Tensor h = a.hist.contiguous();
    s.p_lo = hist_quantile(h.data_ptr<int64_t>(), bins, s.min, s.max, plo);
    s.p_hi = hist_quantile(h.data_ptr<int64_t>(), bins, s.min, s.max, phi);
    if (a.cmin.defined()) {
      ChannelStats& c = s.channels;
      c.min = to_floats(a.cmin);
      c.max = to_floats(a.cmax);
      const double per = n / static_cast<double>(a.C);
      const torch::Tensor mean = a.csum / per;
      c.mean = to_doubles(mean);
      c.std = to_doubles((a.csumsq / per - mean.square()).clamp_min(0).sqrt());
      if (a.chist.defined()) {
        const torch::Tensor ch = a.chist.contiguous();
        for (int64_t j = 0; j < a.C; ++j) {
          const int64_t* hj = ch.data_ptr<int64_t>() + j * bins;
          c.p_lo.push_back(hist_quantile(hj, bins, c.min[j], c.max[j], plo));
          c.p_hi.push_back(hist_quantile(hj, bins, c.min[j], c.max[j], phi));
        }
      }
      std::vector<double> range(c.min.size());
      for (size_t j = 0; j < range.size(); ++j) range[j] = static_cast<double>(c.max[j]) - c.min[j];
      std::vector<double> sorted = range;
      std::nth_element(sorted.begin(), sorted.begin() + sorted.size() / 2, sorted.end());
      const double med = sorted[sorted.size() / 2];
      s.channel_range_ratio = med > 0 ? *std::max_element(range.begin(), range.end()) / med : 0.0;
    }
    if (a.lhist.defined()) {
      const torch::Tensor lh = a.lhist.contiguous();
      s.log2_hist.assign(lh.data_ptr<int64_t>(), lh.data_ptr<int64_t>() + lh.numel());
    }
    cs.sites.push_back(std::move(s));
  }
  return cs;
}

std::string CalibStats::to_json() const {
  nlohmann::json j;
  j["format"] = "reparq-calib-stats-1";
  j["model"] = model;
  j["images"] = images;
  j["seed"] = seed;
  j["batch"] = options.batch;
  j["bins"] = options.bins;
  j["percentile"] = options.percentile;
  j["accumulator_bytes"] = accumulator_bytes;
  j["sites"] = nlohmann::json::array();
  for (const SiteStats& s : sites) {
    nlohmann::json o;
    o["name"] = s.name;
    o["shape"] = s.shape;
    o["count"] = s.count;
    o["min"] = s.min;
    o["max"] = s.max;
    o["mean"] = s.mean;
    o["std"] = s.std;
    o["p_lo"] = s.p_lo;
    o["p_hi"] = s.p_hi;
    if (!s.channels.min.empty()) {
      nlohmann::json c;
      c["min"] = s.channels.min;
      c["max"] = s.channels.max;
      c["mean"] = s.channels.mean;
      c["std"] = s.channels.std;
      if (!s.channels.p_lo.empty()) {
        c["p_lo"] = s.channels.p_lo;
        c["p_hi"] = s.channels.p_hi;
      }
      o["channels"] = c;
      o["channel_range_ratio"] = s.channel_range_ratio;
    }
    if (!s.log2_hist.empty()) {
      o["neg_log2_hist"] = s.log2_hist;
      o["neg_log2_bins_per_octave"] = kLog2BinsPerOctave;
    }
    j["sites"].push_back(o);
  }
  return j.dump(1);
}

std::string CalibStats::to_markdown() const {
  std::string md;
  char b[512];
  std::snprintf(b, sizeof b, "| site | shape | min | max | mean | std | p%g | p%g | channel range ratio |\n|---|---|---|---|---|---|---|---|---|\n",
                100.0 - options.percentile, options.percentile);
  md += b;
  for (const SiteStats& s : sites) {
    if (s.site == Site::Attn) continue;
    std::string shape;
    for (size_t i = 0; i < s.shape.size(); ++i) shape += (i ? "x" : "") + std::to_string(s.shape[i]);
    std::string ratio = s.channels.min.empty() ? "" : (std::snprintf(b, sizeof b, "%.1f", s.channel_range_ratio), std::string(b));
    std::snprintf(b, sizeof b, "| %s | %s | %.4g | %.4g | %.4g | %.4g | %.4g | %.4g | %s |\n", s.name.c_str(), shape.c_str(),
                  s.min, s.max, s.mean, s.std, s.p_lo, s.p_hi, ratio.c_str());
    md += b;
  }
  md += "\nPost-Softmax attention: fraction of values below 2^-k (a 4-bit uniform quantizer's step is 1/15; "
        "log2 at b bits has 2^b - 1 octaves).\n\n| site | max | < 2^-4 | < 2^-8 | < 2^-16 |\n|---|---|---|---|---|\n";
  for (const SiteStats& s : sites) {
    if (s.site != Site::Attn) continue;
    std::snprintf(b, sizeof b, "| %s | %.4g | %.3f | %.3f | %.3f |\n", s.name.c_str(), s.max, s.frac_below(1.0 / 16),
                  s.frac_below(1.0 / 256), s.frac_below(1.0 / 65536));
    md += b;
  }
  return md;
}

}  // namespace reparq
