// cmd_ablate.cpp: `reparq ablate`, the command behind docs/RESULTS.md: method x bits on the
// bundled models (and their outlier-stressed variants), mean and spread over calibration
// seeds, and a component ablation at W4A4. Every accuracy is measured by the integer executor
// on the test set (the executor agrees with the simulation; `reparq demo` reports by how much).
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <map>
#include <sstream>

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
#include "quant/pipeline.h"

namespace fs = std::filesystem;

namespace reparq {

namespace {

struct AblateArgs {
  CommonOptions c;
  std::vector<std::string> models;
  std::vector<std::string> bits = {"W8A8", "W6A6", "W4A8", "W4A4", "W3A3"};
  std::vector<std::string> methods = {"minmax", "repq-vit", "dopq-vit", "repquant", "reparq"};
  std::vector<uint64_t> seeds = {0, 1, 2};
  bool stress = true;
  int64_t stress_channels = 4;
  double stress_factor = 20;
  bool components = true;
  int64_t limit = 0;
  int64_t calib = 32;
  int cls_bits = 0;   // Recipe::cls_bits for every method x bits run
  std::string out = "docs/RESULTS.md";
  std::string json_out;
};

struct Stat {
  std::vector<double> v;
  double mean() const { double s = 0; for (double x : v) s += x; return v.empty() ? 0 : s / double(v.size()); }
  double lo() const { return v.empty() ? 0 : *std::min_element(v.begin(), v.end()); }
  double hi() const { return v.empty() ? 0 : *std::max_element(v.begin(), v.end()); }
};

std::string cell(const Stat& s, double fp) {
  char b[96];
  if (s.v.size() > 1)
    std::snprintf(b, sizeof b, "%.2f (%+.2f) [%.2f-%.2f]", s.mean(), s.mean() - fp, s.lo(), s.hi());
  else
    std::snprintf(b, sizeof b, "%.2f (%+.2f)", s.mean(), s.mean() - fp);
  return b;
}

struct Variant {
  std::string name;
  Vit model;
  double fp = 0;
};

struct Component {
  std::string name;
  std::function<void(Recipe&)> apply;
};

int run_ablate(AblateArgs& a) {
  apply_common_options(a.c);
  if (a.models.empty())
    for (const char* m : {"models/vit6x128.safetensors", "models/vit8x96.safetensors", "models/vit6x128-hardstress.safetensors"})
      if (fs::exists(m)) a.models.push_back(m);
  if (a.models.empty()) throw UsageError("ablate: no --models given and no bundled model found");
  if (a.seeds.empty()) throw UsageError("ablate: --seeds must not be empty");
  const std::string dir = data_dir(a.c.data_dir);
  ImageSet tr = load_fashion_mnist(dir, true), te = load_fashion_mnist(dir, false);
  const int64_t n = a.limit > 0 ? std::min(a.limit, te.count) : te.count;

  std::vector<Variant> vars;
  for (const auto& p : a.models) {
    Vit m = Vit::load(p);
    std::string name = fs::path(p).stem().string();
    vars.push_back({name, m, 0});
    if (a.stress) vars.push_back({name + " stressed", stress_outliers(m, a.stress_channels, a.stress_factor, 1234), 0});
  }
  nlohmann::json js = {{"schema", "reparq-ablation-1"}, {"command", command_line()}, {"test_images", n},
                       {"seeds", a.seeds}, {"calib_samples", a.calib}, {"runs", nlohmann::json::array()}};
  auto t_start = std::chrono::steady_clock::now();
  for (auto& v : vars) {
    v.fp = evaluate_float(v.model, te, n, 200, "fp32 " + v.name).top1_pct();
    std::fprintf(stderr, "%s: FP32 top-1 %.2f %%\n", v.name.c_str(), v.fp);
  }

  // Quantization is deterministic (same model, recipe and seed -> same file), so a run that
  // repeats one already made (the default recipe in the grid and in the component table) is
  // taken from here instead of being recomputed; the JSON still lists it under its label.
  std::map<std::string, std::pair<double, double>> done;
  auto run_one = [&](const Variant& v, Recipe r, uint64_t seed, const std::string& label) {
    const std::string key = v.name + "|" + r.to_json() + "|" + std::to_string(seed);
    if (auto it = done.find(key); it != done.end()) {
      js["runs"].push_back({{"model", v.name}, {"label", label}, {"recipe", nlohmann::json::parse(r.to_json())},
                            {"seed", seed}, {"top1", it->second.first}, {"fp32", v.fp},
                            {"quantize_seconds", it->second.second}, {"repeat_of_earlier_run", true}});
      return it->second;
    }
    QuantizeOptions qo;
    qo.calib_samples = a.calib;
    qo.seed = seed;
    auto t0 = std::chrono::steady_clock::now();
    QuantModel q = quantize_model(v.model, tr, r, qo);
    double qs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    Executor ex(q, best_isa(), a.c.threads);
    EvalResult e = evaluate(te, n, 200, q.num_classes,
                            [&](const uint8_t* px, int64_t b, float* out) { ex.run(px, b, out); }, label);
    js["runs"].push_back({{"model", v.name}, {"label", label}, {"recipe", nlohmann::json::parse(r.to_json())},
                          {"seed", seed}, {"top1", e.top1_pct()}, {"fp32", v.fp}, {"quantize_seconds", qs}});
    std::fprintf(stderr, "  %-28s %-10s seed %llu: top-1 %.2f %% (FP32 %.2f), quantize %.1f s\n", v.name.c_str(),
                 label.c_str(), (unsigned long long)seed, e.top1_pct(), v.fp, qs);
    return done[key] = std::make_pair(e.top1_pct(), qs);
  };

  std::ostringstream md;
  md << "# reparq results\n\n"
     << "Produced by `" << command_line() << "` (" << cpu_model_name() << ", " << a.c.threads
     << " threads). Accuracy: top-1 % of the **integer executor** on the first " << n
     << " Fashion-MNIST test images; in parentheses the change vs FP32 in points; in brackets the range over "
     << a.seeds.size() << " calibration seeds (" << a.calib << " training images each). "
     << "Stressed: " << a.stress_channels << " channels per LayerNorm scaled by " << a.stress_factor
     << " (function-preserving, `stress_outliers` in calib/vit.h).\n\n";
  md << "## FP32\n\n| model | FP32 top-1 % |\n|---|---|\n";
  for (auto& v : vars) md << "| " << v.name << " | " << fmt_pct(v.fp) << " |\n";

  std::map<std::string, Stat> qtime;
  for (auto& v : vars) {
    md << "\n## " << v.name << ": method x bits\n\n| method |";
    for (auto& b : a.bits) md << " " << b << " |";
    md << "\n|---|";
    for (size_t i = 0; i < a.bits.size(); ++i) md << "---|";
    md << "\n";
    for (auto& meth : a.methods) {
      md << "| " << meth << (a.cls_bits ? " --cls-bits " + std::to_string(a.cls_bits) : std::string()) << " |";
      for (auto& b : a.bits) {
        int wb, ab;
        parse_bits(b, &wb, &ab);
        Stat s;
        Recipe r = Recipe::preset(meth, wb, ab);
        r.cls_bits = a.cls_bits;
        for (uint64_t seed : a.seeds) {
          // (class-token runs get their own label: plots and merges take "METHOD WxAy" only)
          auto [acc, qs] = run_one(v, r, seed, meth + " " + b + (a.cls_bits ? " cls" + std::to_string(a.cls_bits) : ""));
          s.v.push_back(acc);
          qtime[meth].v.push_back(qs);
        }
        md << " " << cell(s, v.fp) << " |";
      }
      md << "\n";
    }
  }

  if (a.components) {
    std::vector<Component> comps = {
        {"reparq (default)", [](Recipe&) {}},
        {"post-LN layer-wise (per-tensor percentile, no re-param)", [](Recipe& r) { r.ln_quant = "tensor-percentile"; r.reparam = false; r.fold_head = false; }},
        {"post-LN channel-wise percentile + re-param (RepQ-ViT)", [](Recipe& r) { r.ln_quant = "channel-percentile"; }},
        {"dual clipping refined with Adam (150 iterations)", [](Recipe& r) { r.dual_clip_iters = 150; }},
        {"softmax uniform", [](Recipe& r) { r.softmax = "uniform"; }},
        {"softmax log2", [](Recipe& r) { r.softmax = "log2"; }},
        {"softmax log-sqrt2", [](Recipe& r) { r.softmax = "logsqrt2"; }},
        {"softmax TanQ", [](Recipe& r) { r.softmax = "tanq"; }},
        {"target mean, exact bias", [](Recipe& r) { r.target = "mean"; }},
        {"target median, float bias (MOSF as published)", [](Recipe& r) { r.exact_bias = false; }},
        {"target mean, float bias (RepQ-ViT)", [](Recipe& r) { r.target = "mean"; r.exact_bias = false; }},
        {"no weight reconstruction (GPTQ off)", [](Recipe& r) { r.gptq = false; }},
        {"head input not re-parameterized", [](Recipe& r) { r.fold_head = false; }},
    };
    // The newer components, named by what the row changes relative to the preset.
    const Recipe base = Recipe::preset("reparq", 4, 4);
    comps.push_back({base.act == "search" ? "activation clips by percentile (no output-aware search)"
                                          : "output-aware activation clip search",
                     [](Recipe& r) { r.act = r.act == "search" ? "percentile" : "search"; }});
    comps.push_back({base.bias_correct ? "no bias correction" : "with bias correction",
                     [](Recipe& r) { r.bias_correct = !r.bias_correct; }});
    comps.push_back({base.qk_balance ? "no q/k balancing" : "with q/k balancing",
                     [](Recipe& r) { r.qk_balance = !r.qk_balance; }});
    comps.push_back({base.v_balance ? "no v/proj balancing" : "with v/proj balancing",
                     [](Recipe& r) { r.v_balance = !r.v_balance; }});
    comps.push_back({base.gelu_balance ? "no GELU-output balancing" : "with GELU-output balancing",
                     [](Recipe& r) { r.gelu_balance = !r.gelu_balance; }});
    comps.push_back({base.level_sites.empty() || base.level_sites == "none" ? "with GELU-output levels"
                                                                             : "GELU output uniform (no levels)",
                     [](Recipe& r) { r.level_sites = r.level_sites.empty() || r.level_sites == "none" ? "fc2" : "none"; }});
    comps.push_back({base.ef_sites.empty() || base.ef_sites == "none" ? "with error-feedback rounding"
                                                                       : "round to nearest (no error feedback)",
                     [](Recipe& r) { r.ef_sites = r.ef_sites.empty() || r.ef_sites == "none" ? "qkv,proj,fc1,fc2" : "none"; }});
    comps.push_back({base.attn_cls_dynamic ? "class-row softmax with the shared scale" : "class-row softmax with its own dynamic scale",
                     [](Recipe& r) { r.attn_cls_dynamic = !r.attn_cls_dynamic; }});
    comps.push_back({base.col_shift ? "no weight column shifts" : "with weight column shifts",
                     [](Recipe& r) { r.col_shift = !r.col_shift; }});
    comps.push_back({base.recon_iters > 0 ? "no block reconstruction" : "with block reconstruction (200 steps)",
                     [](Recipe& r) { r.recon_iters = r.recon_iters > 0 ? 0 : 200; }});
    for (auto& v : vars) {
      md << "\n## " << v.name << ": components at W4A4 (reparq recipe, one change per row)\n\n| variant | top-1 % (vs FP32) |\n|---|---|\n";
      for (auto& c : comps) {
        Stat s;
        for (uint64_t seed : a.seeds) {
          Recipe r = Recipe::preset("reparq", 4, 4);
          c.apply(r);
          s.v.push_back(run_one(v, r, seed, "W4A4 " + c.name).first);
        }
        md << "| " << c.name << " | " << cell(s, v.fp) << " |\n";
      }
    }
  }
  md << "\n## Calibrate + quantize time (seconds per model, mean over runs above)\n\n| method | seconds |\n|---|---|\n";
  for (auto& [m, s] : qtime) md << "| " << m << " | " << fmt_pct(s.mean()) << " |\n";
  double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  md << "\nTotal run time " << int(total) << " s.\n";
  fs::path outp(a.out);
  if (outp.has_parent_path()) fs::create_directories(outp.parent_path());
  write_text_atomic(a.out, md.str());
  if (!a.json_out.empty()) write_text_atomic(a.json_out, js.dump(2) + "\n");
  std::printf("%s\nwrote %s\n", md.str().c_str(), a.out.c_str());
  return 0;
}

}  // namespace

void add_ablate_command(CLI::App& app, CommandList& cmds) {
  static AblateArgs aa;
  auto* c = app.add_subcommand("ablate", "Method x bits x seeds and component ablation; writes docs/RESULTS.md");
  c->footer("Example: reparq ablate --seeds 0 1 2 -o docs/RESULTS.md --json-out docs/results.json");
  add_common_options(c, aa.c);
  c->add_option("--models", aa.models, "Float models (default: the bundled ones, vit6x128-hardstress included)");
  c->add_option("--bits", aa.bits, "Bit widths")->capture_default_str();
  c->add_option("--methods", aa.methods, "Recipes")->capture_default_str();
  c->add_option("--seeds", aa.seeds, "Calibration seeds")->capture_default_str();
  c->add_option("--stress", aa.stress, "Also run outlier-stressed variants (1/0)")->capture_default_str();
  c->add_option("--stress-channels", aa.stress_channels, "Channels per LayerNorm to stress")->capture_default_str();
  c->add_option("--stress-factor", aa.stress_factor, "Stress factor")->capture_default_str();
  c->add_option("--components", aa.components, "Run the W4A4 component ablation (1/0)")->capture_default_str();
  c->add_option("--limit", aa.limit, "Test images (0 = all)");
  c->add_option("--calib", aa.calib, "Calibration images")->capture_default_str();
  c->add_option("--cls-bits", aa.cls_bits, "Class-token quantizers of this many bits in every method x bits run (quantize --cls-bits; 0 = off)")
      ->check(CLI::IsMember({0, 2, 3, 4, 5, 6, 7, 8}));
  c->add_option("-o,--out", aa.out, "Markdown output")->capture_default_str();
  c->add_option("--json-out", aa.json_out, "JSON output with every run");
  cmds.push_back({c, [] { return run_ablate(aa); }});
}

}  // namespace reparq
