// cmd_demo.cpp: `reparq demo`, the README's main job. On a bundled model and Fashion-MNIST:
// FP32 accuracy; calibrate (32 images) and quantize at W8A8, W6A6 and W4A4 with the default
// recipe and with min-max; evaluate each with the integer executor (full test set) and the
// simulation (first --sim-limit images); measure latency against LibTorch FP32; print one
// table and write report.json / report.md into the output directory.
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "apps/plots.h"
#include "calib/data.h"
#include "calib/evaluate.h"
#include "calib/progress.h"
#include "calib/sysinfo.h"
#include "calib/train.h"
#include "calib/vit.h"
#include "kernels/cpu.h"
#include "kernels/error.h"
#include "kernels/executor.h"
#include "kernels/qmodel.h"
#include "quant/pipeline.h"
#include "quant/sim.h"

namespace fs = std::filesystem;

namespace reparq {

namespace {

struct DemoArgs {
  CommonOptions c;
  std::string model;
  std::string out_dir = "reparq-demo";
  std::vector<std::string> bits = {"W8A8", "W6A6", "W4A4"};
  std::vector<std::string> methods = {"reparq", "minmax"};
  int64_t limit = 0;        // test images for the executor (0 = all 10,000)
  int64_t sim_limit = 1000; // test images for the simulation agreement
  int64_t calib = 32;
  uint64_t seed = 0;
};

double agreement(const std::vector<int32_t>& a, const std::vector<int32_t>& b, int64_t n) {
  int64_t same = 0;
  for (int64_t i = 0; i < n; ++i) same += a[i] == b[i];
  return n ? 100.0 * double(same) / double(n) : 0;
}

// Median milliseconds per batch-1 image of fn over `reps` runs after a warm-up.
template <class F>
double median_ms(F fn, int reps) {
  fn();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

std::string default_model() {
  for (const char* p : {"models/vit6x128.safetensors", REPARQ_SOURCE_DIR "/models/vit6x128.safetensors"})
    if (fs::exists(p)) return p;
  return REPARQ_SOURCE_DIR "/models/vit6x128.safetensors";
}

int run_demo(DemoArgs& a) {
  apply_common_options(a.c);
  if (a.model.empty()) a.model = default_model();
  std::error_code ec;
  fs::create_directories(a.out_dir, ec);
  if (ec) throw InputError(a.out_dir + ": cannot create the output directory: " + ec.message());
  const std::string dir = data_dir(a.c.data_dir);
  ImageSet tr = load_fashion_mnist(dir, true), te = load_fashion_mnist(dir, false);
  Vit fp = Vit::load(a.model);
  const int64_t n = a.limit > 0 ? std::min(a.limit, te.count) : te.count;
  const int64_t ns = std::min(a.sim_limit > 0 ? a.sim_limit : n, n);
  std::fprintf(stderr, "demo: model %s, %lld test images (simulation on %lld), calibration %lld images, seed %llu\n",
               a.model.c_str(), (long long)n, (long long)ns, (long long)a.calib, (unsigned long long)a.seed);

  EvalResult rf = evaluate_float(fp, te, n, 100, "fp32");
  const uint8_t* one = te.image(0);
  torch::Tensor img = torch::from_blob(const_cast<uint8_t*>(one), {1, te.rows, te.cols}, torch::kUInt8);
  double fp_ms = median_ms([&] { torch::NoGradGuard ng; fp.forward(img); }, 30);
  const std::string fp_path = a.model;
  const auto fp_bytes = fs::file_size(fp_path);

  nlohmann::json rows = nlohmann::json::array();
  rows.push_back({{"bits", "FP32"}, {"method", "-"}, {"top1", rf.top1_pct()}, {"drop", 0.0},
                  {"agree_fp32", 100.0}, {"agree_sim", nullptr}, {"bytes", fp_bytes}, {"ms", fp_ms}, {"speedup", 1.0}});
  std::string isa_used, kernels;
  nlohmann::json runs = nlohmann::json::array();   // for accuracy.svg (reparq plot's schema)
  QuantModel plot_q;                                // lowest-bit model, default recipe first
  int plot_score = 1 << 30;
  for (const std::string& bits : a.bits) {
    int wb, ab;
    parse_bits(bits, &wb, &ab);
    for (const std::string& method : a.methods) {
      Recipe r = Recipe::preset(method, wb, ab);
      QuantizeOptions qo;
      qo.calib_samples = a.calib;
      qo.seed = a.seed;
      auto t0 = std::chrono::steady_clock::now();
      QuantModel q = quantize_model(fp, tr, r, qo);
      double qsec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::string path = a.out_dir + "/" + fs::path(a.model).stem().string() + "." + method + "." + bits + ".safetensors";
      q.metadata["quantize.command"] = command_line();
      save_quant_model(q, path);
      QuantModel ql = load_quant_model(path);
      Executor ex(ql, best_isa(), a.c.threads);
      EvalResult ri = evaluate(te, n, 100, ql.num_classes,
                               [&](const uint8_t* px, int64_t b, float* out) { ex.run(px, b, out); },
                               "int " + method + " " + bits);
      SimModel sim(ql);
      EvalResult rs = evaluate_sim(sim, te, ns, 100, "sim " + method + " " + bits);
      std::vector<float> lg(ql.num_classes);
      double ms = median_ms([&] { ex.run(one, 1, lg.data()); }, 30);
      isa_used = isa_name(ex.isa());
      kernels = ex.kernel_summary();
      rows.push_back({{"bits", bits}, {"method", method}, {"top1", ri.top1_pct()},
                      {"drop", rf.top1_pct() - ri.top1_pct()},
                      {"agree_fp32", agreement(ri.predictions, rf.predictions, n)},
                      {"agree_sim", agreement(ri.predictions, rs.predictions, ns)},
                      {"sim_top1", rs.top1_pct()}, {"sim_images", ns},
                      {"bytes", fs::file_size(path)}, {"ms", ms}, {"speedup", fp_ms / ms},
                      {"quantize_seconds", qsec}, {"file", path}});
      const std::string bs = "W" + std::to_string(wb) + "A" + std::to_string(ab);
      runs.push_back({{"model", fs::path(a.model).stem().string()}, {"label", method + " " + bs},
                      {"recipe", {{"method", method}, {"wbits", wb}, {"abits", ab}}}, {"seed", a.seed},
                      {"top1", ri.top1_pct()}, {"fp32", rf.top1_pct()}});
      if (int score = (method == "reparq" ? 0 : 100) + wb + ab; score < plot_score) plot_q = ql, plot_score = score;
    }
  }
  // The plots of `reparq plot`: channel ranges and softmax levels of block 0 of the lowest-bit
  // reparq model, and accuracy vs bits of this run.
  std::vector<std::string> plots;
  if (!plot_q.blocks.empty()) plots = write_model_plots(fp, plot_q, tr, a.out_dir, 0);
  if (!runs.empty())
    plots.push_back(write_accuracy_plot({{"schema", "reparq-ablation-1"}, {"seeds", {a.seed}}, {"test_images", n}, {"runs", runs}},
                                        "demo results", a.out_dir));

  nlohmann::json rep = {{"schema", "reparq-demo-1"},
                        {"tool", "reparq 0.1.0"},
                        {"command", command_line()},
                        {"model", a.model},
                        {"cpu", cpu_model_name()},
                        {"isa", isa_used},
                        {"kernels", kernels},
                        {"blas", blas_summary()},
                        {"threads", a.c.threads},
                        {"seed", a.seed},
                        {"calib_samples", a.calib},
                        {"test_images", n},
                        {"rows", rows},
                        {"plots", plots}};
  std::string md;
  char line[512];
  md += "# reparq demo\n\n";
  md += "Model `" + a.model + "`, Fashion-MNIST test set (" + std::to_string(n) + " images), calibration " +
        std::to_string(a.calib) + " training images (seed " + std::to_string(a.seed) + "), " +
        std::to_string(a.c.threads) + " threads, CPU " + cpu_model_name() + ", executor ISA " + isa_used + ".\n\n";
  md += "| bits | method | top-1 % | drop (pt) | agree FP32 % | int vs sim % | file KiB | ms/img (b=1) | speed-up vs FP32 |\n";
  md += "|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& r : rows) {
    std::string sim = r["agree_sim"].is_null() ? "-" : fmt_pct(r["agree_sim"].get<double>());
    std::snprintf(line, sizeof line, "| %s | %s | %.2f | %.2f | %.2f | %s | %.0f | %.3f | %.2fx |\n",
                  r["bits"].get<std::string>().c_str(), r["method"].get<std::string>().c_str(),
                  r["top1"].get<double>(), r["drop"].get<double>(), r["agree_fp32"].get<double>(), sim.c_str(),
                  double(r["bytes"].get<uint64_t>()) / 1024.0, r["ms"].get<double>(), r["speedup"].get<double>());
    md += line;
  }
  md += "\n`int vs sim`: share of the first " + std::to_string(ns) +
        " test images where the integer executor's top-1 equals the simulated model's.\n";
  md += "Speed: median of 30 batch-1 runs, executor vs LibTorch FP32 (" + blas_summary() + ") in the same process.\n";
  if (!plots.empty()) {
    md += "\nPlots (`reparq plot`):";
    for (const auto& p : plots) md += " " + fs::path(p).filename().string();
    md += "\n";
  }
  write_text_atomic(a.out_dir + "/report.md", md);
  write_text_atomic(a.out_dir + "/report.json", rep.dump(2) + "\n");
  if (a.c.json) std::printf("%s\n", rep.dump(2).c_str());
  else std::printf("\n%s\nwrote %s/report.md, %s/report.json, the plots (%zu SVG) and the quantized models\n", md.c_str(),
                   a.out_dir.c_str(), a.out_dir.c_str(), plots.size());
  return 0;
}

}  // namespace

void add_demo_command(CLI::App& app, CommandList& cmds) {
  static DemoArgs da;
  auto* d = app.add_subcommand("demo", "The main job: quantize a bundled model at W8A8/W6A6/W4A4, evaluate with the integer executor, measure speed");
  d->footer("Example: reparq demo                 # bundled model, full test set, a few minutes on 2 cores\n"
            "         reparq demo --limit 500 --out-dir /tmp/d");
  add_common_options(d, da.c);
  d->add_option("--model", da.model, "Float model (default: models/vit6x128.safetensors)");
  d->add_option("--out-dir", da.out_dir, "Directory for the quantized models and reports")->capture_default_str();
  d->add_option("--bits", da.bits, "Bit widths")->capture_default_str();
  d->add_option("--methods", da.methods, "Recipes")->capture_default_str();
  d->add_option("--limit", da.limit, "Test images for the executor (0 = all)");
  d->add_option("--sim-limit", da.sim_limit, "Test images for the simulation agreement")->capture_default_str();
  d->add_option("--calib", da.calib, "Calibration images")->capture_default_str();
  d->add_option("--seed", da.seed, "Calibration seed")->capture_default_str();
  cmds.push_back({d, [] { return run_demo(da); }});
}

}  // namespace reparq
