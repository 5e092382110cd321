// cmd_model.cpp: `reparq train` and `reparq eval`.
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "apps/report.h"
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
  std::string init;                       // continue from this float checkpoint
  std::string hard_stress;                // "CxK": hard outlier stress applied to --init first
  std::vector<CLI::Option*> arch_options;  // must not be given together with --init
};

int report_training(const TrainArgs& a, const TrainReport& r);

struct StressArgs {
  CommonOptions c;
  std::string model, out;
  int64_t channels = 4;
  double factor = 20;
  uint64_t seed = 1234;
};

// `reparq stress`: writes the function-preserving outlier-stressed variant that `reparq ablate
// --stress 1` evaluates ("MODEL stressed" in docs/RESULTS.md), so that it can be quantized and
// evaluated on its own.
int run_stress(StressArgs& a) {
  apply_common_options(a.c);
  if (a.channels <= 0) throw UsageError("--channels must be positive");
  if (!(a.factor > 1) || !std::isfinite(a.factor)) throw UsageError("--factor must be a finite number > 1");
  Vit m = Vit::load(a.model);
  if (a.channels > m.config().dim)
    throw UsageError("--channels " + std::to_string(a.channels) + " exceeds the model width " + std::to_string(m.config().dim));
  Vit s = stress_outliers(m, a.channels, a.factor, a.seed);
  char desc[96];
  std::snprintf(desc, sizeof desc, "%lldx%g seed %llu", static_cast<long long>(a.channels), a.factor,
                static_cast<unsigned long long>(a.seed));
  s.save(a.out, {{"stress", desc},
                 {"stressed_from", a.model}});
  std::printf("wrote %s: %lld channels of every block LayerNorm scaled by %g, next Linear compensated (float function unchanged)\n",
              a.out.c_str(), static_cast<long long>(a.channels), a.factor);
  return 0;
}

int run_train(TrainArgs& a) {
  apply_common_options(a.c);
  if (!a.init.empty()) {
    for (CLI::Option* o : a.arch_options)
      if (o->count() > 0)
        throw UsageError(o->get_name() + " cannot be combined with --init: the architecture comes from " + a.init);
    a.opt.command = command_line();
    a.opt.init = a.init;
    std::string dir = data_dir(a.c.data_dir);
    ImageSet tr = load_fashion_mnist(dir, true), te = load_fashion_mnist(dir, false);
    Vit m = Vit::load(a.init);
    if (!a.hard_stress.empty()) {
      long long ch = 0;
      double k = 0;
      char tail = 0;
      if (std::sscanf(a.hard_stress.c_str(), "%lldx%lf%c", &ch, &k, &tail) != 2 || ch <= 0 || !(k > 1))
        throw UsageError("--hard-stress '" + a.hard_stress + "': expected CHANNELSxFACTOR, e.g. 4x10 (factor > 1)");
      m = stress_outliers(m, ch, k, 1234, /*compensate=*/false);
    }
    return report_training(a, train(m, tr, te, a.opt));
  }
  if (!a.hard_stress.empty()) throw UsageError("--hard-stress needs --init (it stresses a trained model)");
  if (!(a.mlp_ratio > 0)) throw UsageError("--mlp-ratio must be positive");
  a.cfg.mlp_hidden = static_cast<int64_t>(double(a.cfg.dim) * a.mlp_ratio + 0.5);
  a.cfg.validate();
  a.opt.command = command_line();
  std::string dir = data_dir(a.c.data_dir);
  ImageSet tr = load_fashion_mnist(dir, true), te = load_fashion_mnist(dir, false);
  torch::manual_seed(a.opt.seed);
  Vit m(a.cfg);
  return report_training(a, train(m, tr, te, a.opt));
}

int report_training(const TrainArgs& a, const TrainReport& r) {
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
  std::vector<std::string> models;
  std::string engine = "auto";
  std::string isa;
  std::string report;
  bool compare = false;
  int64_t limit = 0;
  int64_t batch = 100;
};

struct EvalOne {
  std::string model, engine, detail;
  EvalResult r;
  bool is_float = false;
};

