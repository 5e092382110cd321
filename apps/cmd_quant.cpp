// cmd_quant.cpp: `reparq calibrate` (streaming statistics) and `reparq quantize`.
#include <torch/torch.h>

#include <algorithm>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "apps/report.h"
#include "calib/data.h"
#include "calib/stats.h"
#include "calib/vit.h"
#include "kernels/error.h"
#include "kernels/qmodel.h"
#include "quant/pipeline.h"
#include "quant/report.h"

namespace reparq {

namespace {

struct QuantArgs {
  CommonOptions c;
  std::string model, out, bits = "W4A4", method = "reparq";
  QuantizeOptions opt;
  std::string softmax, target, ln_quant, weights, act;
  int gptq = -1, gptq_act_order = -1, exact_bias = -1, fold_head = -1, reparam = -1;
  int dual_clip_iters = -1;
  int qk_balance = -1, v_balance = -1, bias_correct = -1, recon = -1, gelu_balance = -1, cls_bits = -1, col_shift = -1, ef_block = -1, cls_attn_dynamic = -1;
  double recon_drop = -1;
  std::string a8;
  std::optional<std::string> level_sites, ef_sites;
  double ef_damp = -1;
  bool no_report = false;
};

// out/model.w4a4.safetensors -> out/model.w4a4.report
std::string report_prefix(const std::string& out) {
  const std::string ext = ".safetensors";
  std::string stem = out.size() > ext.size() && out.compare(out.size() - ext.size(), ext.size(), ext) == 0
                         ? out.substr(0, out.size() - ext.size()) : out;
  return stem + ".report";
}

// Fails before calibration, not after it, when the output cannot be written: its directory
// must exist and be writable, and the path must not be a directory.
void check_output_path(const std::string& out) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(out, ec)) throw InputError(out + ": -o names a directory, expected a file path");
  std::string dir = fs::path(out).parent_path().string();
  if (dir.empty()) dir = ".";
  if (!fs::is_directory(dir, ec))
    throw InputError(out + ": cannot write: directory '" + dir + "' does not exist");
  if (::access(dir.c_str(), W_OK) != 0)
    throw InputError(out + ": cannot write: directory '" + dir + "' is not writable (" + std::strerror(errno) + ")");
}

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
  if (a.gptq_act_order >= 0) r.gptq_act_order = a.gptq_act_order;
  if (a.exact_bias >= 0) r.exact_bias = a.exact_bias;
  if (a.fold_head >= 0) r.fold_head = a.fold_head;
  if (a.reparam >= 0) r.reparam = a.reparam;
  if (a.dual_clip_iters >= 0) r.dual_clip_iters = a.dual_clip_iters;
  if (a.qk_balance >= 0) r.qk_balance = a.qk_balance;
  if (a.bias_correct >= 0) r.bias_correct = a.bias_correct;
  if (a.v_balance >= 0) r.v_balance = a.v_balance;
  if (a.recon >= 0) r.recon_iters = a.recon;
  if (a.recon_drop >= 0) r.recon_drop = a.recon_drop;
  if (a.level_sites) r.level_sites = *a.level_sites;
  if (a.gelu_balance >= 0) r.gelu_balance = a.gelu_balance;
  if (a.col_shift >= 0) r.col_shift = a.col_shift;
  if (a.ef_block >= 0) r.ef_block = a.ef_block, r.ef_wide_in = 0;   // every Linear alike
  if (a.cls_bits >= 0) r.cls_bits = a.cls_bits;
  if (a.cls_attn_dynamic >= 0) r.attn_cls_dynamic = a.cls_attn_dynamic;
  if (a.cls_attn_dynamic == 1 && r.cls_bits > 0)
    throw UsageError("--cls-attn-dynamic 1 and --cls-bits both set how the class token's post-Softmax row is quantized; choose one");
  if (a.ef_sites) r.ef_sites = *a.ef_sites;
  if (a.ef_damp >= 0) r.ef_damp = a.ef_damp;
  if (!a.a8.empty()) r.a8_sites = a.a8;
  parse_a8_sites(r.a8_sites);   // validate before loading anything
  parse_level_sites(r.level_sites);
  parse_ef_sites(r.ef_sites);
  Vit fp = Vit::load(a.model);
  check_output_path(a.out);
  ImageSet tr = load_fashion_mnist(data_dir(a.c.data_dir), true);
  torch::manual_seed(a.opt.seed);
  auto t0 = std::chrono::steady_clock::now();
  QuantModel q = quantize_model(fp, tr, r, a.opt);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  q.metadata["quantize.command"] = command_line();

  nlohmann::json rep = report_header("reparq-quantize-1", a.c.threads);
  rep["model"] = a.model;
  rep["out"] = a.out;
  rep["bits"] = a.bits;
  rep["recipe"] = nlohmann::json::parse(r.to_json());
  rep["seconds"] = secs;
  rep["calib_seed"] = a.opt.seed;
  std::string prefix;
  if (!a.no_report) {
    std::vector<int64_t> ids = calibration_ids_of(q);
    SiteReport sr = analyze_sites(fp, q, tr, ids);
    rep["calib_ids"] = ids;
    rep["sites"] = nlohmann::json::parse(sr.to_json());
    std::string md = "# reparq quantize: " + a.out + "\n\n" + report_header_markdown(rep) +
                     "- float model: `" + a.model + "`; bits " + a.bits + "; method " + a.method +
                     "; quantized in " + fmt_pct(secs) + " s\n- recipe: `" + r.to_json() + "`\n" +
                     "- calibration: " + std::to_string(ids.size()) + " training images, seed " +
                     std::to_string(a.opt.seed) + " (ids in the JSON report)\n\n" +
                     "## Per site, on the calibration images\n\n"
                     "`SQNR (quantizer)`: the site's input against its own quantize-dequantize; "
                     "`output SQNR / cosine`: the site's output in the quantized model (everything upstream quantized) "
                     "against the FP32 model. `clipped %`: input values outside the representable range.\n\n" +
                     sr.to_markdown();
    prefix = report_prefix(a.out);
    // The model first, then its report right after: everything slow happened before either is
    // written, so a kill leaves the previous pair or (in the milliseconds between the two
    // renames) the new model with the previous report; never a partial file.
    save_quant_model(q, a.out);
    write_report(prefix, rep, md);
    // The three sites whose output is furthest from FP32: where a user looks first.
    std::vector<const SiteRow*> worst;
    for (const SiteRow& row : sr.rows) worst.push_back(&row);
    std::sort(worst.begin(), worst.end(), [](const SiteRow* x, const SiteRow* y) { return x->out_sqnr_db < y->out_sqnr_db; });
    if (a.c.verbose && !a.c.json) std::printf("%s\n", sr.to_markdown().c_str());
    if (!a.c.json) {
      std::printf("lowest output SQNR vs FP32 (calibration images):");
      for (size_t i = 0; i < worst.size() && i < 3; ++i) std::printf("  %s %.1f dB", worst[i]->site.c_str(), worst[i]->out_sqnr_db);
      std::printf("\n");
    }
  }
  if (a.no_report) save_quant_model(q, a.out);
  if (a.c.json) {
    std::printf("%s\n", rep.dump(2).c_str());
  } else {
    std::printf("wrote %s (%s, %s) in %.1f s%s\n", a.out.c_str(), a.method.c_str(), a.bits.c_str(), secs,
                prefix.empty() ? "" : (", report " + prefix + ".md / .json").c_str());
  }
  return 0;
}

