#include "calib/evaluate.h"

#include <algorithm>
#include <chrono>
#include <numeric>

#include "calib/progress.h"
#include "kernels/error.h"

namespace reparq {

EvalResult evaluate(const ImageSet& set, int64_t limit, int64_t batch, int64_t classes,
                    const LogitsFn& fn, const std::string& label, bool keep_logits) {
  if (set.count <= 0) throw InputError(label + ": the image set is empty");
  if (batch <= 0) throw UsageError("batch size must be positive");
  int64_t n = limit > 0 ? std::min(limit, set.count) : set.count;
  EvalResult r;
  r.count = n;
  r.predictions.resize(n);
  if (keep_logits) r.logits.resize(n * classes);
  std::vector<float> lg(batch * classes);
  std::vector<int> order(classes);
  Progress prog(label, n, "images");
  auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < n; i += batch) {
    int64_t b = std::min(batch, n - i);
    fn(set.image(i), b, lg.data());
    for (int64_t j = 0; j < b; ++j) {
      const float* l = lg.data() + j * classes;
      std::iota(order.begin(), order.end(), 0);
      // Ties go to the lower class index, so every engine ranks identically.
      std::stable_sort(order.begin(), order.end(), [&](int a, int c) { return l[a] > l[c]; });
      int label_ = set.labels[i + j];
      r.predictions[i + j] = order[0];
      if (order[0] == label_) ++r.top1;
      for (int k = 0; k < std::min<int64_t>(5, classes); ++k)
        if (order[k] == label_) ++r.top5;
      if (keep_logits) std::copy(l, l + classes, r.logits.begin() + (i + j) * classes);
    }
    prog.update(i + b);
  }
  prog.finish();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace reparq