// A quantized model runs on images of its own size only (the executor reads image_size^2
// pixels per image): a 16x16 model on the 28x28 test set would read the wrong pixels.
void check_image_size(const std::string& model, int64_t size, const ImageSet& te) {
  if (te.rows != size || te.cols != size)
    throw InputError(model + ": the model expects " + std::to_string(size) + "x" + std::to_string(size) +
                     " images, the test set holds " + std::to_string(te.rows) + "x" + std::to_string(te.cols));
}

EvalOne eval_one(const EvalArgs& a, const std::string& path, const ImageSet& te, bool keep_logits) {
  EvalOne e;
  e.model = path;
  const bool quantized = is_quant_model_file(path);
  e.is_float = !quantized;
  e.engine = a.engine;
  if (e.engine == "auto" || (a.models.size() > 1 && !quantized)) e.engine = quantized ? "int" : "fp32";
  if (e.engine != "fp32" && !quantized)
    throw UsageError("--engine " + e.engine + " needs a quantized model; " + path + " is a float model (use --engine fp32 or quantize it first)");
  if (e.engine == "fp32" && quantized)
    throw UsageError("--engine fp32 needs a float model; " + path + " is quantized (use --engine int or sim)");
  const std::string label = "eval " + e.engine + (a.models.size() > 1 ? " " + path : "");
  if (e.engine == "fp32") {
    Vit m = Vit::load(path);
    e.r = evaluate_float(m, te, a.limit, a.batch, label, keep_logits);
    e.detail = blas_summary();
  } else if (e.engine == "sim") {
    QuantModel q = load_quant_model(path);
    check_image_size(path, q.image_size, te);
    SimModel sim(q);
    e.r = evaluate_sim(sim, te, a.limit, a.batch, label, keep_logits);
    e.detail = "quantization simulated in LibTorch";
  } else if (e.engine == "int") {
    QuantModel q = load_quant_model(path);
    check_image_size(path, q.image_size, te);
    Executor ex(q, best_isa(), a.c.threads);
    e.r = evaluate(te, a.limit, a.batch, q.num_classes,
                   [&](const uint8_t* px, int64_t b, float* out) { ex.run(px, b, out); }, label, keep_logits);
    e.detail = std::string("integer executor, ") + isa_name(ex.isa()) + ": " + ex.kernel_summary();
  } else {
    throw UsageError("--engine must be auto, fp32, sim or int (got '" + e.engine + "')");
  }
  return e;
}

// Mean over images of KL(softmax(ref) || softmax(got)), in nats.
double mean_kl(const std::vector<float>& ref, const std::vector<float>& got, int64_t n, int64_t classes) {
  double sum = 0;
  std::vector<double> p(classes), q(classes);
  auto softmax = [&](const float* l, std::vector<double>& o) {
    double m = l[0], z = 0;
    for (int64_t c = 1; c < classes; ++c) m = std::max(m, double(l[c]));
    for (int64_t c = 0; c < classes; ++c) z += (o[c] = std::exp(double(l[c]) - m));
    for (int64_t c = 0; c < classes; ++c) o[c] /= z;
  };
  for (int64_t i = 0; i < n; ++i) {
    softmax(ref.data() + i * classes, p);
    softmax(got.data() + i * classes, q);
    for (int64_t c = 0; c < classes; ++c)
      if (p[c] > 0) sum += p[c] * (std::log(p[c]) - std::log(std::max(q[c], 1e-300)));
  }
  return n ? sum / double(n) : 0.0;
}

