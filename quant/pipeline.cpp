// pipeline.cpp: sequential calibration and quantization (see pipeline.h).
#include "quant/pipeline.h"

#include <torch/torch.h>

#include <cctype>
#include <sstream>

#include "calib/progress.h"
#include "kernels/error.h"
#include "quant/quantizers.h"
#include "quant/sim.h"

namespace reparq {

void parse_bits(const std::string& s0, int* wbits, int* abits) {
  std::string s;
  for (char c : s0) s += char(std::toupper(static_cast<unsigned char>(c)));
  int w = 0, a = 0;
  char tail = 0;
  if (std::sscanf(s.c_str(), "W%dA%d%c", &w, &a, &tail) != 2)
    throw UsageError("--bits '" + s0 + "' is not of the form W<bits>A<bits> (e.g. W4A4)");
  if (w < 2 || w > 8 || a < 2 || a > 8)
    throw UsageError("--bits '" + s0 + "': weight and activation bits must be 2..8");
  *wbits = w;
  *abits = a;
}

Recipe Recipe::preset(const std::string& method, int wbits, int abits) {
  Recipe r;
  r.method = method;
  r.wbits = wbits;
  r.abits = abits;
  if (method == "minmax") {
    r.ln_quant = "tensor-minmax"; r.reparam = false; r.fold_head = false; r.softmax = "uniform";
    r.act = "minmax"; r.weights = "minmax"; r.gptq = false; r.exact_bias = false;
  } else if (method == "repq-vit") {
    r.ln_quant = "channel-percentile"; r.reparam = true; r.target = "mean"; r.exact_bias = false;
    r.fold_head = false; r.softmax = "logsqrt2"; r.act = "percentile"; r.weights = "percentile"; r.gptq = false;
  } else if (method == "dopq-vit") {
    r.ln_quant = "channel-percentile"; r.reparam = true; r.target = "median"; r.exact_bias = false;
    r.fold_head = false; r.softmax = "tanq"; r.act = "percentile"; r.weights = "percentile"; r.gptq = false;
  } else if (method == "repquant") {
    r.ln_quant = "dual-clip"; r.reparam = true; r.target = "mean"; r.exact_bias = false;
    r.fold_head = false; r.softmax = "logsqrt2"; r.act = "percentile"; r.weights = "percentile"; r.gptq = true;
    r.dual_clip_iters = 150;   // learned clipping, as RepQuant describes it
  } else if (method == "reparq") {
    // defaults of the struct
  } else {
    throw UsageError("unknown --method '" + method + "' (minmax, repq-vit, dopq-vit, repquant, reparq)");
  }
  return r;
}

std::string Recipe::to_json() const {
  std::ostringstream o;
  o << "{\"method\":\"" << method << "\",\"wbits\":" << wbits << ",\"abits\":" << abits
    << ",\"ln_quant\":\"" << ln_quant << "\",\"dual_clip_iters\":" << dual_clip_iters
    << ",\"reparam\":" << (reparam ? "true" : "false") << ",\"target\":\"" << target
    << "\",\"exact_bias\":" << (exact_bias ? "true" : "false")
    << ",\"fold_head\":" << (fold_head ? "true" : "false") << ",\"softmax\":\"" << softmax
    << "\",\"softmax_bits\":" << (softmax_bits ? softmax_bits : abits) << ",\"act\":\"" << act
    << "\",\"weights\":\"" << weights << "\",\"gptq\":" << (gptq ? "true" : "false") << "}";
  return o.str();
}

namespace {

struct StopForward {};

class Pipeline {
 public:
  Pipeline(const Vit& fp, const torch::Tensor& calib, const Recipe& r) : sim_(fp), calib_(calib), r_(r) {}

