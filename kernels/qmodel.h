// qmodel.h: the quantized ViT as reparq exports it ("reparq-quant-1", docs/FORMAT.md), in
// plain C++ containers. quant/ fills it and writes it; the integer executor (kernels/) and the
// simulated engine (quant/) read it. Every integer convention lives in docs/FORMAT.md and, as
// executable definitions, in the functions declared here and in kernels/gemm.h.
#pragma once
#include <cmath>
#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace reparq {

// Uniform asymmetric activation quantizer, per tensor.
//   code  q = clamp(nearbyint(x * inv_scale) + zero, 0, 2^bits - 1)   (round half to even;
//         the product is one float multiply; inv_scale = 1.0f / scale computed in float)
//   value x^ = scale * (q - zero)
struct ActQuant {
  int bits = 8;
  float scale = 1.0f;
  int32_t zero = 0;
  // Optional non-uniform levels on the uniform grid (FORMAT.md, format 3): the code is
  // lut[uniform code]; 2^bits non-decreasing entries in [0, qmax]; empty = none.
  std::vector<uint8_t> lut;
  float inv_scale() const { return 1.0f / scale; }
  int32_t qmax() const { return (1 << bits) - 1; }
  // lut is empty, or 2^bits non-decreasing entries in [0, qmax].
  bool levels_valid() const {
    if (lut.empty()) return true;
    if (int64_t(lut.size()) != int64_t(qmax()) + 1) return false;
    for (size_t i = 0; i < lut.size(); ++i)
      if (lut[i] > qmax() || (i > 0 && lut[i] < lut[i - 1])) return false;
    return true;
  }
  uint8_t quantize(float x) const {
    float t = x * inv_scale();
    t = t > -65536.0f ? t : -65536.0f;   // NaN -> -65536 as in the GEMM epilogue
    t = t < 65536.0f ? t : 65536.0f;
    int32_t q = static_cast<int32_t>(std::nearbyint(t)) + zero;
    q = q < 0 ? 0 : (q > qmax() ? qmax() : q);
    return lut.empty() ? static_cast<uint8_t>(q) : lut[size_t(q)];
  }
  float dequantize(uint8_t q) const { return scale * static_cast<float>(int32_t(q) - zero); }
};

// Largest column shift for wbits-bit weights: (2^wbits - 1) << shift <= 127.
inline int max_col_shift(int wbits) {
  int s = 0;
  while ((((1 << wbits) - 1) << (s + 1)) <= 127) ++s;
  return s;
}

// A Linear (or the patch-embedding conv as a Linear over flattened patches) with
// per-output-channel weights: real W[n][k] = w_scale[n] * (w[n][k] - w_zero[n]) * 2^w_shift[k].
// w holds values in [-2^(wbits-1), 2^(wbits-1) - 1] (asymmetric codes minus 2^(wbits-1)),
// one per int8 in memory (the file packs 4-bit weights two per byte, FORMAT.md).
// w_shift (format 6, optional; empty = all 0; only for wbits <= 7): a power-of-two factor per
// input column, at most max_col_shift(wbits), so that (w - w_zero) << w_shift always fits in int8.
struct QLinear {
  int64_t out = 0, in = 0;
  int wbits = 8;
  std::vector<int8_t> w;         // out x in
  std::vector<int32_t> w_zero;   // out
  std::vector<float> w_scale;    // out
  std::vector<float> bias;       // out
  ActQuant input;                // quantizer of this Linear's input
  // > 0: the rows quantized with `input` are rounded with error feedback through this Linear's
  // weights, ef_damp being the relative damping of W^T W (FORMAT.md "Error-feedback rounding",
  // format 5; blocks' Linears only). 0: round to nearest.
  float ef_damp = 0.0f;
  // With ef_damp: > 0 = the row is rounded in independent blocks of this many columns (the last
  // may be shorter), each through the gains of its own columns (format 6); 0 = one block.
  int32_t ef_block = 0;
  std::vector<uint8_t> w_shift;  // in, or empty
  int shift(int64_t k) const { return w_shift.empty() ? 0 : w_shift[size_t(k)]; }
  float weight(int64_t n, int64_t k) const {
    return w_scale[n] * float((int32_t(w[n * in + k]) - w_zero[n]) * (1 << shift(k)));
  }
};

// Post-Softmax quantizer, defined by its decision thresholds and its levels:
//   code c = number of thresholds t_i with a <= t_i... precisely: thresholds are strictly
//   decreasing, t_0 > t_1 > ... > t_{L-2}; c = #{i : a < t_i}  (so c = 0 for the largest
//   values, c = L-1 for the smallest);  L = 2^bits codes.
//   value  a^ = lut_scale * lut[c], lut[c] integer in [0, 255], lut[L-1] may be 0 (zero code).
// log2, log-sqrt2, TanQ and uniform quantizers are all expressed this way (quant/ computes the
// thresholds and levels; FORMAT.md gives the formulas).
struct AttnQuant {
  std::string kind = "logsqrt2";     // "uniform", "log2", "logsqrt2", "tanq"
  int bits = 4;
  float scale = 1.0f;                // the quantizer's clip scale s (informational)
  float param = 0.0f;                // kind-specific parameter (TanQ curvature), informational
  std::vector<float> thresholds;     // 2^bits - 1, strictly decreasing
  std::vector<uint8_t> lut;          // 2^bits levels
  float lut_scale = 1.0f / 255.0f;
  int code(float a) const {          // binary search over the decreasing thresholds
    int lo = 0, hi = static_cast<int>(thresholds.size());
    while (lo < hi) {                // find first i with a >= t_i; c = i
      int mid = (lo + hi) / 2;
      if (a < thresholds[mid]) lo = mid + 1; else hi = mid;
    }
    return lo;
  }
  float level(int c) const { return lut_scale * float(lut[c]); }
};

