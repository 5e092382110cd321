// vit.h: the float ViT/DeiT in LibTorch, in timm's tensor layout, with observation sites.
//
// One functional forward serves training, FP32 evaluation, calibration (hooks observe sites)
// and simulated quantization (hooks fake-quantize sites, weights are replaced). Parameters
// live in a name -> tensor map with timm's names (DESIGN.md), so a timm checkpoint converted
// to safetensors loads the same way.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace reparq {

struct VitConfig {
  std::string arch = "vit";      // free-form name recorded in metadata
  int64_t image_size = 28;
  int64_t patch = 4;
  int64_t in_chans = 1;
  int64_t dim = 192;
  int64_t depth = 6;
  int64_t heads = 3;
  int64_t mlp_hidden = 768;
  int64_t num_classes = 10;
  double ln_eps = 1e-6;
  float mean = 0.2860f;          // input normalization: x = (pixel/255 - mean) / std
  float std = 0.3530f;
  int64_t tokens() const { return (image_size / patch) * (image_size / patch) + 1; }
  int64_t head_dim() const { return dim / heads; }
  void validate() const;         // throws UsageError on impossible combinations
  std::map<std::string, std::string> to_metadata() const;
};

// Points in the forward pass that calibration observes and simulation quantizes.
// Per block: LN1 -> qkv -> (q, k, v) -> softmax(q k^T) -> attn x v -> proj -> +res
//            LN2 -> fc1 -> GELU -> fc2 -> +res
enum class Site {
  PatchIn,    // normalized image [B, C, H, W] (input of the patch-embedding conv)
  PatchOut,   // patch-embedding output [B, N-1, D]
  Norm1Out,   // post-LayerNorm, input of attn.qkv [B, N, D]
  QkvOut,     // attn.qkv output [B, N, 3D]
  Q, K, V,    // per head [B, H, N, hd]
  Attn,       // post-Softmax attention [B, H, N, N]
  ProjIn,     // attention output, heads concatenated [B, N, D]
  ProjOut,
  Norm2Out,   // post-LayerNorm, input of mlp.fc1 [B, N, D]
  Fc1Out,     // pre-GELU [B, N, hidden]
  Fc2In,      // post-GELU [B, N, hidden]
  Fc2Out,
  NormOut,    // final LayerNorm output of the class token, input of head [B, D]
  HeadOut,    // logits [B, classes]
};
const char* site_name(Site s);

// Called at every site with the block index (-1 outside blocks). Returns the tensor the
// forward continues with (return x unchanged to only observe).
using SiteHook = std::function<at::Tensor(int block, Site site, const at::Tensor& x)>;

class Vit {
 public:
  Vit() = default;
  explicit Vit(const VitConfig& cfg);                 // random init (timm-like), seeded by torch
  static Vit load(const std::string& path);           // safetensors, validated
  void save(const std::string& path, const std::map<std::string, std::string>& extra_meta = {}) const;

  const VitConfig& config() const { return cfg_; }
  std::map<std::string, at::Tensor>& params() { return params_; }
  const std::map<std::string, at::Tensor>& params() const { return params_; }
  const at::Tensor& param(const std::string& name) const;   // throws if missing
  std::vector<at::Tensor> trainable();                      // in a fixed order

  // images: uint8 [B, H, W] or float normalized [B, C, H, W]. Returns logits [B, classes].
  at::Tensor forward(const at::Tensor& images, const SiteHook& hook = nullptr) const;
  // uint8 [B, H, W] pixels -> normalized float [B, C, H, W].
  at::Tensor normalize(const at::Tensor& pixels_u8) const;

  // The list of (name, shape) this config requires.
  std::vector<std::pair<std::string, std::vector<int64_t>>> expected_shapes() const;

 private:
  friend Vit stress_outliers(const Vit& m, int64_t channels, double factor, uint64_t seed, bool compensate);
  VitConfig cfg_;
  std::map<std::string, at::Tensor> params_;
};

class Vit;
// Outlier stress (function-preserving): in every block, `channels` channels of norm1 and of
// norm2 (drawn with `seed`) get their LayerNorm gamma and beta multiplied by `factor`, and the
// consuming Linear's (qkv, fc1) columns divided by `factor`. The float function is unchanged;
// the post-LayerNorm activations get channel ranges `factor` times wider, as in ImageNet DeiTs.
// compensate = false is the hard stress: the consuming columns are left as they were, so the
// function changes and the model must be fine-tuned to recover (`reparq train --init M
// --hard-stress CxK`); the folded weights W diag(rho) then carry the large columns.
Vit stress_outliers(const Vit& m, int64_t channels, double factor, uint64_t seed, bool compensate = true);

}  // namespace reparq
