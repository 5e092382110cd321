// cmd_model.cpp: `reparq train` and `reparq eval`.
#include <torch/torch.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "calib/data.h"
#include "calib/evaluate.h"
#include "calib/sysinfo.h"
#include "calib/train.h"
#include "calib/vit.h"
#include "kernels/cpu.h"
#include "kernels/error.h"
#include "kernels/executor.h"
#include "kernels/qmodel.h"
#include "quant/sim.h"

namespace reparq {

namespace {


struct TrainArgs {
  CommonOptions c;
  VitConfig cfg;
  double mlp_ratio = 4.0;
  TrainOptions opt;
};

int run_train(TrainArgs& a) {
  apply_common_options(a.c);
  if (!(a.mlp_ratio > 0)) throw UsageError("--mlp-ratio must be positive");
  a.cfg.mlp_hidden = static_cast<int64_t>(double(a.cfg.dim) * a.mlp_ratio + 0.5);
  a.cfg.validate();
  a.opt.command = command_line();
  std::string dir = data_dir(a.c.data_dir);
  ImageSet tr = load_fashion_mnist(dir, true), te = load_fashion_mnist(dir, false);
  torch::manual_seed(a.opt.seed);
  Vit m(a.cfg);
  TrainReport r = train(m, tr, te, a.opt);
  std::fprintf(stderr, "%s\n", blas_summary().c_str());
  if (a.c.json) {
    nlohmann::json j = {{"out", a.opt.out}, {"seconds", r.seconds}, {"test_top1", r.test_top1}, {"final_loss", r.final_loss}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("trained %s in %.0f s: test top-1 %.2f %%\n", a.opt.out.c_str(), r.seconds, r.test_top1);
  }
  return 0;
}

struct EvalArgs {
  CommonOptions c;
  std::string model;
  std::string engine = "auto";
  std::string isa;
  int64_t limit = 0;
  int64_t batch = 100;
};

int run_eval(EvalArgs& a) {
  apply_common_options(a.c);
  const bool quantized = is_quant_model_file(a.model);
  std::string engine = a.engine;
  if (engine == "auto") engine = quantized ? "int" : "fp32";
  if (engine != "fp32" && !quantized)
    throw UsageError("--engine " + engine + " needs a quantized model; " + a.model + " is a float model (use --engine fp32 or quantize it first)");
  if (engine == "fp32" && quantized)
    throw UsageError("--engine fp32 needs a float model; " + a.model + " is quantized (use --engine int or sim)");
  ImageSet te = load_fashion_mnist(data_dir(a.c.data_dir), false);
  EvalResult r;
  std::string detail;
  if (engine == "fp32") {
    Vit m = Vit::load(a.model);
    r = evaluate_float(m, te, a.limit, a.batch, "eval fp32");
    detail = blas_summary();
  } else if (engine == "sim") {
    QuantModel q = load_quant_model(a.model);
    SimModel sim(q);
    r = evaluate_sim(sim, te, a.limit, a.batch, "eval sim");
    detail = "quantization simulated in LibTorch";
  } else if (engine == "int") {
    QuantModel q = load_quant_model(a.model);
    if (!a.isa.empty()) set_isa_cap(parse_isa(a.isa, "--isa"));
    Executor ex(q, best_isa(), a.c.threads);
    r = evaluate(te, a.limit, a.batch, q.num_classes,
                 [&](const uint8_t* px, int64_t b, float* out) { ex.run(px, b, out); }, "eval int");
    detail = std::string("integer executor, ") + isa_name(ex.isa()) + ": " + ex.kernel_summary();
  } else {
    throw UsageError("--engine must be auto, fp32, sim or int (got '" + engine + "')");
  }
  if (a.c.json) {
    nlohmann::json j = {{"model", a.model}, {"engine", engine}, {"images", r.count},
                        {"top1", r.top1_pct()}, {"top5", r.top5_pct()},
                        {"seconds", r.seconds}, {"images_per_second", r.images_per_second()},
                        {"threads", a.c.threads}, {"detail", detail}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("%s  engine %s  images %lld  top-1 %.2f %%  top-5 %.2f %%  %.0f images/s (%d threads)\n",
                a.model.c_str(), engine.c_str(), (long long)r.count, r.top1_pct(), r.top5_pct(),
                r.images_per_second(), a.c.threads);
    std::fprintf(stderr, "%s\n", detail.c_str());
  }
  return 0;
}

}  // namespace

void add_model_commands(CLI::App& app, CommandList& cmds) {
  static TrainArgs ta;
  auto* tr = app.add_subcommand("train", "Train a ViT on Fashion-MNIST and save it (timm layout safetensors)");
  tr->footer("Example: reparq train --depth 6 --dim 128 --heads 4 --mlp-ratio 2 --epochs 10 -o models/vit6x128.safetensors");
  add_common_options(tr, ta.c);
  tr->add_option("-o,--out", ta.opt.out, "Output .safetensors (written after every epoch)")->required();
  tr->add_option("--name", ta.cfg.arch, "Architecture name stored in the file")->capture_default_str();
  tr->add_option("--depth", ta.cfg.depth, "Transformer blocks")->capture_default_str();
  tr->add_option("--dim", ta.cfg.dim, "Embedding width")->capture_default_str();
  tr->add_option("--heads", ta.cfg.heads, "Attention heads")->capture_default_str();
  tr->add_option("--mlp-ratio", ta.mlp_ratio, "MLP hidden width / dim")->capture_default_str();
  tr->add_option("--patch", ta.cfg.patch, "Patch size")->capture_default_str();
  tr->add_option("--epochs", ta.opt.epochs, "Epochs")->capture_default_str();
  tr->add_option("--batch", ta.opt.batch, "Batch size")->capture_default_str();
  tr->add_option("--lr", ta.opt.lr, "Peak learning rate (AdamW)")->capture_default_str();
  tr->add_option("--weight-decay", ta.opt.weight_decay, "AdamW weight decay")->capture_default_str();
  tr->add_option("--warmup", ta.opt.warmup_epochs, "Warm-up epochs (then cosine)")->capture_default_str();
  tr->add_option("--label-smoothing", ta.opt.label_smoothing, "Label smoothing")->capture_default_str();
  tr->add_option("--seed", ta.opt.seed, "Seed")->capture_default_str();
  tr->add_option("--limit", ta.opt.limit, "Train on the first N images only");
  tr->add_option("--eval-limit", ta.opt.eval_limit, "Evaluate on the first N test images only");
  cmds.push_back({tr, [] { return run_train(ta); }});

  static EvalArgs ea;
  auto* ev = app.add_subcommand("eval", "Top-1/top-5 accuracy on the 10,000 Fashion-MNIST test images");
  ev->footer("Examples:\n  reparq eval models/vit6x128.safetensors            # FP32\n"
             "  reparq eval out/vit6x128.w4a4.safetensors          # integer executor\n"
             "  reparq eval out/vit6x128.w4a4.safetensors --engine sim --json");
  add_common_options(ev, ea.c);
  ev->add_option("model", ea.model, "Model file: float or quantized .safetensors")->required();
  ev->add_option("--engine", ea.engine, "auto (int for quantized files, fp32 for float), fp32, sim, int")->capture_default_str();
  ev->add_option("--isa", ea.isa, "Cap the executor's ISA: scalar, avx2, avx512vnni");
  ev->add_option("--limit", ea.limit, "Evaluate the first N test images only");
  ev->add_option("--batch", ea.batch, "Batch size")->capture_default_str()->check(CLI::Range(1, 100000));
  cmds.push_back({ev, [] { return run_eval(ea); }});
}

}  // namespace reparq
