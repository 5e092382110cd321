// report.h: what quantization did to each site of a model, measured on calibration images.
//
// For every quantized Linear (its input quantizer and weights), every q/k/v quantizer and every
// post-Softmax quantizer, one row: quantizer kind and bits, a summary of its scales (the
// channel-wise scales behind a re-parameterized LayerNorm are recovered from the folded
// affine), the representable range and the share of values outside it, the SQNR of the
// quantizer alone (its input vs its quantize-dequantize) and the SQNR and cosine of the site's
// output in the quantized model against the FP32 model (cumulative error: everything upstream
// is quantized too). Torch-free header; the analysis runs the simulated model (quant/sim.h).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "calib/data.h"
#include "kernels/qmodel.h"

namespace reparq {

class Vit;

struct SiteRow {
  std::string site;          // "blocks.0.attn.qkv", "blocks.0.attn.softmax", "head", ...
  std::string quantizer;     // "dual-clip, re-parameterized (median)", "percentile", "logsqrt2", ...
  int abits = 0;             // bits of the quantized input (0: not quantized)
  int wbits = 0;             // weight bits (0: no weights)
  std::string scales;        // human summary of the input scale(s)
  std::string weight_scales; // per-output-channel weight scale range
  double lo = 0, hi = 0;     // representable input range [lo, hi] (0, 0 for post-Softmax)
  double clipped_pct = 0;    // share of input values outside [lo, hi] (percent)
  double sqnr_db = 0;        // quantizer alone: input vs its quantize-dequantize
  double out_sqnr_db = 0;    // site output, quantized model vs FP32
  double out_cosine = 0;
  std::string integer;       // how the executor runs it
};

struct SiteReport {
  int64_t images = 0;
  std::vector<int64_t> ids;  // training-set indices analysed
  std::vector<SiteRow> rows;
  std::string to_json() const;      // array of rows, one object each
  std::string to_markdown() const;  // a table
};

// Runs the FP32 model and the quantized model (simulated) on the training images `ids` and
// fills the table. `fp` must be the float model `q` was made from.
SiteReport analyze_sites(const Vit& fp, const QuantModel& q, const ImageSet& train,
                         const std::vector<int64_t>& ids);

// The calibration ids recorded in a quantized model's metadata ("calib.ids"); empty if absent.
// Throws InputError (without a file name: the caller adds it) on an entry that is not a
// non-negative integer.
std::vector<int64_t> calibration_ids_of(const QuantModel& q);

}  // namespace reparq