struct CalibArgs {
  CommonOptions c;
  std::string model, out;
  int64_t calib = 32;
  uint64_t seed = 0;
  StatsOptions opt;
};

int run_calibrate(CalibArgs& a) {
  apply_common_options(a.c);
  check_calib_count(a.calib, INT64_MAX);   // before loading anything; the data set's size below
  a.opt.validate();
  Vit fp = Vit::load(a.model);
  if (!a.out.empty()) check_output_path(a.out);
  ImageSet tr = load_fashion_mnist(data_dir(a.c.data_dir), true);
  check_calib_count(a.calib, tr.count);
  const std::vector<int64_t> ids = calibration_indices(tr.count, a.calib, a.seed);
  auto t0 = std::chrono::steady_clock::now();
  CalibStats cs;
  try {
    cs = collect_calib_stats(fp, tr, ids, a.opt);
  } catch (const InputError& e) {
    throw InputError(a.model + ": " + e.what());
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  cs.model = a.model;
  cs.seed = a.seed;
  if (!a.out.empty()) write_text_atomic(a.out, cs.to_json() + "\n");
  if (a.c.json) {
    std::printf("%s\n", cs.to_json().c_str());
    return 0;
  }
  std::printf("%s\n", cs.to_markdown().c_str());
  std::printf("%lld training images (seed %llu) in batches of %lld, 2 passes, %.2f s; running state %.1f KiB "
              "(independent of the image count)%s%s\n",
              static_cast<long long>(cs.images), static_cast<unsigned long long>(a.seed), static_cast<long long>(a.opt.batch),
              secs, cs.accumulator_bytes / 1024.0, a.out.empty() ? "" : "; wrote ", a.out.c_str());
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
  q->add_option("--act", qa.act, "Override other activations: minmax, percentile, percentile-wide, search (output-aware clip search)");
  q->add_option("--gptq", qa.gptq, "Override weight reconstruction: 1 or 0")->check(CLI::Range(0, 1));
  q->add_option("--gptq-act-order", qa.gptq_act_order, "Override: GPTQ quantizes columns in decreasing order of input energy (1 or 0)")->check(CLI::Range(0, 1));
  q->add_option("--exact-bias", qa.exact_bias, "Override: fold bias from quantized weights 1 or 0")->check(CLI::Range(0, 1));
  q->add_option("--fold-head", qa.fold_head, "Override: re-parameterize the head input 1 or 0")->check(CLI::Range(0, 1));
  q->add_option("--reparam", qa.reparam, "Override: channel-wise -> layer-wise re-parameterization 1 or 0")->check(CLI::Range(0, 1));
  q->add_option("--dual-clip-iters", qa.dual_clip_iters, "Override the dual-clipping Adam iterations");
  q->add_option("--bias-correct", qa.bias_correct, "Override: move each Linear's mean output error into its bias (1 or 0)")->check(CLI::Range(0, 1));
  q->add_option("--qk-balance", qa.qk_balance, "Override: balance q/k channel ranges (1 or 0)")->check(CLI::Range(0, 1));
  q->add_option("--v-balance", qa.v_balance, "Override: balance v / proj-input channels into proj's weights (1 or 0)")->check(CLI::Range(0, 1));
  q->add_option("--ef-block", qa.ef_block, "Override: error-feedback rounding of every Linear in independent blocks of K input columns (0 = whole rows everywhere). reparq default: blocks of 128 at Linears wider than 256 inputs, whole rows elsewhere. Blocks cut the executor's feedback work and its load time on wide Linears")->check(CLI::Range(0, 1 << 20));
  q->add_option("--col-shift", qa.col_shift, "Override: power-of-two weight column factors chosen per Linear (1 or 0)")->check(CLI::Range(0, 1));
  q->add_option("--gelu-balance", qa.gelu_balance, "Override: per-channel GELU-output multiplier migrated into fc2 (1 or 0; only at <= 5-bit fc2 inputs)")->check(CLI::Range(0, 1));
  q->add_option("--recon", qa.recon, "Override: block reconstruction Adam steps per block (0 = off; only when some activation site has <= 5 bits)")->check(CLI::Range(0, 100000));
  q->add_option("--level-sites", qa.level_sites, "Override: activation sites (<= 5 bits) with non-uniform levels, comma-separated (qkv, q, k, v, proj, fc1, fc2, head) or 'none' (reparq: fc2)");
  q->add_option("--cls-bits", qa.cls_bits, "Class token's row at every block activation site quantized with its own min-max quantizer of this many bits (2..8; 0 = off, the default). Mixed precision (file format reparq-quant-4)")
      ->check(CLI::IsMember({0, 2, 3, 4, 5, 6, 7, 8}));
  q->add_option("--cls-attn-dynamic", qa.cls_attn_dynamic, "Override: the class token's post-Softmax row quantized with its own scale, computed at run time from the row's largest probability (1 or 0; reparq: 1 at <= 5-bit activations; file format reparq-quant-7)")->check(CLI::Range(0, 1));
  q->add_option("--ef-sites", qa.ef_sites, "Override: Linear inputs (<= 5 bits) rounded with error feedback through the Linear's weights, comma-separated (qkv, proj, fc1, fc2) or 'none' (reparq: all four; file format reparq-quant-5)");
  q->add_option("--ef-damp", qa.ef_damp, "Override: relative damping of W^T W for error-feedback rounding (default 0.1)")->check(CLI::Range(1e-9, 1e6));
  q->add_option("--recon-drop", qa.recon_drop, "Override: QDrop probability in block reconstruction (0 = off)")->check(CLI::Range(0.0, 1.0));
  q->add_option("--a8", qa.a8, "Mixed precision: keep these activation sites at 8 bits, comma-separated: qkv,q,k,v,attn,proj,fc1,fc2,head");
  q->add_flag("--no-report", qa.no_report, "Do not write OUT.report.md / OUT.report.json (per-site error table)");
  cmds.push_back({q, [] { return run_quantize(qa); }});

  static CalibArgs ca;
  auto* c = app.add_subcommand("calibrate", "Stream calibration images through a float model and report per-site statistics");
  c->footer("Example: reparq calibrate models/vit6x128.safetensors --calib 32 --seed 0 -o out/vit6x128.stats.json");
  add_common_options(c, ca.c);
  c->add_option("model", ca.model, "Float model (.safetensors, timm layout)")->required();
  c->add_option("-o,--out", ca.out, "Write the statistics as JSON (per-channel arrays included)");
  c->add_option("--calib", ca.calib, "Calibration images (from the training set)")->capture_default_str();
  c->add_option("--seed", ca.seed, "Seed of the calibration subset")->capture_default_str();
  c->add_option("--batch", ca.opt.batch, "Images per forward pass")->capture_default_str();
  c->add_option("--bins", ca.opt.bins, "Histogram bins (per channel at post-LayerNorm sites)")->capture_default_str();
  c->add_option("--percentile", ca.opt.percentile, "Report the (100 - p) and p percentiles")->capture_default_str();
  cmds.push_back({c, [] { return run_calibrate(ca); }});
}

}  // namespace reparq
