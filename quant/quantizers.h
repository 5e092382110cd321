// quantizers.h: the quantizers of reparq's recipes, as functions on LibTorch tensors.
// Math and sources: ../shared/algorithms.md (§ numbers below); conventions: docs/FORMAT.md.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "kernels/qmodel.h"

namespace reparq {

// ---- uniform activation quantizers, per tensor (§2) -------------------------------------
// [lo, hi] -> scale (hi-lo)/Q, zero clamp(nearbyint(-lo/scale), 0, Q).
ActQuant act_from_range(double lo, double hi, int bits);
ActQuant act_minmax(const at::Tensor& x, int bits);
// RepQ-ViT's search: percentile pairs p in {0.999, 0.9999, 0.99999}, keep the lowest MSE.
// `wide` adds {0.99, 0.995, 0.9995, 1.0} (reparq's recipe).
ActQuant act_percentile(const at::Tensor& x, int bits, bool wide = false);
double quant_mse(const at::Tensor& x, const ActQuant& q);
// Output-aware clip search (ours): candidates are RepQ-ViT's and the wide percentile pairs plus
// the grid lo = a * min, hi = b * max for a, b in {1, 0.85, ..., 0.25}, refined by steps of 0.05
// around the best grid point; keeps the one whose
// fake-quantized tensor minimizes loss(Q(x)) (e.g. the consuming Linear's output error).
// The candidate list contains act_percentile's, so it never does worse on the same loss.
using QuantLoss = double (*)(const at::Tensor& xq, const void* ctx);
ActQuant act_search(const at::Tensor& x, int bits, QuantLoss loss, const void* ctx);
// Losses for act_search: squared error against a reference (ctx = that tensor) and a Linear's output error ||(Q(x) - x) W^T||^2
// (ctx = LinearLossCtx).
struct LinearLossCtx {
  at::Tensor x;   // [n, in] float reference
  at::Tensor w;   // [out, in]
};
double loss_mse_to(const at::Tensor& xq, const void* ctx);      // ctx = const at::Tensor* (reference)
double loss_linear_out(const at::Tensor& xq, const void* ctx);  // ctx = const LinearLossCtx*

// Non-uniform levels on an 8-bit grid (ours, Recipe::level_sites): the grid spans x's range
// (act_from_range(min, max, 8)); 2^bits levels (grid points) are chosen by dynamic programming
// over the 256 grid cells, each level the weighted mean of its run of cells rounded to the grid,
// to minimize the squared error of x, each element weighted by chan_w[c] of its last-dim channel
// (undefined = 1). The result is an 8-bit ActQuant whose 256-entry lut maps each grid code to
// the nearest level code (ties to the lower): the FORMAT.md quantizer, codes lut[uniform code].
ActQuant act_grid_levels(const at::Tensor& x, int bits, const at::Tensor& chan_w = at::Tensor());
// The lut mapping each code 0..qmax to the nearest of the level codes `levels` (ties: lower).
std::vector<uint8_t> nearest_level_lut(std::vector<int> levels, int qmax);

// ---- per-channel quantizers of post-LayerNorm activations (§2.3, §6) -------------------
// X: [n, C]. scale [C] (float), zero [C] (float holding integers in [0, Q]).
struct ChannelQuant {
  at::Tensor scale, zero;
  int bits = 8;
};
at::Tensor fake_quant_channels(const at::Tensor& x, const ChannelQuant& q);
ChannelQuant channel_minmax(const at::Tensor& x, int bits);
ChannelQuant channel_percentile(const at::Tensor& x, int bits);           // RepQ-ViT, per channel
// Channel-wise dual clipping (RepQuant §6, our reconstruction): per channel an independent
// lower and upper clip, started from a 5x5 percentile grid chosen per channel by MSE, then
// learned with Adam through straight-through rounding to minimize the consuming Linear's
// output error ||(Q(X) - X) W^T||^2 on the calibration rows. iters = 0 stops after the grid.
ChannelQuant channel_dual_clip(const at::Tensor& x, const at::Tensor& w, int bits, int iters);
// Mean squared output error of the consuming Linear: ||(Q(X) - X) W^T||^2 / rows.
double layer_output_mse(const at::Tensor& x, const ChannelQuant& q, const at::Tensor& w);

// ---- channel-wise -> layer-wise scale re-parameterization (§5, MOSF §8.3) ---------------
struct Reparam {
  at::Tensor rho, tau;   // [C]: X' = X / rho - tau
  ActQuant layer;        // the one per-tensor quantizer of X'
};
// target: "mean" (RepQ-ViT) or "median" (MOSF, DopQ-ViT v1) of the channel scales and zero
// points; the target zero point is rounded to an integer so that layer-wise codes of X' equal
// the channel-wise codes of X (exactly in real arithmetic).
Reparam make_reparam(const ChannelQuant& q, const std::string& target);

// ---- weights, per output channel (§2.3, §9) ---------------------------------------------
struct WeightQuant {
  at::Tensor codes;   // [out, in] float holding stored values c - 2^(b-1)
  at::Tensor scale;   // [out]
  at::Tensor zero;    // [out] stored zero points z - 2^(b-1)
  int bits = 8;
  at::Tensor dequant() const;   // scale * (codes - zero)
};
// method: "minmax" or "percentile" (RepQ-ViT's 3-candidate MSE search per row).
WeightQuant quantize_weight(const at::Tensor& w, int bits, const std::string& method);
// GPTQ (§9.2): row quantizers fixed by `method` first, then columns quantized in order with
// second-order error compensation from H = X^T X of the layer's (quantized) inputs x [n, in].
WeightQuant quantize_weight_gptq(const at::Tensor& w, const at::Tensor& x, int bits,
                                 const std::string& method, double damp = 0.01, bool act_order = false);

// ---- post-Softmax quantizers (§7, §8.2; FORMAT.md's table) ------------------------------
// kind: uniform, log2, logsqrt2, tanq (param = TanQ curvature alpha in (0, pi)).
AttnQuant make_attn_quant(const std::string& kind, int bits, double scale, double param = 0.0);
// Float levels before the 8-bit LUT rounding (for the log-sqrt2 -> log2 parity test).
std::vector<double> attn_levels(const std::string& kind, int bits, double scale, double param);
// Searches the clip scale (and TanQ's alpha) on attention samples by the MSE of A.
AttnQuant search_attn_quant(const at::Tensor& a, const std::string& kind, int bits);

}  // namespace reparq
