// vit.cpp: float ViT forward in LibTorch (functional, timm tensor names), load and save.
#include "calib/vit.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include "kernels/error.h"
#include "kernels/safetensors.h"

namespace reparq {

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << "]";
  return o.str();
}

std::string blk(int64_t i, const char* rest) { return "blocks." + std::to_string(i) + "." + rest; }

}  // namespace

const char* site_name(Site s) {
  switch (s) {
    case Site::PatchIn: return "patch_in";
    case Site::PatchOut: return "patch_out";
    case Site::Norm1Out: return "norm1_out";
    case Site::QkvOut: return "qkv_out";
    case Site::Q: return "q";
    case Site::K: return "k";
    case Site::V: return "v";
    case Site::Attn: return "attn";
    case Site::ProjIn: return "proj_in";
    case Site::ProjOut: return "proj_out";
    case Site::Norm2Out: return "norm2_out";
    case Site::Fc1Out: return "fc1_out";
    case Site::Fc2In: return "fc2_in";
    case Site::Fc2Out: return "fc2_out";
    case Site::NormOut: return "norm_out";
    case Site::HeadOut: return "head_out";
  }
  return "?";
}

void VitConfig::validate() const {
  auto bad = [](const std::string& m) { throw UsageError("model config: " + m); };
  if (image_size <= 0 || patch <= 0 || image_size % patch) bad("image size must be a positive multiple of the patch size");
  if (in_chans <= 0 || dim <= 0 || depth <= 0 || heads <= 0 || mlp_hidden <= 0 || num_classes <= 0) bad("all sizes must be positive");
  if (dim % heads) bad("dim " + std::to_string(dim) + " is not divisible by heads " + std::to_string(heads));
  if (!(ln_eps > 0) || !(std > 0)) bad("ln_eps and std must be positive");
}

std::map<std::string, std::string> VitConfig::to_metadata() const {
  auto f = [](double v) { std::ostringstream o; o.precision(9); o << v; return o.str(); };
  return {{"format", "reparq-float-1"},     {"arch", arch},
          {"image_size", std::to_string(image_size)}, {"patch_size", std::to_string(patch)},
          {"in_chans", std::to_string(in_chans)},     {"num_heads", std::to_string(heads)},
          {"ln_eps", f(ln_eps)},                      {"mean", f(mean)},
          {"std", f(std)},                            {"num_classes", std::to_string(num_classes)}};
}

std::vector<std::pair<std::string, std::vector<int64_t>>> Vit::expected_shapes() const {
  const auto& c = cfg_;
  int64_t D = c.dim, H = c.mlp_hidden;
  std::vector<std::pair<std::string, std::vector<int64_t>>> s = {
      {"patch_embed.proj.weight", {D, c.in_chans, c.patch, c.patch}},
      {"patch_embed.proj.bias", {D}},
      {"cls_token", {1, 1, D}},
      {"pos_embed", {1, c.tokens(), D}},
  };
  for (int64_t i = 0; i < c.depth; ++i) {
    s.push_back({blk(i, "norm1.weight"), {D}});
    s.push_back({blk(i, "norm1.bias"), {D}});
    s.push_back({blk(i, "attn.qkv.weight"), {3 * D, D}});
    s.push_back({blk(i, "attn.qkv.bias"), {3 * D}});
    s.push_back({blk(i, "attn.proj.weight"), {D, D}});
    s.push_back({blk(i, "attn.proj.bias"), {D}});
    s.push_back({blk(i, "norm2.weight"), {D}});
    s.push_back({blk(i, "norm2.bias"), {D}});
    s.push_back({blk(i, "mlp.fc1.weight"), {H, D}});
    s.push_back({blk(i, "mlp.fc1.bias"), {H}});
    s.push_back({blk(i, "mlp.fc2.weight"), {D, H}});
    s.push_back({blk(i, "mlp.fc2.bias"), {D}});
  }
  s.push_back({"norm.weight", {D}});
  s.push_back({"norm.bias", {D}});
  s.push_back({"head.weight", {c.num_classes, D}});
  s.push_back({"head.bias", {c.num_classes}});
  return s;
}

