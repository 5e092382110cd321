// stats.h: streaming calibration statistics (`reparq calibrate`).
//
// Runs N calibration images through the float model in batches and keeps, at every site of
// calib/vit.h, only running accumulators, so memory depends on the model and the options,
// never on N (CalibStats::accumulator_bytes says how much; tests/calib/test_stats.cpp checks
// that it does not move with N and that the batch size does not change any figure):
//   - every site: min, max, mean, std and percentiles over all its values; per channel (the
//     last dimension) min, max, mean and std where that dimension is a feature dimension
//     (every Linear input and output, patch embedding and head included);
//   - post-LayerNorm sites (norm1_out, norm2_out, norm_out): per-channel percentiles too;
//   - post-Softmax (attn): a histogram of -log2(a) in quarter-octave bins, from which the
//     fraction of attention values each log2 / uniform quantizer rounds to zero follows.
// Pass 1 collects the ranges, pass 2 the histograms on those ranges (the float forward runs
// twice); a percentile is exact to within one histogram bin ((max - min) / bins), linearly
// interpolated inside it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "calib/data.h"
#include "calib/vit.h"

namespace reparq {

struct StatsOptions {
  int64_t batch = 16;     // images per forward pass
  int bins = 512;         // histogram bins (per channel at post-LN sites, per tensor elsewhere)
  double percentile = 99.9;  // reported: (100 - p) and p
  // UsageError naming the flag (--batch, --bins, --percentile) of an impossible value.
  void validate() const;
};

struct ChannelStats {
  std::vector<float> min, max;
  std::vector<double> mean, std;
  std::vector<float> p_lo, p_hi;   // post-LayerNorm sites only (else empty)
};

struct SiteStats {
  int block = -1;           // -1 outside blocks
  Site site = Site::PatchIn;
  std::string name;         // "blocks.3.norm1_out", "norm_out", ...
  std::vector<int64_t> shape;  // one image's shape at the site (batch dimension dropped)
  int64_t count = 0;        // values seen (all images)
  float min = 0, max = 0;
  double mean = 0, std = 0;
  float p_lo = 0, p_hi = 0;
  ChannelStats channels;    // empty unless the last dimension is a feature dimension
  // max over channels of (max_c - min_c) / the median of it: how far the widest channel
  // stands out (ImageNet DeiTs reach ~33x at post-LN sites). 0 without channel statistics.
  double channel_range_ratio = 0;
  // attn only: hist[k] counts values with -log2(a) in [k/4, (k+1)/4); the last bin also takes
  // smaller values and exact zeros.
  std::vector<int64_t> log2_hist;
  double frac_below(double a) const;   // attn only: fraction of values < a (from log2_hist)
};

struct CalibStats {
  std::string model;
  int64_t images = 0;
  uint64_t seed = 0;
  StatsOptions options;
  std::vector<SiteStats> sites;       // in forward order
  size_t accumulator_bytes = 0;       // running state kept while streaming (not the model or data)

  const SiteStats& find(const std::string& name) const;   // throws UsageError if absent
  std::string to_json() const;
  std::string to_markdown() const;    // one table for all sites + the attention table
};

// Streams `ids` of `data` through `model`. Throws UsageError on bad options (batch < 1,
// bins < 2, percentile outside (50, 100]) or empty ids; InputError if the model produces a
// NaN or infinity at some site (named).
CalibStats collect_calib_stats(const Vit& model, const ImageSet& data, const std::vector<int64_t>& ids,
                               const StatsOptions& opt);

}  // namespace reparq