int run_eval(EvalArgs& a) {
  apply_common_options(a.c);
  if (!a.isa.empty()) set_isa_cap(parse_isa(a.isa, "--isa"));
  if (a.compare && a.models.size() < 2)
    throw UsageError("--compare needs at least two models (the float model and its quantized versions)");
  const bool compare = a.models.size() > 1;
  int ref = -1;   // the float model the others are compared with
  for (size_t i = 0; i < a.models.size() && compare; ++i)
    if (!is_quant_model_file(a.models[i])) { ref = int(i); break; }
  if (compare && ref < 0)
    throw UsageError("comparing models needs the float model among them (agreement and KL are measured against FP32)");
  ImageSet te = load_fashion_mnist(data_dir(a.c.data_dir), false);

  std::vector<EvalOne> res;
  for (const std::string& m : a.models) res.push_back(eval_one(a, m, te, compare));
  const int64_t classes = compare ? int64_t(res[size_t(ref)].r.logits.size() / std::max<int64_t>(1, res[size_t(ref)].r.count)) : 0;

  nlohmann::json rep = report_header("reparq-eval-1", a.c.threads);
  rep["images"] = res[0].r.count;
  nlohmann::json rows = nlohmann::json::array();
  std::string md = "# reparq eval\n\n" + report_header_markdown(rep) + "- test images: " + std::to_string(res[0].r.count) +
                   " (Fashion-MNIST)\n\n| model | engine | top-1 % | top-5 % | drop (pt) | agree FP32 % | mean KL vs FP32 | images/s |\n"
                   "|---|---|---|---|---|---|---|---|\n";
  for (size_t i = 0; i < res.size(); ++i) {
    const EvalOne& e = res[i];
    nlohmann::json row = {{"model", e.model}, {"engine", e.engine}, {"images", e.r.count},
                          {"top1", e.r.top1_pct()}, {"top5", e.r.top5_pct()}, {"seconds", e.r.seconds},
                          {"images_per_second", e.r.images_per_second()}, {"detail", e.detail}};
    char line[1024];
    if (compare) {
      const EvalOne& f = res[size_t(ref)];
      if (e.r.count != f.r.count || int64_t(e.r.logits.size()) != e.r.count * classes)
        throw UsageError(e.model + " has " + std::to_string(e.r.logits.size() / std::max<int64_t>(1, e.r.count)) +
                         " classes but " + f.model + " has " + std::to_string(classes));
      int64_t same = 0;
      for (int64_t k = 0; k < e.r.count; ++k) same += e.r.predictions[size_t(k)] == f.r.predictions[size_t(k)];
      const double agree = e.r.count ? 100.0 * double(same) / double(e.r.count) : 0;
      const double kl = mean_kl(f.r.logits, e.r.logits, e.r.count, classes);
      row["drop"] = f.r.top1_pct() - e.r.top1_pct();
      row["agree_fp32"] = agree;
      row["mean_kl"] = kl;
      std::snprintf(line, sizeof line, "| %s | %s | %.2f | %.2f | %.2f | %.2f | %.5f | %.0f |\n", e.model.c_str(),
                    e.engine.c_str(), e.r.top1_pct(), e.r.top5_pct(), f.r.top1_pct() - e.r.top1_pct(), agree, kl,
                    e.r.images_per_second());
    } else {
      std::snprintf(line, sizeof line, "| %s | %s | %.2f | %.2f | - | - | - | %.0f |\n", e.model.c_str(), e.engine.c_str(),
                    e.r.top1_pct(), e.r.top5_pct(), e.r.images_per_second());
    }
    md += line;
    rows.push_back(row);
  }
  rep["rows"] = rows;
  if (compare) md += "\nAgreement: share of test images whose top-1 equals the FP32 model's (" + res[size_t(ref)].model +
                     "). KL: mean over images of KL(softmax(FP32 logits) || softmax(logits)), nats.\n";
  if (!a.report.empty()) write_report(a.report, rep, md);

  if (a.c.json) {
    if (compare) std::printf("%s\n", rep.dump(2).c_str());
    else {
      nlohmann::json j = rows[0];
      j["threads"] = a.c.threads;
      std::printf("%s\n", j.dump(2).c_str());
    }
  } else if (compare) {
    std::printf("%s", md.substr(md.find("| model")).c_str());
  } else {
    const EvalOne& e = res[0];
    std::printf("%s  engine %s  images %lld  top-1 %.2f %%  top-5 %.2f %%  %.0f images/s (%d threads)\n",
                e.model.c_str(), e.engine.c_str(), (long long)e.r.count, e.r.top1_pct(), e.r.top5_pct(),
                e.r.images_per_second(), a.c.threads);
    std::fprintf(stderr, "%s\n", e.detail.c_str());
  }
  if (!a.report.empty() && !a.c.json) std::fprintf(stderr, "wrote %s.md and %s.json\n", a.report.c_str(), a.report.c_str());
  return 0;
}

}  // namespace