Vit::Vit(const VitConfig& cfg) : cfg_(cfg) {
  cfg_.validate();
  torch::NoGradGuard ng;
  auto tn = [](std::vector<int64_t> shape, double std) {
    return torch::randn(shape).mul_(std).clamp_(-2 * std, 2 * std);
  };
  for (const auto& [name, shape] : expected_shapes()) {
    torch::Tensor t;
    bool is_bias = name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    if (name.find("norm") != std::string::npos && !is_bias) t = torch::ones(shape);
    else if (is_bias) t = torch::zeros(shape);
    else if (name == "cls_token" || name == "pos_embed") t = tn(shape, 0.02);
    else if (name == "patch_embed.proj.weight") {
      double fan_in = double(cfg_.in_chans * cfg_.patch * cfg_.patch);
      t = tn(shape, 1.0 / std::sqrt(fan_in));
    } else t = tn(shape, 0.02);
    params_[name] = t;
  }
}

const at::Tensor& Vit::param(const std::string& name) const {
  auto it = params_.find(name);
  if (it == params_.end()) throw Error(kExitInternal, "model has no parameter '" + name + "'");
  return it->second;
}

std::vector<at::Tensor> Vit::trainable() {
  std::vector<at::Tensor> v;
  for (auto& [n, t] : params_) {
    t.requires_grad_(true);
    v.push_back(t);
  }
  return v;
}

Vit Vit::load(const std::string& path) {
  SafeTensorsFile f = SafeTensorsFile::open(path);
  VitConfig c;
  const TensorView& cls = f.get("cls_token");
  if (cls.shape.size() != 3) throw InputError(path + ": tensor 'cls_token' has shape " + shape_str(cls.shape) + ", expected [1, 1, dim]");
  c.dim = cls.shape[2];
  const TensorView& pe = f.get("patch_embed.proj.weight");
  if (pe.shape.size() != 4 || pe.shape[2] != pe.shape[3])
    throw InputError(path + ": tensor 'patch_embed.proj.weight' has shape " + shape_str(pe.shape) + ", expected [dim, chans, p, p]");
  c.in_chans = pe.shape[1];
  c.patch = pe.shape[2];
  const TensorView& pos = f.get("pos_embed");
  if (pos.shape.size() != 3 || pos.shape[1] < 2) throw InputError(path + ": tensor 'pos_embed' has shape " + shape_str(pos.shape) + ", expected [1, tokens, dim]");
  int64_t grid = static_cast<int64_t>(std::llround(std::sqrt(double(pos.shape[1] - 1))));
  if (grid * grid != pos.shape[1] - 1) throw InputError(path + ": pos_embed has " + std::to_string(pos.shape[1]) + " tokens, not 1 + a square grid");
  c.image_size = grid * c.patch;
  // depth = 1 + the largest N of any "blocks.N." tensor, so that a block with a missing tensor
  // (even its norm1.weight) is reported below instead of silently ending the model there.
  c.depth = 0;
  for (const TensorView& t : f.tensors()) {
    if (t.name.compare(0, 7, "blocks.") != 0) continue;
    const char* p = t.name.c_str() + 7;
    char* end = nullptr;
    long n = std::strtol(p, &end, 10);
    if (end != p && *end == '.' && n >= 0 && n < 100000) c.depth = std::max<int64_t>(c.depth, n + 1);
  }
  if (c.depth == 0) throw InputError(path + ": missing tensor 'blocks.0.norm1.weight' (no transformer blocks)");
  const TensorView& fc1 = f.get("blocks.0.mlp.fc1.weight");
  if (fc1.shape.size() != 2) throw InputError(path + ": tensor 'blocks.0.mlp.fc1.weight' has shape " + shape_str(fc1.shape) + ", expected [hidden, dim]");
  c.mlp_hidden = fc1.shape[0];
  const TensorView& head = f.get("head.weight");
  if (head.shape.size() != 2) throw InputError(path + ": tensor 'head.weight' has shape " + shape_str(head.shape) + ", expected [classes, dim]");
  c.num_classes = head.shape[0];
  if (f.metadata().count("num_heads") == 0)
    throw InputError(path + ": metadata key 'num_heads' is missing (the number of attention heads cannot be told from the shapes)");
  c.heads = f.meta_int("num_heads");
  c.ln_eps = f.meta_double("ln_eps", 1e-6);
  c.mean = static_cast<float>(f.meta_double("mean", c.mean));
  c.std = static_cast<float>(f.meta_double("std", c.std));
  c.arch = f.meta_str("arch", "vit");
  try {
    c.validate();
  } catch (const UsageError& e) {
    throw InputError(path + ": " + e.what());
  }
  Vit m;
  m.cfg_ = c;
  for (const auto& [name, shape] : m.expected_shapes()) {
    const TensorView& t = f.get(name, shape);
    torch::Tensor x;
    switch (t.dtype) {
      case DType::F32: x = torch::from_blob(const_cast<uint8_t*>(t.data), shape, torch::kFloat32).clone(); break;
      case DType::F16: x = torch::from_blob(const_cast<uint8_t*>(t.data), shape, torch::kFloat16).to(torch::kFloat32); break;
      case DType::BF16: x = torch::from_blob(const_cast<uint8_t*>(t.data), shape, torch::kBFloat16).to(torch::kFloat32); break;
      default: throw InputError(path + ": tensor '" + name + "' has dtype " + dtype_name(t.dtype) + ", expected a float type");
    }
    if (!torch::isfinite(x).all().item<bool>()) throw InputError(path + ": tensor '" + name + "' holds NaN or infinite values");
    m.params_[name] = x;
  }
  return m;
}

