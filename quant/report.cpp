// report.cpp: per-site quantization error of a quantized model against its float model.
#include "quant/report.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "calib/vit.h"
#include "kernels/error.h"
#include "quant/sim.h"

namespace reparq {

namespace {

// Streaming sums for a signal/noise ratio and a cosine: memory does not grow with the images.
struct Acc {
  double ref2 = 0, err2 = 0, dot = 0, got2 = 0;
  void add(const torch::Tensor& ref, const torch::Tensor& got) {
    torch::Tensor r = ref.to(torch::kFloat64), g = got.to(torch::kFloat64);
    ref2 += r.square().sum().item<double>();
    got2 += g.square().sum().item<double>();
    err2 += (g - r).square().sum().item<double>();
    dot += (g * r).sum().item<double>();
  }
  double sqnr_db() const {
    if (err2 <= 0) return std::numeric_limits<double>::infinity();
    return 10.0 * std::log10(ref2 / err2);
  }
  double cosine() const { return ref2 > 0 && got2 > 0 ? dot / std::sqrt(ref2 * got2) : 0.0; }
};

struct SiteStats {
  Acc local, out;
  int64_t clipped = 0, count = 0;
};

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

std::string range_summary(std::vector<float> v, const char* what) {
  v.erase(std::remove_if(v.begin(), v.end(), [](float x) { return !std::isfinite(x) || x <= 0; }), v.end());
  if (v.empty()) return "-";
  std::sort(v.begin(), v.end());
  if (v.front() == v.back()) return fmt("%.3g", v.front());
  return fmt("%.3g", v.front()) + " .. " + fmt("%.3g", v.back()) + " (median " + fmt("%.3g", v[v.size() / 2]) + ", " +
         std::to_string(v.size()) + " " + what + ")";
}

// Channel-wise scales behind a re-parameterized LayerNorm: the fold multiplied gamma_c by
// s~ / s_c, so s_c = s~ * gamma_c / gamma'_c (channels with gamma ~ 0 carry no information).
std::vector<float> channel_scales(const at::Tensor& fp_gamma, const std::vector<float>& q_gamma, float target) {
  std::vector<float> s;
  torch::Tensor g = fp_gamma.contiguous().to(torch::kFloat32);
  const float* p = g.data_ptr<float>();
  for (size_t c = 0; c < q_gamma.size(); ++c)
    if (std::fabs(q_gamma[c]) > 1e-12f && std::fabs(p[c]) > 1e-12f) s.push_back(std::fabs(target * p[c] / q_gamma[c]));
  return s;
}

std::string gemm_kind(const QLinear& l) {
  return std::string("int GEMM u") + std::to_string(l.input.bits) + " x s" + std::to_string(l.wbits) + " -> s32";
}

struct Key {
  int block;
  Site site;
  bool operator<(const Key& o) const { return block != o.block ? block < o.block : site < o.site; }
};

}  // namespace

std::vector<int64_t> calibration_ids_of(const QuantModel& q) {
  std::vector<int64_t> ids;
  auto it = q.metadata.find("calib.ids");
  if (it == q.metadata.end()) return ids;
  if (it->second.empty()) return ids;
  std::stringstream ss(it->second);
  std::string tok;
  while (std::getline(ss, tok, ',')) {
    char* end = nullptr;
    const long long v = std::strtoll(tok.c_str(), &end, 10);
    if (tok.empty() || *end != '\0' || v < 0)
      throw InputError("metadata calib.ids holds '" + tok + "', not an index of the training set");
    ids.push_back(v);
  }
  return ids;
}

SiteReport analyze_sites(const Vit& fp, const QuantModel& q, const ImageSet& train, const std::vector<int64_t>& ids) {
  const VitConfig& c = fp.config();
  if (c.dim != q.dim || c.depth != q.depth || c.heads != q.heads || c.num_classes != q.num_classes ||
      c.image_size != q.image_size || c.patch != q.patch)
    throw UsageError("the float model (depth " + std::to_string(c.depth) + ", dim " + std::to_string(c.dim) +
                     ") is not the model the quantized file was made from (depth " + std::to_string(q.depth) +
                     ", dim " + std::to_string(q.dim) + ")");
  if (ids.empty()) throw UsageError("per-site report: no images to analyse");
  for (int64_t id : ids)
    if (id < 0 || id >= train.count) throw InputError("per-site report: image index " + std::to_string(id) + " is outside the training set");

  nlohmann::json recipe = nlohmann::json::object();
  if (auto it = q.metadata.find("recipe"); it != q.metadata.end()) recipe = nlohmann::json::parse(it->second, nullptr, false);
  if (recipe.is_discarded()) recipe = nlohmann::json::object();
  auto rs = [&](const char* k, const std::string& d) { return recipe.contains(k) && recipe[k].is_string() ? recipe[k].get<std::string>() : d; };
  auto rb = [&](const char* k) { return recipe.contains(k) && recipe[k].is_boolean() && recipe[k].get<bool>(); };
  const bool reparam = rb("reparam"), fold_head = rb("fold_head");
  const std::string ln_kind = rs("ln_quant", "?") + (reparam ? ", re-parameterized (" + rs("target", "?") + ")" : "");
  const std::string act_kind = rs("act", "?");
  const bool balanced = rb("qk_balance") || rb("v_balance");

  torch::NoGradGuard ng;
  SimModel fsim(fp), qsim(q);
  std::map<Key, SiteStats> st;
  const int64_t batch = 16;
  for (size_t b0 = 0; b0 < ids.size(); b0 += batch) {
    const int64_t B = std::min<int64_t>(batch, int64_t(ids.size() - b0));
    torch::Tensor px = torch::empty({B, train.rows, train.cols}, torch::kUInt8);
    for (int64_t i = 0; i < B; ++i)
      std::memcpy(px[i].data_ptr<uint8_t>(), train.image(ids[b0 + i]), size_t(train.rows * train.cols));
    std::map<Key, torch::Tensor> ref;
    fsim.forward(px, [&](int blk, Site s, const torch::Tensor& x) { ref[{blk, s}] = x; return x; });
    qsim.forward(px, [&](int blk, Site s, const torch::Tensor& x) {
      const Key k{blk, s};
      SiteStats& ss = st[k];
      torch::Tensor r = ref.at(k);
      // q/k (and v) balancing rescales channels of the qkv output, exactly in real arithmetic;
      // compare after removing that per-channel scale (least-squares fit on this batch).
      if (balanced && (s == Site::Q || s == Site::K || s == Site::V || s == Site::QkvOut)) {
        std::vector<int64_t> dims = s == Site::QkvOut ? std::vector<int64_t>{0, 1} : std::vector<int64_t>{0, 2};
        torch::Tensor fit = (x * r).sum(dims, true) / (r * r).sum(dims, true).clamp_min(1e-30);
        r = r * fit;
      }
      const QBlock* qb = blk >= 0 ? &q.blocks[size_t(blk)] : nullptr;
      const ActQuant* aq = nullptr;
      switch (s) {
        case Site::Norm1Out: aq = &qb->qkv.input; break;
        case Site::ProjIn: aq = &qb->proj.input; break;
        case Site::Norm2Out: aq = &qb->fc1.input; break;
        case Site::Fc2In: aq = &qb->fc2.input; break;
        case Site::NormOut: aq = &q.head.input; break;
        case Site::Q: aq = &qb->q; break;
        case Site::K: aq = &qb->k; break;
        case Site::V: aq = &qb->v; break;
        default: break;
      }
      if (aq) {
        torch::Tensor xq = fake_quant(x, *aq);
        ss.local.add(x, xq);
        const double lo = -double(aq->zero) * aq->scale, hi = double(aq->qmax() - aq->zero) * aq->scale;
        ss.clipped += ((x < lo) | (x > hi)).sum().item<int64_t>();
        ss.count += x.numel();
        if (s == Site::Q || s == Site::K || s == Site::V) ss.out.add(r, xq);
      } else if (s == Site::Attn) {
        torch::Tensor aqv = fake_quant_attn(x, qb->attn);
        ss.local.add(x, aqv);
        ss.out.add(r, aqv);
        ss.clipped += (x > qb->attn.level(0)).sum().item<int64_t>();
        ss.count += x.numel();
      } else {
        ss.out.add(r, x);   // a Linear's output
      }
      return x;
    });
  }

  SiteReport rep;
  rep.images = int64_t(ids.size());
  rep.ids = ids;
  auto fill_local = [&](SiteRow& row, const SiteStats& s) {
    row.sqnr_db = s.local.sqnr_db();
    row.clipped_pct = s.count ? 100.0 * double(s.clipped) / double(s.count) : 0.0;
  };
  auto linear_row = [&](const std::string& name, const QLinear& l, Site in, Site out, int blk,
                        const std::string& kind, const std::string& scales) {
    SiteRow row;
    row.site = name;
    row.quantizer = kind;
    row.abits = l.input.bits;
    row.wbits = l.wbits;
    row.scales = scales;
    row.weight_scales = range_summary(l.w_scale, "channels");
    row.lo = l.input.zero ? -double(l.input.zero) * l.input.scale : 0.0;
    row.hi = double(l.input.qmax() - l.input.zero) * l.input.scale;
    if (in == Site::PatchIn) row.sqnr_db = std::numeric_limits<double>::infinity();   // raw pixels: exact
    else fill_local(row, st.at({blk, in}));
    const SiteStats& o = st.at({blk, out});
    row.out_sqnr_db = o.out.sqnr_db();
    row.out_cosine = o.out.cosine();
    row.integer = gemm_kind(l);
    rep.rows.push_back(row);
  };
  auto one_scale = [](const ActQuant& a) { return fmt("%.4g", a.scale) + " (zero " + std::to_string(a.zero) + ")"; };

  linear_row("patch_embed", q.patch_embed, Site::PatchIn, Site::PatchOut, -1, "raw pixels (exact)", "1 (zero 0)");
  for (int b = 0; b < int(q.depth); ++b) {
    const QBlock& qb = q.blocks[size_t(b)];
    const std::string p = "blocks." + std::to_string(b) + ".";
    auto gamma = [&](const char* n) { return fp.param(p + n); };
    linear_row(p + "attn.qkv", qb.qkv, Site::Norm1Out, Site::QkvOut, b, ln_kind,
               reparam ? "layer " + one_scale(qb.qkv.input) + "; channels " +
                             range_summary(channel_scales(gamma("norm1.weight"), qb.ln1_w, qb.qkv.input.scale), "channels")
                       : one_scale(qb.qkv.input));
    const char* qkv_names[3] = {"attn.q", "attn.k", "attn.v"};
    const Site qkv_sites[3] = {Site::Q, Site::K, Site::V};
    const ActQuant* qkv_q[3] = {&qb.q, &qb.k, &qb.v};
    for (int i = 0; i < 3; ++i) {
      SiteRow row;
      row.site = p + qkv_names[i];
      row.quantizer = act_kind + (i < 2 && rb("qk_balance") ? ", q/k balanced" : "");
      row.abits = qkv_q[i]->bits;
      row.scales = one_scale(*qkv_q[i]);
      row.lo = -double(qkv_q[i]->zero) * qkv_q[i]->scale;
      row.hi = double(qkv_q[i]->qmax() - qkv_q[i]->zero) * qkv_q[i]->scale;
      const SiteStats& s = st.at({b, qkv_sites[i]});
      fill_local(row, s);
      row.out_sqnr_db = s.out.sqnr_db();
      row.out_cosine = s.out.cosine();
      row.integer = i < 2 ? "int GEMM Q x K^T" : "int GEMM attention x V";
      rep.rows.push_back(row);
    }
    {
      SiteRow row;
      row.site = p + "attn.softmax";
      row.quantizer = qb.attn.kind;
      row.abits = qb.attn.bits;
      row.scales = "levels " + fmt("%.3g", qb.attn.level(int(qb.attn.lut.size()) - 1)) + " .. " + fmt("%.3g", qb.attn.level(0));
      row.lo = 0;
      row.hi = qb.attn.level(0);
      const SiteStats& s = st.at({b, Site::Attn});
      fill_local(row, s);
      row.out_sqnr_db = s.out.sqnr_db();
      row.out_cosine = s.out.cosine();
      row.integer = "float softmax row -> code by thresholds -> 8-bit level LUT";
      rep.rows.push_back(row);
    }
    linear_row(p + "attn.proj", qb.proj, Site::ProjIn, Site::ProjOut, b, act_kind, one_scale(qb.proj.input));
    linear_row(p + "mlp.fc1", qb.fc1, Site::Norm2Out, Site::Fc1Out, b, ln_kind,
               reparam ? "layer " + one_scale(qb.fc1.input) + "; channels " +
                             range_summary(channel_scales(gamma("norm2.weight"), qb.ln2_w, qb.fc1.input.scale), "channels")
                       : one_scale(qb.fc1.input));
    linear_row(p + "mlp.fc2", qb.fc2, Site::Fc2In, Site::Fc2Out, b,
               qb.fc2.input.lut.empty() ? act_kind : "non-uniform levels, 8-bit grid", one_scale(qb.fc2.input));
  }
  const bool head_folded = reparam && fold_head;
  linear_row("head", q.head, Site::NormOut, Site::HeadOut, -1, head_folded ? ln_kind : act_kind,
             head_folded ? "layer " + one_scale(q.head.input) + "; channels " +
                               range_summary(channel_scales(fp.param("norm.weight"), q.norm_w, q.head.input.scale), "channels")
                         : one_scale(q.head.input));
  return rep;
}

namespace {
nlohmann::json num_or_null(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }
std::string db(double v) { return std::isfinite(v) ? fmt("%.1f", v) : "exact"; }
}  // namespace

std::string SiteReport::to_json() const {
  nlohmann::json a = nlohmann::json::array();
  for (const SiteRow& r : rows)
    a.push_back({{"site", r.site}, {"quantizer", r.quantizer}, {"abits", r.abits}, {"wbits", r.wbits},
                 {"scales", r.scales}, {"weight_scales", r.weight_scales}, {"lo", r.lo}, {"hi", r.hi},
                 {"clipped_pct", r.clipped_pct}, {"sqnr_db", num_or_null(r.sqnr_db)},
                 {"out_sqnr_db", num_or_null(r.out_sqnr_db)}, {"out_cosine", r.out_cosine}, {"integer", r.integer}});
  return a.dump();
}

std::string SiteReport::to_markdown() const {
  std::string md =
      "| site | quantizer | A bits | W bits | input scale(s) | range | clipped % | SQNR dB (quantizer) | "
      "output SQNR dB vs FP32 | output cosine | weight scales | runs as |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const SiteRow& r : rows) {
    md += "| " + r.site + " | " + r.quantizer + " | " + std::to_string(r.abits) + " | " +
          (r.wbits ? std::to_string(r.wbits) : std::string("-")) + " | " + r.scales + " | [" + fmt("%.3g", r.lo) +
          ", " + fmt("%.3g", r.hi) + "] | " + fmt("%.3f", r.clipped_pct) + " | " + db(r.sqnr_db) + " | " +
          db(r.out_sqnr_db) + " | " + fmt("%.5f", r.out_cosine) + " | " + (r.weight_scales.empty() ? "-" : r.weight_scales) +
          " | " + r.integer + " |\n";
  }
  return md;
}

}  // namespace reparq
