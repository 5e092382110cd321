// plots.h: the SVG plots of `reparq plot` (cmd_plot.cpp), also drawn by `reparq demo`.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "calib/data.h"
#include "calib/vit.h"
#include "kernels/qmodel.h"

namespace reparq {

// DIR/ranges.svg (per-channel ranges of block `block`'s norm1 output, FP32 vs re-parameterized,
// with the layer-wise quantizer band) and DIR/softmax.svg (that block's post-Softmax histogram
// with the log2 / log-sqrt2 / TanQ levels), on the calibration images recorded in q's
// metadata (32 seeded training images when there are none). Returns the files written.
std::vector<std::string> write_model_plots(const Vit& fp, const QuantModel& q, const ImageSet& train,
                                           const std::string& dir, int block = 0);
// DIR/accuracy.svg from results in the `reparq ablate --json-out` schema (reparq-ablation-1);
// `source` names them in errors (InputError). Returns the file written.
std::string write_accuracy_plot(const nlohmann::json& results, const std::string& source, const std::string& dir);

}  // namespace reparq
