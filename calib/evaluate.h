// evaluate.h: accuracy of any classifier over an image set, batched, with progress.
// Torch-free: the float model, the simulated quantized model and the integer executor all
// evaluate through it.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "calib/data.h"

namespace reparq {

struct EvalResult {
  int64_t count = 0, top1 = 0, top5 = 0;
  double seconds = 0;
  std::vector<int32_t> predictions;   // top-1 class per image
  std::vector<float> logits;          // count x classes (kept when asked for)
  double top1_pct() const { return count ? 100.0 * double(top1) / double(count) : 0; }
  double top5_pct() const { return count ? 100.0 * double(top5) / double(count) : 0; }
  double images_per_second() const { return seconds > 0 ? double(count) / seconds : 0; }
};

// Computes logits for `batch` images given as uint8 pixels (batch x rows x cols, row-major)
// into `logits` (batch x classes).
using LogitsFn = std::function<void(const uint8_t* pixels, int64_t batch, float* logits)>;

// Evaluates the first `limit` images (all when limit <= 0) in batches of `batch`.
EvalResult evaluate(const ImageSet& set, int64_t limit, int64_t batch, int64_t classes,
                    const LogitsFn& fn, const std::string& label, bool keep_logits = false);

}  // namespace reparq