// Optional quantizers of the class token's row (token 0 of every image) at the activation
// sites of a block (format 4, FORMAT.md "Class-token quantizers"): uniform, no levels. The other
// rows keep the block's own quantizers, and so does the class token's v row (the attention x V
// GEMM has one v scale per head channel, not per token). `attn` quantizes the class token's
// post-Softmax row (values in [0, 1]) instead of QBlock::attn.
struct ClsQuant {
  ActQuant qkv_in, q, k, attn, proj_in, fc1_in, fc2_in;
  // All seven, in this order (the file's blocks.i.cls.{qkv.input, q, k, softmax, proj.input,
  // fc1.input, fc2.input}).
  std::array<ActQuant*, 7> sites() { return {&qkv_in, &q, &k, &attn, &proj_in, &fc1_in, &fc2_in}; }
  std::array<const ActQuant*, 7> sites() const { return {&qkv_in, &q, &k, &attn, &proj_in, &fc1_in, &fc2_in}; }
};

struct QBlock {
  std::vector<float> ln1_w, ln1_b;   // LayerNorm 1 affine after the re-parameterization
  QLinear qkv;                       // qkv.input = quantizer of the (folded) LN1 output
  ActQuant q, k, v;                  // per tensor, all heads together
  AttnQuant attn;
  QLinear proj;                      // proj.input = quantizer of the attention output
  std::vector<float> ln2_w, ln2_b;
  QLinear fc1;                       // fc1.input = quantizer of the (folded) LN2 output
  QLinear fc2;                       // fc2.input = quantizer of the GELU output
  // Optional per-channel multiplier of the GELU output before fc2.input quantizes it (empty =
  // none; else mlp_hidden positive finite floats): codes = quantize(gelu(y_c) * m_c). The
  // recipe divides fc2's weight columns by m_c (FORMAT.md, "GELU output multiplier").
  std::vector<float> fc2_in_mul;
  std::optional<ClsQuant> cls;       // class-token quantizers (recipe cls_bits), or none
  // Dynamic scale of the class token's post-Softmax row (format 7, FORMAT.md "Dynamic
  // class-row post-Softmax scale"): when set, the class token's query row of every head is
  // quantized to attn.bits uniform codes c_t = nearbyint(p_t * (L / m)), L = 2^bits - 1, m =
  // the row's largest probability, and dequantized with the row's own scale m / L; the other
  // rows keep `attn`. Not with `cls` (which has its own class-row quantizer).
  bool attn_cls_dynamic = false;
};

struct QuantModel {
  // Architecture (as in the float model's metadata).
  int64_t image_size = 28, patch = 4, in_chans = 1, dim = 0, depth = 0, heads = 0,
          mlp_hidden = 0, num_classes = 0;
  double ln_eps = 1e-6;
  float mean = 0.f, std = 1.f;
  std::string arch;

  // Patch embedding as a Linear over patches flattened in (c, y, x) order, whose input is the
  // raw uint8 pixels (patch_embed.input: scale 1, zero 0, 8 bits); the input normalization
  // (pixel/255 - mean)/std is folded into its weight scales and bias.
  QLinear patch_embed;
  std::vector<float> cls_token;      // dim
  std::vector<float> pos_embed;      // tokens x dim
  std::vector<QBlock> blocks;
  std::vector<float> norm_w, norm_b; // final LayerNorm (folded when the head input is folded)
  QLinear head;                      // head.input = quantizer of the final LN output (class token)

  std::map<std::string, std::string> metadata;  // recipe, calibration ids, tool version, ...

  int64_t tokens() const { return (image_size / patch) * (image_size / patch) + 1; }
  int64_t head_dim() const { return dim / heads; }
};

// Writes the model as safetensors (FORMAT.md), atomically.
// Columns per error-feedback block of l: ef_block when in [1, in), else in (one block).
inline int64_t ef_block_size(const QLinear& l) { return l.ef_block > 0 && l.ef_block < l.in ? l.ef_block : l.in; }
// The error-feedback gains of a Linear with ef_damp > 0 (FORMAT.md "Error-feedback rounding"),
// block by block: the block of columns [s, s + m) (s = b*K, K = ef_block_size, m = min(K, in - s))
// is an m x m row-major matrix at offset s*K, G[i][j] for j > i and 0 elsewhere, computed from
// those columns of W alone. One block: in x in. Deterministic (double arithmetic in a fixed
// order, no FMA contraction): the executor and the simulated engine use the same gains.
std::vector<float> ef_gains(const QLinear& l);
// The gains as one [in, in] matrix, zero outside the blocks (the simulation's form).
std::vector<float> ef_gains_dense(const QLinear& l);

void save_quant_model(const QuantModel& m, const std::string& path);
// Reads and validates a quantized model: every tensor present with the right dtype and shape,
// bit widths known, scales finite and positive, zero points and codes in range, thresholds
// decreasing, the int32 GEMM bound respected. Throws InputError naming the file and the problem.
QuantModel load_quant_model(const std::string& path);
// The same from a file already read (e.g. SafeTensorsFile::from_bytes; messages name f.path()).
class SafeTensorsFile;
QuantModel load_quant_model(const SafeTensorsFile& f);
// True for the "format" metadata values this reader accepts (reparq-quant-1 to -6).
bool is_quant_model_format(const std::string& format);
// True when the file's metadata says it is a reparq quantized model.
bool is_quant_model_file(const std::string& path);

}  // namespace reparq
