// reparq: the command line. Thin: parse, call, print.
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "calib/data.h"
#include "calib/evaluate.h"
#include "calib/progress.h"
#include "calib/sysinfo.h"
#include "calib/train.h"
#include "calib/vit.h"
#include "kernels/error.h"

using namespace reparq;

namespace {

std::string join_args(int argc, char** argv) {
  std::string s = "reparq";
  for (int i = 1; i < argc; ++i) s += std::string(" ") + argv[i];
  return s;
}

void set_threads(int t) {
  if (t <= 0) throw UsageError("--threads must be positive");
  torch::set_num_threads(t);
}

struct Common {
  int threads = 2;
  uint64_t seed = 0;
  bool json = false;
  bool quiet = false;
  std::string data_dir;
};

void add_common(CLI::App* c, Common& o) {
  c->add_option("--threads", o.threads, "Threads for LibTorch and the executor")->capture_default_str();
  c->add_option("--data-dir", o.data_dir, "Fashion-MNIST directory (default: $REPARQ_DATA_DIR or /usr/share/datasets/fashion-mnist)");
  c->add_flag("--json", o.json, "Print a machine-readable JSON result on stdout");
  c->add_flag("-q,--quiet", o.quiet, "No progress lines");
}

// ---- train ----------------------------------------------------------------
struct TrainArgs {
  Common c;
  VitConfig cfg;
  double mlp_ratio = 4.0;
  TrainOptions opt;
};

int run_train(TrainArgs& a, const std::string& cmdline) {
  set_threads(a.c.threads);
  if (a.opt.out.empty()) throw UsageError("train: -o/--out is required");
  if (!(a.mlp_ratio > 0)) throw UsageError("--mlp-ratio must be positive");
  a.cfg.mlp_hidden = static_cast<int64_t>(a.cfg.dim * a.mlp_ratio + 0.5);
  a.cfg.validate();
  a.opt.command = cmdline;
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

// ---- eval -----------------------------------------------------------------
struct EvalArgs {
  Common c;
  std::string model;
  int64_t limit = 0;
  int64_t batch = 100;
};

int run_eval(EvalArgs& a) {
  set_threads(a.c.threads);
  Vit m = Vit::load(a.model);
  ImageSet te = load_fashion_mnist(data_dir(a.c.data_dir), false);
  EvalResult r = evaluate_float(m, te, a.limit, a.batch, "eval fp32");
  if (a.c.json) {
    nlohmann::json j = {{"model", a.model}, {"engine", "fp32"}, {"images", r.count},
                        {"top1", r.top1_pct()}, {"top5", r.top5_pct()},
                        {"seconds", r.seconds}, {"images_per_second", r.images_per_second()},
                        {"threads", a.c.threads}, {"blas", blas_library()}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("%s  engine fp32  images %lld  top-1 %.2f %%  top-5 %.2f %%  %.0f images/s (%d threads)\n",
                a.model.c_str(), (long long)r.count, r.top1_pct(), r.top5_pct(), r.images_per_second(), a.c.threads);
    std::fprintf(stderr, "%s\n", blas_summary().c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"reparq: post-training quantization of vision transformers, with an integer executor"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Help for every subcommand");

  TrainArgs ta;
  auto* tr = app.add_subcommand("train", "Train a ViT on Fashion-MNIST and save it (timm layout safetensors)");
  tr->footer("Example: reparq train --depth 6 --dim 192 --heads 3 --epochs 10 -o models/vit6.safetensors");
  add_common(tr, ta.c);
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

  EvalArgs ea;
  auto* ev = app.add_subcommand("eval", "Top-1/top-5 accuracy on the 10,000 Fashion-MNIST test images");
  ev->footer("Example: reparq eval models/vit6.safetensors --json");
  add_common(ev, ea.c);
  ev->add_option("model", ea.model, "Model file (.safetensors)")->required();
  ev->add_option("--limit", ea.limit, "Evaluate the first N test images only");
  ev->add_option("--batch", ea.batch, "Batch size")->capture_default_str();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : kExitUsage;
  }
  const std::string cmdline = join_args(argc, argv);
  try {
    if (tr->parsed()) { Progress::quiet() = ta.c.quiet; return run_train(ta, cmdline); }
    if (ev->parsed()) { Progress::quiet() = ea.c.quiet; return run_eval(ea); }
  } catch (const Error& e) {
    std::fprintf(stderr, "reparq: error: %s\n", e.what());
    return e.code();
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "reparq: internal error (LibTorch): %s\n", e.what_without_backtrace());
    return kExitInternal;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "reparq: internal error: %s\n", e.what());
    return kExitInternal;
  }
  return kExitUsage;
}
