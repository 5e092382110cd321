// sim.h: the simulated quantized ViT ("--engine sim"): the forward pass of docs/FORMAT.md with
// LibTorch tensors, quantize-dequantize at every site. It is also the model that calibration
// runs sequentially: a site whose quantizer is not set yet passes its float value through,
// a Linear whose weights are not quantized yet uses its float weights.
#pragma once
#include <ATen/core/Tensor.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "calib/data.h"
#include "calib/evaluate.h"
#include "calib/vit.h"
#include "kernels/qmodel.h"

namespace reparq {

struct SimLinear {
  at::Tensor weight;                 // [out, in] float: dequantized or original
  at::Tensor bias;                   // [out]
  std::optional<ActQuant> input;     // quantizer of the input, if calibrated
  // [in, in] error-feedback gains (ef_gains of the QLinear): when defined, the input rows are
  // rounded with error feedback (FORMAT.md) in forward passes without gradients; undefined =
  // round to nearest. Block reconstruction learns with round to nearest.
  at::Tensor ef;
};

struct SimBlock {
  at::Tensor ln1_w, ln1_b, ln2_w, ln2_b;
  SimLinear qkv, proj, fc1, fc2;
  std::optional<ActQuant> q, k, v;
  std::optional<AttnQuant> attn;
  std::optional<ClsQuant> cls;       // the class token's row (QBlock::cls)
  bool attn_cls_dynamic = false;     // the class token's post-Softmax row with its own scale (QBlock)
  at::Tensor fc2_in_mul;             // [H] GELU output multiplier (QBlock::fc2_in_mul); undefined = none
};

class SimModel {
 public:
  explicit SimModel(const QuantModel& q);   // fully quantized, from a file
  explicit SimModel(const Vit& fp);          // float start for calibration (nothing quantized)

  // pixels: uint8 [B, H, W]. The hook only observes (its return value is ignored). It sees
  // each quantized site's value BEFORE it is quantized: Norm1Out, Q, K, V, Attn, ProjIn,
  // Norm2Out, Fc2In, NormOut; and every Linear's float output: PatchOut, QkvOut, ProjOut,
  // Fc1Out (pre-GELU), Fc2Out, HeadOut (Site enum of calib/vit.h).
  at::Tensor forward(const at::Tensor& pixels, const SiteHook& hook = nullptr) const;
  // The residual stream entering block 0: patch embedding, class token, position embedding.
  at::Tensor embed(const at::Tensor& pixels, const SiteHook& hook = nullptr) const;

  int64_t image_size, patch, in_chans, dim, depth, heads, num_classes;
  double ln_eps;
  float mean, std;
  SimLinear patch_embed;   // over raw pixels in (c, y, x) patch order; normalization folded
  at::Tensor cls_token, pos_embed, norm_w, norm_b;
  std::vector<SimBlock> blocks;
  SimLinear head;
};

// Replaces the fake quantization of a uniform site (Q, K, V and the Linear inputs Norm1Out,
// ProjIn, Norm2Out, Fc2In): block reconstruction learns their scales through it.
using SiteQuant = std::function<at::Tensor(Site, const at::Tensor&, const ActQuant&)>;
// One block of SimModel::forward: residual stream x [B, N, D] -> x. Differentiable when its
// tensors require grad (the post-Softmax quantizer is then straight-through); `block` is the
// index passed to the hook.
at::Tensor sim_block_forward(const SimBlock& s, const at::Tensor& x, int64_t heads, double ln_eps,
                             int block, const SiteHook& hook = nullptr, const SiteQuant& fq = nullptr);

// q/k channel balancing (Recipe::qk_balance): q channel c *= r[c], k channel c /= r[c], through
// the rows of the float qkv weight and bias (r: [D], positive). q.k^T is unchanged.
void scale_qk_channels(SimBlock& s, const at::Tensor& r);

// Fake quantization exactly as ActQuant::quantize / dequantize (FORMAT.md).
at::Tensor fake_quant(const at::Tensor& x, const ActQuant& q);
// Codes of a uniform quantizer (float tensor holding integers in [0, 2^bits-1]).
at::Tensor quant_codes(const at::Tensor& x, const ActQuant& q);
// Error-feedback quantize-dequantize of the rows of x [M, n] (FORMAT.md "Error-feedback
// rounding"; the same float32 operations as VitRowOps::ef_quant_row, so the same codes) with
// gains g [n, n] (ef_gains).
at::Tensor ef_fake_quant(const at::Tensor& x, const at::Tensor& g, const ActQuant& q);
// Post-Softmax quantize-dequantize through thresholds and the LUT (FORMAT.md).
at::Tensor fake_quant_attn(const at::Tensor& a, const AttnQuant& q);
// Quantize-dequantize of post-Softmax rows a [..., T] with each row's own scale
// (QBlock::attn_cls_dynamic, FORMAT.md): codes nearbyint(p * (L / m)) in [0, L], m = the row's
// max, L = 2^bits - 1, values codes * (m / L).
at::Tensor fake_quant_attn_row_dynamic(const at::Tensor& a, int bits);

EvalResult evaluate_sim(const SimModel& m, const ImageSet& set, int64_t limit, int64_t batch,
                        const std::string& label, bool keep_logits = false);

}  // namespace reparq
