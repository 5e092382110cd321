// cmd_quant.cpp: `reparq quantize`.
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "calib/data.h"
#include "calib/vit.h"
#include "kernels/error.h"
#include "kernels/qmodel.h"
#include "quant/pipeline.h"

namespace reparq {

namespace {

struct QuantArgs {
  CommonOptions c;
  std::string model, out, bits = "W4A4", method = "reparq";
  QuantizeOptions opt;
  std::string softmax, target, ln_quant, weights, act;
  int gptq = -1, exact_bias = -1, fold_head = -1, reparam = -1;
  int dual_clip_iters = -1;
};

int run_quantize(QuantArgs& a) {
  apply_common_options(a.c);
  int wb = 0, ab = 0;
  parse_bits(a.bits, &wb, &ab);
  Recipe r = Recipe::preset(a.method, wb, ab);
  if (!a.softmax.empty()) r.softmax = a.softmax;
  if (!a.target.empty()) r.target = a.target;
  if (!a.ln_quant.empty()) r.ln_quant = a.ln_quant;
  if (!a.weights.empty()) r.weights = a.weights;
  if (!a.act.empty()) r.act = a.act;
  if (a.gptq >= 0) r.gptq = a.gptq;
  if (a.exact_bias >= 0) r.exact_bias = a.exact_bias;
  if (a.fold_head >= 0) r.fold_head = a.fold_head;
  if (a.reparam >= 0) r.reparam = a.reparam;
  if (a.dual_clip_iters >= 0) r.dual_clip_iters = a.dual_clip_iters;
  Vit fp = Vit::load(a.model);
  ImageSet tr = load_fashion_mnist(data_dir(a.c.data_dir), true);
  torch::manual_seed(a.opt.seed);
  auto t0 = std::chrono::steady_clock::now();
  QuantModel q = quantize_model(fp, tr, r, a.opt);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  q.metadata["quantize.command"] = command_line();
  save_quant_model(q, a.out);
  if (a.c.json) {
    nlohmann::json j = {{"out", a.out}, {"seconds", secs}, {"recipe", nlohmann::json::parse(r.to_json())}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("wrote %s (%s, %s) in %.1f s\n", a.out.c_str(), a.method.c_str(), a.bits.c_str(), secs);
  }
  return 0;
}

}  // namespace

void add_quant_commands(CLI::App& app, CommandList& cmds) {
  static QuantArgs qa;
  auto* q = app.add_subcommand("quantize", "Calibrate a float model and write a quantized model file");
  q->footer("Example: reparq quantize models/vit6x128.safetensors -o out/vit6x128.w4a4.safetensors --bits W4A4 --method reparq --calib 32 --seed 0");
  add_common_options(q, qa.c);
  q->add_option("model", qa.model, "Float model (.safetensors, timm layout)")->required();
  q->add_option("-o,--out", qa.out, "Output quantized model (.safetensors)")->required();
  q->add_option("--bits", qa.bits, "W8A8, W6A6, W4A8, W4A4, W3A3 (any W2..8A2..8)")->capture_default_str();
  q->add_option("--method", qa.method, "minmax, repq-vit, dopq-vit, repquant, reparq")->capture_default_str();
  q->add_option("--calib", qa.opt.calib_samples, "Calibration images (from the training set)")->capture_default_str();
  q->add_option("--seed", qa.opt.seed, "Seed of the calibration subset")->capture_default_str();
  q->add_option("--softmax", qa.softmax, "Override: uniform, log2, logsqrt2, tanq, auto");
  q->add_option("--target", qa.target, "Override the re-parameterization target: mean, median");
  q->add_option("--ln-quant", qa.ln_quant, "Override: tensor-minmax, tensor-percentile, channel-percentile, dual-clip");
  q->add_option("--weights", qa.weights, "Override the weight range: minmax, percentile");
  q->add_option("--act", qa.act, "Override other activations: minmax, percentile, percentile-wide");
  q->add_option("--gptq", qa.gptq, "Override weight reconstruction: 1 or 0")->check(CLI::Range(0, 1));
  q->add_option("--exact-bias", qa.exact_bias, "Override: fold bias from quantized weights 1 or 0")->check(CLI::Range(0, 1));
  q->add_option("--fold-head", qa.fold_head, "Override: re-parameterize the head input 1 or 0")->check(CLI::Range(0, 1));
  q->add_option("--reparam", qa.reparam, "Override: channel-wise -> layer-wise re-parameterization 1 or 0")->check(CLI::Range(0, 1));
  q->add_option("--dual-clip-iters", qa.dual_clip_iters, "Override the dual-clipping Adam iterations");
  cmds.push_back({q, [] { return run_quantize(qa); }});
}

}  // namespace reparq
