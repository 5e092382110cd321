// pipeline.h: calibrate + quantize a float ViT into a QuantModel, following a recipe.
// Sequential calibration (RepQ-ViT, algorithms.md §4.1): every site is calibrated on the
// activations of the model whose earlier sites are already quantized.
#pragma once
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "calib/data.h"
#include "calib/vit.h"
#include "kernels/qmodel.h"

namespace reparq {

struct Recipe {
  std::string method = "reparq";
  int wbits = 4, abits = 4;
  // Post-LayerNorm activations (inputs of qkv, fc1 and, with fold_head, head):
  //   tensor-minmax | tensor-percentile | channel-percentile | dual-clip
  std::string ln_quant = "dual-clip";
  // Adam refinement of the dual clip values after the grid search. 0 (grid only) in the reparq
  // recipe: on vit6x128 over 3 calibration seeds it was better at W4A4 (86.58 vs 86.35 %) and
  // no worse at W3A3, and 2.7x faster (docs/RESULTS-3seeds.md). The repquant recipe keeps 150.
  int dual_clip_iters = 0;
  bool reparam = true;             // fold channel-wise scales into LN + next Linear
  std::string target = "median";   // mean (RepQ-ViT) | median (MOSF)
  bool exact_bias = true;          // fold bias from the quantized weights (ours) or float (RepQ)
  bool fold_head = true;           // treat norm -> head like the block LNs
  std::string softmax = "auto";    // uniform | log2 | logsqrt2 | tanq | auto (lowest MSE per layer)
  int softmax_bits = 0;            // 0 = abits
  // Other activations: minmax | percentile | percentile-wide | search (output-aware clip search,
  // act_search: q and k by the softmax output's error, v by the attention output's, the inputs
  // of proj, fc2 and an unfolded head by their Linear's output error; sites of 6 bits or more
  // use "percentile").
  std::string act = "search";
  std::string weights = "percentile";  // minmax | percentile
  bool gptq = true;                // weight reconstruction (GPTQ) after the fold
  // GPTQ's act-order: columns quantized in decreasing order of the Hessian diagonal (input
  // energy), so outlier input channels are rounded first and their error is compensated by the
  // others. In the reparq preset at <= 4-bit weights. Written to the recipe JSON only when on.
  bool gptq_act_order = false;
  // Power-of-two weight column factors (ours; FQ-ViT's power-of-two factor moved from the
  // post-LN activation into the weights): a Linear's input column c may carry 2^k_c
  // (QLinear::w_shift, format reparq-quant-6), so the folded W diag(rho) columns of outlier
  // channels no longer set every row's weight scale. Chosen per Linear by the output error
  // (pipeline.cpp quantize_linear). Written to the recipe JSON only when on. reparq preset: on
  // at <= 4-bit weights. Kept only where they halve a Linear's output error: on the hard-stress
  // model's qkv and fc1 (3 seeds, W3A3 -2.60 -> -1.44 pt, W4A4 -0.38 -> -0.26), on no Linear of
  // the other bundled models (docs/RESULTS.md, "Session 14").
  bool col_shift = false;
  // Function-preserving channel balancing before quantization (ours, docs/RESULTS.md):
  //   qk_balance: q channel c *= r_c, k channel c /= r_c (rows of the qkv weight and bias),
  //               r_c = (max|k_c| / max|q_c|)^alpha, alpha searched on the calibration data
  //               to minimize the error of the quantized attention logits;
  //   v_balance:  v channel c /= s_c and column c of proj *= s_c,
  //               s_c = max|P_c|^alpha / max|Wproj[:,c]|^(1-alpha) (P = proj input),
  //               alpha searched to minimize the proj output error.
  // Bias correction (ours, after Nagel et al.'s empirical bias correction): each Linear's mean
  // output error on the calibration rows, from its quantized input and weights, is subtracted
  // through its bias (Linears with >= 256 calibration rows: every token-level one, not the head).
  bool bias_correct = true;
  bool qk_balance = true;
  // GELU-output balancing (ours, SmoothQuant-style, at <= 5-bit fc2 inputs): the GELU output's
  // channel c is multiplied by m_c before its per-tensor quantizer (QBlock::fc2_in_mul, in the
  // file) and fc2's column c divided by it; m_c = (max|W_c| ^ (1-alpha) / max|X_c| ^ alpha),
  // alpha in {none, 0.25, 0.5, 0.75} chosen by fc2's output error. With block reconstruction,
  // m is learned too. Off by default: on vit6x128 (seed 0, with reconstruction) it lowered the
  // W3A3 KL vs FP32 by 4 % (88.35 -> 88.50 %) but raised the W4A4 KL by 12 % (90.12 -> 89.81 %).
  bool gelu_balance = false;
  bool v_balance = false;
  // Mixed precision: activation sites kept at 8 bits whatever abits says. Comma-separated
  // from: qkv (LN1 output), q, k, v, attn, proj (attention output), fc1 (LN2 output),
  // fc2 (GELU output), head (final LN output). Empty = none.
  std::string a8_sites;
  // Block reconstruction (ours, after BRECQ/QDrop without weight rounding): after a block is
  // quantized, Adam learns its uniform activation scales (log-scale, LSQ gradient through
  // straight-through rounding), a gain per weight row, its biases and its LayerNorm affines,
  // so that the quantized block, fed the quantized model's input, reproduces the float
  // block's output on the float model's input (MSE; 8 images per step, lr 1e-3). With a
  // folded head, the final LayerNorm + head likewise against the float logits (half the
  // steps). Integer weights (GPTQ's), zero points and post-Softmax quantizers stay; what is
  // learned lands in the file's float parameters (scales, w_scale, bias, LN affine), so the
  // format and executor are unchanged. Steps per block; 0 = off; runs only when some
  // activation site has <= 5 bits (kMaxReconBits) and the calibration set has at least 512
  // token rows (kMinReconRows: 11 images of the bundled models; fewer overfit).
  int recon_iters = 200;
  // QDrop (Wei et al., ICLR 2022) inside block reconstruction: each activation element keeps
  // its float value with this probability at every step (else its fake-quantized value), so
  // the learned parameters do not fit the 32 calibration images' quantization noise only.
  // 0 = off. Written to the recipe JSON only when nonzero.
  double recon_drop = 0.0;
  // Non-uniform activation levels (ours, session 9): at these sites (comma-separated names as
  // in a8_sites, except attn), when they have <= 5 bits, the uniform quantizer gives way to 2^b
  // levels on an 8-bit grid spanning the site's calibration range, chosen by dynamic
  // programming for the squared error weighted by the consumer's squared column norms
  // (act_grid_levels): ActQuant::lut in the file (format reparq-quant-3). The executor's GEMMs
  // are unchanged (they see 8-bit codes). Block reconstruction keeps these sites' grid and
  // levels. reparq preset: "fc2" (the GELU output; docs/RESULTS.md). Empty or "none" = none.
  std::string level_sites;
  // Class-token quantizers (ours, session 11): when nonzero, the class token's row (token 0) at
  // every activation site of every block gets its own uniform quantizer of this many bits,
  // min-max over the calibration images' class rows (post-Softmax row: [0, max]); the other
  // rows keep the site's quantizer (QBlock::cls, format reparq-quant-4). Mixed precision: at
  // W4A4 with 8 here, 1 row in 65 of the activations is 8-bit. Off (0) in every preset (the
  // measured gains and costs: docs/RESULTS.md, "Session 11").
  int cls_bits = 0;
  // Error-feedback rounding (ours, session 12): at these Linear inputs (comma-separated from
  // qkv, proj, fc1, fc2), when they have <= 5 bits, each row is rounded element by element and
  // each element's rounding error is moved onto the elements not rounded yet through the
  // Linear's weights (GPTQ's update applied to the activation row at run time; ef_gains,
  // QLinear::ef_damp, format reparq-quant-5), so the Linear's OUTPUT error is what the rounding
  // minimizes. The codes stay `bits` wide with the same scale and zero point. Relative damping
  // of W^T W: ef_damp. Empty or "none" = off.
  // reparq preset: all four. On the test model of tests/quant/test_pipeline.cpp a damping of
  // 0.01 made the qkv site worse than round to nearest (logit MSE vs FP32 1.21 vs 0.92), 0.1
  // helped at every site (all four: 0.62); on vit6x128 (seed 0) 0.1 was as good as 0.01 at W4A4
  // and better at W3A3 (KL vs FP32 0.0244 vs 0.0255).
  std::string ef_sites;
  double ef_damp = 0.1;
  // Error-feedback blocks (QLinear::ef_block, format reparq-quant-6): > 0 = each input row is
  // rounded in independent blocks of this many columns, so the executor's feedback work per
  // row is in * K / 2 instead of in^2 / 2 and its gains O(in K^2) instead of O(in^3) at load.
  // 0 = one block. Written to the recipe JSON only when nonzero. Takes precedence over the
  // wide-Linear rule below.
  int ef_block = 0;
  // Wide Linears only (when ef_block is 0): a Linear with more than ef_wide_in inputs is rounded
  // in blocks of ef_wide_block columns, the others in whole rows; ef_wide_in = 0 = off.
  // reparq preset: 256 and 128 (session 15, docs/RESULTS.md). On a DeiT-S shape the executor is
  // 2.7x faster with it and builds 13x faster. On a briefly trained model with a 1536-wide fc2
  // (3 calibration seeds), the rule (there: fc2 alone in blocks) was within noise of whole rows,
  // and blocks of 128 at every Linear beat whole rows at W3A3. No Linear of the bundled models
  // is that wide: their files are unchanged.
  int ef_wide_in = 0;
  int ef_wide_block = 128;
  // Dynamic scale of the class token's post-Softmax row (ours, session 16; QBlock::
  // attn_cls_dynamic, format reparq-quant-7): the class token's query row of every head gets
  // uniform codes of the softmax's bits with the row's own scale, m / (2^b - 1), m = the row's
  // largest probability (known at run time: the softmax computes it). Still b-bit codes: a
  // per-row scale computed at run time, not a wider code. Calibration and reconstruction run
  // with the shared quantizer on that row; the flag is set in the finished file only. Session
  // 10 found the class row carrying about half of the W4A4 loss; no static clip suited its
  // post-Softmax row (docs/RESULTS.md, "Session 16"). Not with cls_bits (which quantizes that
  // row its own way): cls_bits wins. reparq preset: on at <= 5-bit activations.
  bool attn_cls_dynamic = false;

  // Fills the fields from `method` and the bit widths (see docs/RESULTS.md for what each is).
  static Recipe preset(const std::string& method, int wbits, int abits);
  std::string to_json() const;
};

// Parse Recipe::a8_sites / level_sites; UsageError naming an unknown site.
std::set<std::string> parse_a8_sites(const std::string& list);
std::set<std::string> parse_level_sites(const std::string& list);
std::set<std::string> parse_ef_sites(const std::string& list);   // qkv, proj, fc1, fc2 only

// Parses "W4A4" (case-insensitive) into bits; UsageError on anything outside W2..8A2..8.
void parse_bits(const std::string& s, int* wbits, int* abits);

struct QuantizeOptions {
  int64_t calib_samples = 32;
  uint64_t seed = 0;
  // Testing: every activation capture runs the model from the images again, instead of
  // starting from the cached residual stream entering the current block. Same file either way.
  bool recompute_stream = false;
};

// Calibrates on `calib_samples` images of `train` (seeded subset) and quantizes.
QuantModel quantize_model(const Vit& fp, const ImageSet& train, const Recipe& r,
                          const QuantizeOptions& o);

}  // namespace reparq
