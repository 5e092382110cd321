// cmd_plot.cpp: `reparq plot`, SVG pictures of what quantization did (apps/svg.h draws them):
//   ranges.svg    per-channel min/max of a post-LayerNorm activation, FP32 vs the
//                 re-parameterized LayerNorm output of the quantized model, with the range of
//                 the one layer-wise quantizer as a band;
//   softmax.svg   histogram of one block's post-Softmax attention (log x, log counts) with the
//                 levels of the log2, log-sqrt2 and TanQ quantizers fitted to it;
//   accuracy.svg  top-1 against bit width per method, from `reparq ablate --json-out`.
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "apps/commands.h"
#include "apps/plots.h"
#include "apps/svg.h"
#include "calib/data.h"
#include "calib/vit.h"
#include "kernels/error.h"
#include "kernels/qmodel.h"
#include "quant/quantizers.h"
#include "quant/report.h"
#include "quant/sim.h"

namespace fs = std::filesystem;

namespace reparq {

namespace {

struct PlotArgs {
  CommonOptions c;
  std::vector<std::string> models;   // MODEL QUANT_MODEL
  std::string out;
  std::string results;
  std::string site = "norm1";
  int block = 0;
  int64_t calib = 0;                 // 0: the quantized file's own calibration images
  uint64_t seed = 0;
};

std::string f2(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", v);
  return b;
}
std::string g3(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3g", v);
  return b;
}

// Renders, turning a writer complaint (no finite data, ...) into a bad-input error.
void write_svg(const svg::Figure& f, const std::string& path, std::vector<std::string>& written) {
  std::string text;
  try {
    text = f.render();
  } catch (const std::invalid_argument& e) {
    throw InputError(path + ": cannot draw: " + e.what());
  }
  write_text_atomic(path, text);
  written.push_back(path);
}

std::vector<double> to_dvec(const torch::Tensor& t) {
  torch::Tensor c = t.detach().to(torch::kFloat64).contiguous().reshape({-1});
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

// The calibration images: the quantized file's own (metadata calib.ids) unless --calib is given.
torch::Tensor calib_images(const PlotArgs& a, const QuantModel& q, const ImageSet& tr, std::string* how) {
  std::vector<int64_t> ids;
  if (a.calib == 0) {
    try {
      ids = calibration_ids_of(q);
    } catch (const InputError& e) {
      throw InputError(a.models[1] + ": " + e.what());
    }
    for (int64_t v : ids)
      if (v >= tr.count)
        throw InputError(a.models[1] + ": metadata calib.ids holds '" + std::to_string(v) + "', not an index of the training set");
  }
  if (!ids.empty()) {
    *how = std::to_string(ids.size()) + " calibration images of the quantized file";
  } else {
    const int64_t n = a.calib > 0 ? a.calib : 32;
    ids = calibration_indices(tr.count, n, a.seed);
    *how = std::to_string(n) + " training images, seed " + std::to_string(a.seed);
  }
  torch::Tensor px = torch::empty({int64_t(ids.size()), tr.rows, tr.cols}, torch::kUInt8);
  for (size_t i = 0; i < ids.size(); ++i)
    std::memcpy(px[int64_t(i)].data_ptr<uint8_t>(), tr.image(ids[i]), size_t(tr.rows * tr.cols));
  return px;
}

// Captures one site of one block (value before quantization) from a forward pass.
template <class M>
torch::Tensor capture(const M& m, const torch::Tensor& px, int block, Site site) {
  torch::Tensor got;
  m.forward(px, [&](int b, Site s, const torch::Tensor& x) {
    if (b == block && s == site) got = x.detach().clone();
    return x;
  });
  if (!got.defined()) throw Error(kExitInternal, "plot: site " + std::string(site_name(site)) + " of block " + std::to_string(block) + " not reached");
  return got;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

void plot_ranges(const PlotArgs& a, const Vit& fp, const QuantModel& q, const SimModel& sim, const torch::Tensor& px,
                 const std::string& how, std::vector<std::string>& written) {
  const bool n2 = a.site == "norm2";
  const Site site = n2 ? Site::Norm2Out : Site::Norm1Out;
  const std::string sname = "block " + std::to_string(a.block) + (n2 ? " norm2" : " norm1") + " output";
  torch::NoGradGuard ng;
  torch::Tensor x0 = capture(fp, px, a.block, site), x1 = capture(sim, px, a.block, site);
  const int64_t C = x0.size(-1);
  x0 = x0.reshape({-1, C});
  x1 = x1.reshape({-1, C});
  if (!torch::isfinite(x0).all().item<bool>() || !torch::isfinite(x1).all().item<bool>())
    throw InputError("plot: " + sname + " holds non-finite values (NaN or inf): is the model broken?");
  std::vector<double> lo0 = to_dvec(x0.amin(0)), hi0 = to_dvec(x0.amax(0)), lo1 = to_dvec(x1.amin(0)), hi1 = to_dvec(x1.amax(0));
  const ActQuant& in = n2 ? q.blocks[size_t(a.block)].fc1.input : q.blocks[size_t(a.block)].qkv.input;
  const double qlo = double(in.scale) * (0 - in.zero), qhi = double(in.scale) * (in.qmax() - in.zero);
  std::vector<double> ch(static_cast<size_t>(C)), w0(static_cast<size_t>(C)), w1(static_cast<size_t>(C));
  int64_t outside = 0;
  for (int64_t i = 0; i < C; ++i) {
    ch[size_t(i)] = double(i);
    w0[size_t(i)] = hi0[size_t(i)] - lo0[size_t(i)];
    w1[size_t(i)] = hi1[size_t(i)] - lo1[size_t(i)];
    outside += lo1[size_t(i)] < qlo - 0.5 * in.scale || hi1[size_t(i)] > qhi + 0.5 * in.scale;
  }
  const double t0lo = *std::min_element(lo0.begin(), lo0.end()), t0hi = *std::max_element(hi0.begin(), hi0.end());
  const double m0 = median(w0), m1 = median(w1);
  const double r0 = m0 > 0 ? *std::max_element(w0.begin(), w0.end()) / m0 : 0;
  const double r1 = m1 > 0 ? *std::max_element(w1.begin(), w1.end()) / m1 : 0;
  double ylo = std::min({t0lo, qlo, *std::min_element(lo1.begin(), lo1.end())});
  double yhi = std::max({t0hi, qhi, *std::max_element(hi1.begin(), hi1.end())});
  const double pad = 0.05 * (yhi - ylo);
  ylo -= pad;
  yhi += 0.3 * (yhi - ylo);   // room for the note and legend above the data

  svg::Figure f(820, 620, 2, 1);
  f.title("Per-channel ranges of the " + sname + " (" + how + ")");
  svg::Style band{"#D55E00", 1.0, "5 3"};
  band.fill = "#D55E00";
  band.fill_opacity = 0.10;
  svg::Style bars{"#0072B2", 2.0};
  svg::Style bars1{"#009E73", 2.0};
  f.panel(0).title("FP32 LayerNorm output").xlabel("").ylabel("value").ylim(ylo, yhi).xlim(-1, double(C))
      .hband(t0lo, t0hi, band, "one per-tensor range must cover all channels: [" + g3(t0lo) + ", " + g3(t0hi) + "]")
      .vranges(ch, lo0, hi0, bars, "channel min..max")
      .note("widest channel / median channel width: " + f2(r0) + "x");
  f.panel(1).title(q.blocks.empty() ? "" : "quantized model: LayerNorm output after scale re-parameterization")
      .xlabel("channel").ylabel("value").ylim(ylo, yhi).xlim(-1, double(C))
      .hband(qlo, qhi, band, "layer-wise quantizer range (" + std::to_string(in.bits) + " bit): [" + g3(qlo) + ", " + g3(qhi) + "]")
      .vranges(ch, lo1, hi1, bars1, "channel min..max")
      .note("widest channel / median channel width: " + f2(r1) + "x\n" + std::to_string(outside) + " of " +
            std::to_string(C) + " channels reach outside it (clipped)");
  write_svg(f, (fs::path(a.out) / "ranges.svg").string(), written);
}

void plot_softmax(const PlotArgs& a, const QuantModel& q, const SimModel& sim, const torch::Tensor& px,
                  const std::string& how, std::vector<std::string>& written) {
  torch::NoGradGuard ng;
  torch::Tensor att = capture(sim, px, a.block, Site::Attn).to(torch::kFloat32).contiguous();
  if (!torch::isfinite(att).all().item<bool>())
    throw InputError("plot: block " + std::to_string(a.block) + " attention holds non-finite values (NaN or inf)");
  const AttnQuant& used = q.blocks[size_t(a.block)].attn;
  const int bits = used.bits;
  torch::Tensor flat = att.reshape({-1});
  const int64_t total = flat.numel();
  torch::Tensor pos = flat.masked_select(flat > 0);
  const int64_t zeros = total - pos.numel();
  // Bins: 20 per decade, log-spaced, from the decade of the smallest positive value (at least
  // 1e-8) to 1.
  double amin = pos.numel() ? std::max(1e-8, pos.min().item<double>()) : 1e-8;
  int e0 = int(std::floor(std::log10(amin)));
  const int per_dec = 20, nb = -e0 * per_dec;
  std::vector<double> edges(size_t(nb) + 1), counts(size_t(nb), 0.0);
  for (int i = 0; i <= nb; ++i) edges[size_t(i)] = std::pow(10.0, e0 + double(i) / per_dec);
  {
    torch::Tensor l = (pos.to(torch::kFloat64).log10() - e0) * per_dec;
    torch::Tensor idx = l.floor().clamp(0, nb - 1).to(torch::kInt64);
    torch::Tensor h = torch::bincount(idx, {}, nb).to(torch::kFloat64);
    counts = to_dvec(h);
  }
  // The three log-domain quantizers, each fitted to this attention as quantize does, and
  // their levels as the executor's LUT holds them (levels that round to 0 are not drawable).
  struct K { const char* kind; const char* name; const char* color; };
  const K kinds[] = {{"log2", "log2", "#0072B2"}, {"logsqrt2", "log-sqrt2", "#009E73"}, {"tanq", "TanQ", "#D55E00"}};
  svg::Figure f(820, 470, 1, 1);
  f.title("Post-Softmax attention of block " + std::to_string(a.block) + " (" + how + ") and " + std::to_string(bits) + "-bit levels");
  svg::Panel& p = f.panel(0);
  svg::Style hist{"#777777", 0.8};
  hist.fill = "#999999";
  hist.fill_opacity = 0.45;
  p.xlog().ylog().xlabel("attention probability (log scale)").ylabel("count per bin (20 bins per decade)")
      .xlim(edges.front(), 1.0).legend("tl");
  p.step(edges, counts, hist, "attention values (" + std::to_string(total) + ")");
  // Levels in three horizontal strips (log2 on top), the top quarter left to legend and note.
  double cmax = *std::max_element(counts.begin(), counts.end());
  if (cmax > 0) p.ylim(0.5, std::pow(10.0, std::log10(0.5) + std::log10(cmax / 0.5) / 0.72));
  double from = 0.5;
  for (const K& k : kinds) {
    AttnQuant aq = search_attn_quant(att, k.kind, bits);
    std::set<double> lv;
    for (int c = 0; c < int(aq.lut.size()); ++c)
      if (aq.level(c) > 0) lv.insert(double(aq.level(c)));
    svg::Style st{k.color, 1.4};
    std::string lab = std::string(k.name) + ": " + std::to_string(lv.size()) + " nonzero levels, clip " + g3(aq.scale);
    if (std::string(k.kind) == "tanq") lab += ", alpha " + g3(aq.param);
    p.vlines(std::vector<double>(lv.begin(), lv.end()), st, lab, from, from + 0.24);
    from -= 0.25;
  }
  p.note("exact zeros (not drawn): " + std::to_string(zeros) + "\nquantize chose " + used.kind + ", clip " + g3(used.scale) +
         "\nlevels as the 8-bit level table holds them;\nsmaller levels round to 0");
  write_svg(f, (fs::path(a.out) / "softmax.svg").string(), written);
}

void plot_accuracy(const PlotArgs& a, std::vector<std::string>& written) {
  const std::string& path = a.results;
  std::ifstream in(path);
  if (!in) throw InputError(path + ": cannot open results file");
  nlohmann::json js;
  try {
    in >> js;
  } catch (const nlohmann::json::exception& e) {
    throw InputError(path + ": not valid JSON (" + std::string(e.what()) + ")");
  }
  written.push_back(write_accuracy_plot(js, path, a.out));
}

}  // namespace

std::string write_accuracy_plot(const nlohmann::json& js, const std::string& path, const std::string& dir) {
  if (!js.is_object() || js.value("schema", "") != "reparq-ablation-1" || !js.contains("runs") || !js["runs"].is_array())
    throw InputError(path + ": not a reparq ablation result (expected schema 'reparq-ablation-1' with a 'runs' list, from reparq ablate --json-out)");
  // model -> method -> bits -> top-1 values; bits ordered by total bits, then weight bits.
  struct Bits { int w, a; bool operator<(const Bits& o) const { return w + a != o.w + o.a ? w + a > o.w + o.a : w > o.w; } };
  std::map<std::string, std::map<std::string, std::map<Bits, std::vector<double>>>> acc;
  std::vector<std::string> model_order, method_order;
  std::map<std::string, double> fp32;
  std::set<Bits> all_bits;
  size_t i = 0;
  for (const auto& r : js["runs"]) {
    ++i;
    try {
      const auto& rc = r.at("recipe");
      std::string model = r.at("model").get<std::string>(), method = rc.at("method").get<std::string>();
      Bits b{rc.at("wbits").get<int>(), rc.at("abits").get<int>()};
      std::string bs = "W" + std::to_string(b.w) + "A" + std::to_string(b.a);
      if (r.at("label").get<std::string>() != method + " " + bs) continue;   // component-ablation rows
      double t = r.at("top1").get<double>();
      if (!std::isfinite(t)) throw InputError(path + ": run " + std::to_string(i) + " has a non-finite top1");
      if (!acc.count(model)) model_order.push_back(model);
      if (std::find(method_order.begin(), method_order.end(), method) == method_order.end()) method_order.push_back(method);
      acc[model][method][b].push_back(t);
      fp32[model] = r.at("fp32").get<double>();
      all_bits.insert(b);
    } catch (const nlohmann::json::exception& e) {
      throw InputError(path + ": run " + std::to_string(i) + " lacks a field or has the wrong type (" + e.what() + ")");
    }
  }
  if (acc.empty()) throw InputError(path + ": no method x bits runs in it (labels 'METHOD WxAy')");
  std::vector<Bits> bits(all_bits.begin(), all_bits.end());
  std::vector<std::string> cats;
  for (const Bits& b : bits) cats.push_back("W" + std::to_string(b.w) + "A" + std::to_string(b.a));
  const int np = int(model_order.size()), cols = std::min(np, 2), rows = (np + cols - 1) / cols;
  svg::Figure f(cols == 1 ? 760 : 1040, 440.0 * rows, rows, cols);
  int nseeds = js.contains("seeds") && js["seeds"].is_array() ? int(js["seeds"].size()) : 1;
  f.title("Top-1 of the integer executor vs bit width (" + std::to_string(js.value("test_images", 0)) + " test images, " +
          std::to_string(nseeds) + (nseeds == 1 ? " calibration seed)" : " calibration seeds: mean, bar = min..max)"));
  for (int pi = 0; pi < np; ++pi) {
    const std::string& model = model_order[size_t(pi)];
    const double fp = fp32[model];
    // Y range: everything within 30 points of FP32; further values are listed in the note.
    double ylo = fp, yhi = fp;
    std::string off;   // "minmax: W4A4 10.00, W3A3 10.00" (means, one line per method)
    for (const std::string& m : method_order) {
      auto it = acc[model].find(m);
      if (it == acc[model].end()) continue;
      std::string line;
      for (auto& [b, v] : it->second) {
        double s = 0;
        for (double t : v) s += t;
        for (double t : v)
          if (t >= fp - 30) ylo = std::min(ylo, t), yhi = std::max(yhi, t);
        if (s / double(v.size()) < fp - 30)
          line += (line.empty() ? "" : ", ") + std::string("W") + std::to_string(b.w) + "A" + std::to_string(b.a) + " " + f2(s / double(v.size()));
      }
      if (!line.empty()) off += "\n" + m + ": " + line;
    }
    double span = std::max(1.0, yhi - ylo);
    svg::Panel& p = f.panel(pi);
    p.title(model).xcategories(cats).xlabel("bits (weights, activations)").ylabel("top-1 %")
        .ylim(ylo - (off.empty() ? 0.06 : 0.12 + 0.08 * std::count(off.begin(), off.end(), '\n')) * span, yhi + 0.45 * span)
        .legend("tr");
    p.hline(fp, svg::Style{"#000000", 1.2, "6 4"}, "FP32 " + f2(fp));
    const size_t nm = method_order.size();
    for (size_t mi = 0; mi < nm; ++mi) {
      const std::string& m = method_order[mi];
      auto it = acc[model].find(m);
      if (it == acc[model].end()) continue;
      const double dx = nm > 1 ? (double(mi) - (nm - 1) / 2.0) * 0.06 : 0;
      std::vector<double> xs, ys, xr, lo, hi;
      for (size_t bi = 0; bi < bits.size(); ++bi) {
        auto jt = it->second.find(bits[bi]);
        if (jt == it->second.end()) {
          xs.push_back(double(bi) + dx), ys.push_back(NAN);   // break the line
          continue;
        }
        const auto& v = jt->second;
        double s = 0;
        for (double t : v) s += t;
        xs.push_back(double(bi) + dx);
        ys.push_back(s / double(v.size()));
        if (v.size() > 1) {
          xr.push_back(double(bi) + dx);
          lo.push_back(*std::min_element(v.begin(), v.end()));
          hi.push_back(*std::max_element(v.begin(), v.end()));
        }
      }
      svg::Style st{svg::palette(mi), 1.8};
      st.marker = 3.2;
      p.line(xs, ys, st, m, true);
      if (!xr.empty()) p.vranges(xr, lo, hi, svg::Style{svg::palette(mi), 1.2});
    }
    if (!off.empty()) p.note("off the plot (below " + f2(fp - 30) + "):" + off, "bl");
  }
  std::vector<std::string> written;
  write_svg(f, (fs::path(dir) / "accuracy.svg").string(), written);
  return written.at(0);
}

std::vector<std::string> write_model_plots(const Vit& fp, const QuantModel& q, const ImageSet& train,
                                           const std::string& dir, int block) {
  PlotArgs a;
  a.models = {"the float model", "the quantized model"};
  a.out = dir;
  a.block = block;
  std::vector<std::string> written;
  std::string how;
  torch::Tensor px = calib_images(a, q, train, &how);
  SimModel sim(q);
  plot_ranges(a, fp, q, sim, px, how, written);
  plot_softmax(a, q, sim, px, how, written);
  return written;
}

namespace {

int run_plot(PlotArgs& a) {
  apply_common_options(a.c);
  if (a.models.empty() && a.results.empty())
    throw UsageError("plot: give MODEL QUANT_MODEL (ranges and softmax plots) and/or --results FILE (accuracy plot)");
  if (a.models.size() == 1) throw UsageError("plot: give both MODEL (float) and QUANT_MODEL (its quantized file), or neither");
  if (a.site != "norm1" && a.site != "norm2") throw UsageError("--site must be norm1 or norm2, got '" + a.site + "'");
  if (a.calib < 0) throw UsageError("--calib must be positive");
  if (a.block < 0) throw UsageError("--block must be >= 0");
  std::error_code ec;
  fs::create_directories(a.out, ec);
  if (ec || !fs::is_directory(a.out)) throw InputError(a.out + ": cannot create output directory" + (ec ? " (" + ec.message() + ")" : ""));
  std::vector<std::string> written;
  if (!a.models.empty()) {
    const std::string &mp = a.models[0], &qp = a.models[1];
    if (is_quant_model_file(mp))
      throw UsageError("plot: MODEL " + mp + " is a quantized file; give the float model first, then its quantized file");
    if (!is_quant_model_file(qp))
      throw UsageError("plot: QUANT_MODEL " + qp + " is a float model; make one with reparq quantize " + mp + " -o Q.safetensors");
    Vit fp = Vit::load(mp);
    QuantModel q = load_quant_model(qp);
    const VitConfig& cf = fp.config();
    if (cf.dim != q.dim || cf.depth != q.depth || cf.heads != q.heads || cf.image_size != q.image_size || cf.patch != q.patch)
      throw InputError(qp + " does not match " + mp + " (dim/depth/heads/image/patch " + std::to_string(q.dim) + "/" +
                       std::to_string(q.depth) + "/" + std::to_string(q.heads) + "/" + std::to_string(q.image_size) + "/" +
                       std::to_string(q.patch) + " vs " + std::to_string(cf.dim) + "/" + std::to_string(cf.depth) + "/" +
                       std::to_string(cf.heads) + "/" + std::to_string(cf.image_size) + "/" + std::to_string(cf.patch) + ")");
    if (a.block >= q.depth)
      throw UsageError("--block " + std::to_string(a.block) + ": the model has blocks 0.." + std::to_string(q.depth - 1));
    ImageSet tr = load_fashion_mnist(data_dir(a.c.data_dir), true);
    std::string how;
    torch::Tensor px = calib_images(a, q, tr, &how);
    SimModel sim(q);
    plot_ranges(a, fp, q, sim, px, how, written);
    plot_softmax(a, q, sim, px, how, written);
  }
  if (!a.results.empty()) plot_accuracy(a, written);
  if (a.c.json) {
    std::printf("%s\n", nlohmann::json{{"written", written}}.dump(2).c_str());
  } else {
    for (const auto& w : written) std::printf("wrote %s\n", w.c_str());
  }
  return 0;
}

}  // namespace

void add_plot_command(CLI::App& app, CommandList& cmds) {
  static PlotArgs pa;
  auto* c = app.add_subcommand("plot", "SVG plots: post-LayerNorm channel ranges, post-Softmax levels, accuracy vs bits");
  c->footer("Examples:\n  reparq plot models/vit6x128.safetensors out/w4a4.safetensors -o out/plots --block 0\n"
            "  reparq plot --results docs/results.json -o docs/img");
  add_common_options(c, pa.c);
  c->add_option("models", pa.models, "MODEL (float) and QUANT_MODEL (its quantized file)")->expected(0, 2);
  c->add_option("-o,--out", pa.out, "Output directory (ranges.svg, softmax.svg, accuracy.svg)")->required();
  c->add_option("--results", pa.results, "JSON from reparq ablate --json-out: draws accuracy.svg");
  c->add_option("--block", pa.block, "Block whose LayerNorm output and attention are drawn")->capture_default_str();
  c->add_option("--site", pa.site, "Post-LayerNorm site: norm1 (qkv input) or norm2 (fc1 input)")->capture_default_str();
  c->add_option("--calib", pa.calib, "Images from the training set (default: the quantized file's calibration images)");
  c->add_option("--seed", pa.seed, "Seed of the --calib subset")->capture_default_str();
  cmds.push_back({c, [] { return run_plot(pa); }});
}

}  // namespace reparq