  QuantModel run(Progress& prog) {
    // Patch embedding: input = raw pixels (exact 8-bit codes), weights per channel.
    {
      torch::Tensor px = patches();
      quantize_linear(sim_.patch_embed, out_.patch_embed, px, ActQuant{8, 1.0f, 0}, nullptr);
    }
    out_.blocks.resize(sim_.depth);
    for (int b = 0; b < sim_.depth; ++b) {
      SimBlock& s = sim_.blocks[b];
      QBlock& q = out_.blocks[b];
      post_ln(b, Site::Norm1Out, s.ln1_w, s.ln1_b, s.qkv, q.qkv);
      q.ln1_w = to_vec(s.ln1_w); q.ln1_b = to_vec(s.ln1_b);
      // q, k, v (per tensor)
      {
        auto caps = capture_many(b, {Site::Q, Site::K, Site::V});
        q.q = act_quant(caps[0]); q.k = act_quant(caps[1]); q.v = act_quant(caps[2]);
        s.q = q.q; s.k = q.k; s.v = q.v;
      }
      // post-Softmax
      {
        torch::Tensor a = capture(b, Site::Attn);
        q.attn = attn_quant(a);
        s.attn = q.attn;
      }
      // proj
      {
        torch::Tensor x = capture(b, Site::ProjIn);
        ActQuant in = act_quant(x);
        quantize_linear(s.proj, q.proj, x, in, nullptr);
      }
      post_ln(b, Site::Norm2Out, s.ln2_w, s.ln2_b, s.fc1, q.fc1);
      q.ln2_w = to_vec(s.ln2_w); q.ln2_b = to_vec(s.ln2_b);
      {
        torch::Tensor x = capture(b, Site::Fc2In);
        ActQuant in = act_quant(x);
        quantize_linear(s.fc2, q.fc2, x, in, nullptr);
      }
      prog.update(b + 1);
    }
    if (r_.fold_head) {
      post_ln(-1, Site::NormOut, sim_.norm_w, sim_.norm_b, sim_.head, out_.head);
    } else {
      torch::Tensor x = capture(-1, Site::NormOut);
      ActQuant in = act_quant(x);
      quantize_linear(sim_.head, out_.head, x, in, nullptr);
    }
    prog.update(sim_.depth + 1);
    out_.norm_w = to_vec(sim_.norm_w); out_.norm_b = to_vec(sim_.norm_b);
    out_.cls_token = to_vec(sim_.cls_token);
    out_.pos_embed = to_vec(sim_.pos_embed);
    out_.image_size = sim_.image_size; out_.patch = sim_.patch; out_.in_chans = sim_.in_chans;
    out_.dim = sim_.dim; out_.depth = sim_.depth; out_.heads = sim_.heads;
    out_.mlp_hidden = sim_.blocks.empty() ? 0 : sim_.blocks[0].fc1.weight.size(0);
    out_.num_classes = sim_.num_classes; out_.ln_eps = sim_.ln_eps; out_.mean = sim_.mean; out_.std = sim_.std;
    return out_;
  }

 private:
  static std::vector<float> to_vec(const torch::Tensor& t) {
    torch::Tensor c = t.detach().contiguous().to(torch::kFloat32);
    return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
  }

  torch::Tensor patches() const {
    const int64_t B = calib_.size(0), g = sim_.image_size / sim_.patch, p = sim_.patch;
    torch::Tensor px = calib_.to(torch::kFloat32).reshape({B, g, p, g, p}).permute({0, 1, 3, 2, 4}).reshape({B * g * g, 1, p * p});
    return px.expand({B * g * g, sim_.in_chans, p * p}).reshape({B * g * g, sim_.in_chans * p * p});
  }

  std::vector<torch::Tensor> capture_many(int block, std::vector<Site> sites) {
    std::vector<torch::Tensor> out(sites.size());
    size_t got = 0;
    try {
      sim_.forward(calib_, [&](int b, Site s, const torch::Tensor& x) {
        if (b != block) return x;
        for (size_t i = 0; i < sites.size(); ++i)
          if (sites[i] == s) {
            out[i] = x.detach().clone();
            if (++got == sites.size()) throw StopForward{};
          }
        return x;
      });
    } catch (const StopForward&) {
    }
    for (auto& t : out)
      if (!t.defined()) throw Error(kExitInternal, "calibration: a site was not reached");
    return out;
  }
  torch::Tensor capture(int block, Site s) { return capture_many(block, {s})[0]; }

  ActQuant act_quant(const torch::Tensor& x) const {
    if (r_.act == "minmax") return act_minmax(x, r_.abits);
    if (r_.act == "percentile") return act_percentile(x, r_.abits, false);
    if (r_.act == "percentile-wide") return act_percentile(x, r_.abits, true);
    throw UsageError("unknown activation range method '" + r_.act + "'");
  }

  AttnQuant attn_quant(const torch::Tensor& a) const {
    int bits = r_.softmax_bits ? r_.softmax_bits : r_.abits;
    if (r_.softmax != "auto") {
      if (r_.softmax == "uniform" && r_.act == "minmax") return make_attn_quant("uniform", bits, 1.0);
      return search_attn_quant(a, r_.softmax, bits);
    }
    AttnQuant best;
    double best_mse = INFINITY;
    torch::Tensor flat = a.reshape({-1});
    for (const char* k : {"uniform", "log2", "logsqrt2", "tanq"}) {
      AttnQuant q = search_attn_quant(a, k, bits);
      double m = (fake_quant_attn(flat, q) - flat).pow(2).mean().item<double>();
      if (m < best_mse) best_mse = m, best = q;
    }
    return best;
  }