void Vit::save(const std::string& path, const std::map<std::string, std::string>& extra_meta) const {
  SafeTensorsWriter w;
  for (const auto& [name, shape] : expected_shapes()) {
    torch::Tensor t = param(name).detach().contiguous().to(torch::kFloat32);
    w.add(name, DType::F32, shape, t.data_ptr<float>(), t.numel() * sizeof(float));
  }
  for (const auto& [k, v] : cfg_.to_metadata()) w.set_metadata(k, v);
  for (const auto& [k, v] : extra_meta) w.set_metadata(k, v);
  w.write(path);
}

at::Tensor Vit::normalize(const at::Tensor& px) const {
  torch::Tensor x = px.to(torch::kFloat32).div(255.0f).sub(cfg_.mean).div(cfg_.std);
  if (x.dim() == 3) x = x.unsqueeze(1);
  if (cfg_.in_chans > 1 && x.size(1) == 1) x = x.expand({x.size(0), cfg_.in_chans, x.size(2), x.size(3)});
  return x;
}

at::Tensor Vit::forward(const at::Tensor& images, const SiteHook& hook) const {
  const auto& c = cfg_;
  auto H = [&](int b, Site s, torch::Tensor x) { return hook ? hook(b, s, x) : x; };
  auto P = [&](const std::string& n) -> const torch::Tensor& { return param(n); };

  torch::Tensor x = images.scalar_type() == torch::kUInt8 ? normalize(images) : images;
  if (x.dim() != 4 || x.size(1) != c.in_chans || x.size(2) != c.image_size || x.size(3) != c.image_size)
    throw UsageError("model input has shape " + shape_str(x.sizes().vec()) + ", expected [B, " +
                     std::to_string(c.in_chans) + ", " + std::to_string(c.image_size) + ", " + std::to_string(c.image_size) + "]");
  const int64_t B = x.size(0), N = c.tokens(), D = c.dim, nh = c.heads, hd = c.head_dim();
  x = H(-1, Site::PatchIn, x);
  x = torch::conv2d(x, P("patch_embed.proj.weight"), P("patch_embed.proj.bias"), c.patch);
  x = x.flatten(2).transpose(1, 2);  // [B, N-1, D]
  x = H(-1, Site::PatchOut, x);
  x = torch::cat({P("cls_token").expand({B, 1, D}), x}, 1) + P("pos_embed");
  const double scale = 1.0 / std::sqrt(double(hd));
  for (int b = 0; b < c.depth; ++b) {
    auto pn = [&](const char* r) -> const torch::Tensor& { return P(blk(b, r)); };
    torch::Tensor h = torch::layer_norm(x, {D}, pn("norm1.weight"), pn("norm1.bias"), c.ln_eps);
    h = H(b, Site::Norm1Out, h);
    h = torch::linear(h, pn("attn.qkv.weight"), pn("attn.qkv.bias"));
    h = H(b, Site::QkvOut, h);
    auto qkv = h.reshape({B, N, 3, nh, hd}).permute({2, 0, 3, 1, 4});  // [3, B, nh, N, hd]
    torch::Tensor q = H(b, Site::Q, qkv[0]), k = H(b, Site::K, qkv[1]), v = H(b, Site::V, qkv[2]);
    torch::Tensor a = torch::matmul(q, k.transpose(-2, -1)).mul(scale).softmax(-1);
    a = H(b, Site::Attn, a);
    h = torch::matmul(a, v).transpose(1, 2).reshape({B, N, D});
    h = H(b, Site::ProjIn, h);
    h = torch::linear(h, pn("attn.proj.weight"), pn("attn.proj.bias"));
    h = H(b, Site::ProjOut, h);
    x = x + h;
    h = torch::layer_norm(x, {D}, pn("norm2.weight"), pn("norm2.bias"), c.ln_eps);
    h = H(b, Site::Norm2Out, h);
    h = torch::linear(h, pn("mlp.fc1.weight"), pn("mlp.fc1.bias"));
    h = H(b, Site::Fc1Out, h);
    h = torch::gelu(h);
    h = H(b, Site::Fc2In, h);
    h = torch::linear(h, pn("mlp.fc2.weight"), pn("mlp.fc2.bias"));
    h = H(b, Site::Fc2Out, h);
    x = x + h;
  }
  torch::Tensor t = torch::layer_norm(x.select(1, 0), {D}, P("norm.weight"), P("norm.bias"), c.ln_eps);
  t = H(-1, Site::NormOut, t);
  t = torch::linear(t, P("head.weight"), P("head.bias"));
  return H(-1, Site::HeadOut, t);
}