void add_model_commands(CLI::App& app, CommandList& cmds) {
  static TrainArgs ta;
  auto* tr = app.add_subcommand("train", "Train a ViT on Fashion-MNIST and save it (timm layout safetensors)");
  tr->footer("Example: reparq train --depth 6 --dim 128 --heads 4 --mlp-ratio 2 --epochs 10 -o models/vit6x128.safetensors");
  add_common_options(tr, ta.c);
  tr->add_option("-o,--out", ta.opt.out, "Output .safetensors (written after every epoch)")->required();
  tr->add_option("--init", ta.init, "Continue training from this float checkpoint (its architecture is kept)")
      ->check(CLI::ExistingFile);
  ta.arch_options = {
      tr->add_option("--name", ta.cfg.arch, "Architecture name stored in the file")->capture_default_str(),
      tr->add_option("--depth", ta.cfg.depth, "Transformer blocks")->capture_default_str(),
      tr->add_option("--dim", ta.cfg.dim, "Embedding width")->capture_default_str(),
      tr->add_option("--heads", ta.cfg.heads, "Attention heads")->capture_default_str(),
      tr->add_option("--mlp-ratio", ta.mlp_ratio, "MLP hidden width / dim")->capture_default_str(),
      tr->add_option("--patch", ta.cfg.patch, "Patch size")->capture_default_str()};
  tr->add_option("--hard-stress", ta.hard_stress,
                 "With --init: scale C channels of every block's LayerNorms by K (CxK, e.g. 4x10) without "
                 "compensating the next Linear, then train (the issue's hard outlier stress)");
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

  static StressArgs sa;
  auto* st = app.add_subcommand("stress", "Write the outlier-stressed variant of a float model that `ablate --stress 1` uses");
  st->footer("Example: reparq stress models/vit8x96.safetensors -o out/vit8x96-stressed.safetensors");
  add_common_options(st, sa.c);
  st->add_option("model", sa.model, "Float model (.safetensors)")->required()->check(CLI::ExistingFile);
  st->add_option("-o,--out", sa.out, "Output float model")->required();
  st->add_option("--channels", sa.channels, "Channels per LayerNorm to stress")->capture_default_str();
  st->add_option("--factor", sa.factor, "Stress factor")->capture_default_str();
  st->add_option("--seed", sa.seed, "Seed that draws the channels")->capture_default_str();
  cmds.push_back({st, [] { return run_stress(sa); }});

  static EvalArgs ea;
  auto* ev = app.add_subcommand("eval", "Top-1/top-5 accuracy on the 10,000 Fashion-MNIST test images");
  ev->footer("Examples:\n  reparq eval models/vit6x128.safetensors            # FP32\n"
             "  reparq eval out/vit6x128.w4a4.safetensors          # integer executor\n"
             "  reparq eval out/vit6x128.w4a4.safetensors --engine sim --json\n"
             "  reparq eval models/vit6x128.safetensors out/a.w4a4.safetensors out/b.w4a4.safetensors --report out/compare");
  add_common_options(ev, ea.c);
  ev->add_option("models", ea.models, "Model file(s): float or quantized .safetensors; several = side by side, "
                 "with top-1 agreement and mean KL against the float one")->required();
  ev->add_flag("--compare", ea.compare, "Side by side (implied by several models; checks there are at least two)");
  ev->add_option("--report", ea.report, "Also write PREFIX.md and PREFIX.json (schema reparq-eval-1)");
  ev->add_option("--engine", ea.engine, "auto (int for quantized files, fp32 for float), fp32, sim, int")->capture_default_str();
  ev->add_option("--isa", ea.isa, "Cap the executor's ISA: scalar, avx2, avx512vnni");
  ev->add_option("--limit", ea.limit, "Evaluate the first N test images only");
  ev->add_option("--batch", ea.batch, "Batch size")->capture_default_str()->check(CLI::Range(1, 100000));
  cmds.push_back({ev, [] { return run_eval(ea); }});
}

}  // namespace reparq