  // Quantizes the weights of `lin` (float in the sim) with inputs x (pre-quantization values
  // of its input), writes codes to `ql` and the dequantized weights back into the sim.
  // tau: when non-null, the fold's shift vector: bias += W_ref tau, W_ref = quantized (exact)
  // or float (RepQ-ViT) folded weights.
  void quantize_linear(SimLinear& lin, QLinear& ql, const torch::Tensor& x, const ActQuant& in,
                       const torch::Tensor* tau) {
    torch::NoGradGuard ng;
    torch::Tensor W = lin.weight;
    const int64_t out = W.size(0), inf = W.size(1);
    WeightQuant wq = r_.gptq ? quantize_weight_gptq(W, fake_quant(x.reshape({-1, inf}), in), r_.wbits, r_.weights)
                             : quantize_weight(W, r_.wbits, r_.weights);
    torch::Tensor Wq = wq.dequant();
    torch::Tensor bias = lin.bias;
    if (tau) bias = bias + torch::matmul(r_.exact_bias ? Wq : W, *tau);
    lin.weight = Wq;
    lin.bias = bias;
    lin.input = in;
    ql.out = out;
    ql.in = inf;
    ql.wbits = r_.wbits;
    torch::Tensor codes = wq.codes.round().to(torch::kInt8).contiguous();
    ql.w.assign(codes.data_ptr<int8_t>(), codes.data_ptr<int8_t>() + codes.numel());
    torch::Tensor z = wq.zero.round().to(torch::kInt32).contiguous();
    ql.w_zero.assign(z.data_ptr<int32_t>(), z.data_ptr<int32_t>() + out);
    ql.w_scale = to_vec(wq.scale);
    ql.bias = to_vec(bias);
    ql.input = in;
  }

  // A post-LayerNorm site feeding `lin`: choose the quantizer, fold if the recipe says so,
  // quantize the Linear's weights on the folded model.
  void post_ln(int block, Site site, torch::Tensor& ln_w, torch::Tensor& ln_b, SimLinear& lin,
               QLinear& ql) {
    torch::NoGradGuard ng;
    torch::Tensor x = capture(block, site);
    const int64_t C = x.size(-1);
    torch::Tensor X = x.reshape({-1, C});
    const std::string& m = r_.ln_quant;
    if (m == "tensor-minmax" || m == "tensor-percentile" || !r_.reparam) {
      ActQuant in = m == "tensor-minmax" ? act_minmax(X, r_.abits) : act_percentile(X, r_.abits, false);
      quantize_linear(lin, ql, X, in, nullptr);
      return;
    }
    ChannelQuant cq;
    if (m == "channel-percentile") cq = channel_percentile(X, r_.abits);
    else if (m == "channel-minmax") cq = channel_minmax(X, r_.abits);
    else if (m == "dual-clip") cq = channel_dual_clip(X, lin.weight, r_.abits, r_.dual_clip_iters);
    else throw UsageError("unknown post-LayerNorm quantizer '" + m + "'");
    Reparam rp = make_reparam(cq, r_.target);
    // Fold: LN' = LN / rho - tau; W' = W diag(rho).
    ln_w = ln_w / rp.rho;
    ln_b = ln_b / rp.rho - rp.tau;
    lin.weight = lin.weight * rp.rho.unsqueeze(0);
    // The folded LN output, for GPTQ's Hessian (= X / rho - tau up to float rounding).
    torch::Tensor Xf = capture(block, site).reshape({-1, C});
    quantize_linear(lin, ql, Xf, rp.layer, &rp.tau);
  }

  SimModel sim_;
  torch::Tensor calib_;
  Recipe r_;
  QuantModel out_;
};

}  // namespace

QuantModel quantize_model(const Vit& fp, const ImageSet& train, const Recipe& r, const QuantizeOptions& o) {
  if (o.calib_samples <= 0) throw UsageError("--calib must be positive");
  if (o.calib_samples > train.count)
    throw UsageError("--calib " + std::to_string(o.calib_samples) + " is larger than the training set (" + std::to_string(train.count) + " images)");
  std::vector<int64_t> ids = calibration_indices(train.count, o.calib_samples, o.seed);
  torch::Tensor calib = torch::empty({int64_t(ids.size()), train.rows, train.cols}, torch::kUInt8);
  for (size_t i = 0; i < ids.size(); ++i)
    std::memcpy(calib[int64_t(i)].data_ptr<uint8_t>(), train.image(ids[i]), size_t(train.rows * train.cols));
  Progress prog("quantize " + r.method, fp.config().depth + 1, "blocks");
  Pipeline p(fp, calib, r);
  QuantModel q = p.run(prog);
  prog.finish();
  q.arch = fp.config().arch;
  std::string idlist;
  for (size_t i = 0; i < ids.size(); ++i) idlist += (i ? "," : "") + std::to_string(ids[i]);
  q.metadata["recipe"] = r.to_json();
  q.metadata["calib.seed"] = std::to_string(o.seed);
  q.metadata["calib.samples"] = std::to_string(o.calib_samples);
  q.metadata["calib.ids"] = idlist;
  q.metadata["tool"] = "reparq 0.1.0";
  return q;
}

}  // namespace reparq