Vit stress_outliers(const Vit& m, int64_t channels, double factor, uint64_t seed, bool compensate) {
  const VitConfig& c = m.config();
  if (channels <= 0 || channels > c.dim) throw UsageError("stress: channels must be in 1.." + std::to_string(c.dim));
  if (!(factor > 0)) throw UsageError("stress: factor must be positive");
  torch::NoGradGuard ng;
  Vit out = m;
  for (auto& [n, t] : out.params_) t = t.clone();
  torch::Generator gen = at::detail::createCPUGenerator(seed);
  for (int64_t i = 0; i < c.depth; ++i) {
    for (const auto& [ln, lin] : {std::pair<const char*, const char*>{"norm1", "attn.qkv"}, {"norm2", "mlp.fc1"}}) {
      torch::Tensor idx = torch::randperm(c.dim, gen, torch::kLong).slice(0, 0, channels);
      for (const char* part : {".weight", ".bias"}) {
        torch::Tensor& g = out.params_[blk(i, (std::string(ln) + part).c_str())];
        g.index_copy_(0, idx, g.index_select(0, idx) * factor);
      }
      if (!compensate) continue;
      torch::Tensor& w = out.params_[blk(i, (std::string(lin) + ".weight").c_str())];
      w.index_copy_(1, idx, w.index_select(1, idx) / factor);
    }
  }
  out.cfg_.arch = c.arch + (compensate ? "-stress" : "-hardstress") + std::to_string(channels) + "x" + std::to_string(int(factor));
  return out;
}

}  // namespace reparq
