// executor.cpp: the integer ViT executor (docs/FORMAT.md, "The forward pass the executor runs").
//
// Per block, for a batch of B images (T tokens, D dims, heads of hd):
//   LN1 (+ residual of the previous block, fused) -> u8 codes       row ops, parallel over rows
//   qkv GEMM as three GEMMs (q, k, v thirds of its weights) with the u8 epilogue -> q codes,
//       k and v codes [B*T, D] (k, v then offset in place to code - 2^(bits-1), the s8 values
//       the attention GEMMs take as weights); in the last block q of the class tokens only
//   attention per (image, head): repack k (T channels x hd) straight from kvals, S = q k^T
//       (GEMM, float), softmax -> LUT levels, repack v^T (hd channels x T) straight from vvals,
//       O = levels x v (GEMM, u8 epilogue = proj.input codes)              parallel over pairs
//       (repack_weights_s8 reuses per-slot buffers: no allocation per head)
//   proj GEMM (float); x += proj; LN2 -> codes; fc1 GEMM (float); GELU -> codes; fc2 GEMM;
//   x += fc2 (fused into the next LayerNorm).
// The last block only needs the class token after attention: its query rows, proj and MLP run
// on the class token alone (rows are independent, so the logits are unchanged).
// Float row ops come from kernels/vit_ops.h (bit-identical on every ISA); GEMMs are bit-exact
// by contract (kernels/gemm.h); every output element is computed by the same arithmetic
// whatever the batch, thread count or task split, so logits are bit-identical across them.
#include "kernels/executor.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "kernels/error.h"
#include "kernels/gemm.h"
#include "kernels/threadpool.h"
#include "kernels/vit_ops.h"

namespace reparq {

namespace {

using Clock = std::chrono::steady_clock;

// The class row's attention output accumulates in a stack array of this many head channels.
constexpr int64_t kMaxClsHeadDim = 1024;

struct Linear {
  const QLinear* q = nullptr;
  int64_t row0 = 0;  // first output channel of q this Linear computes (q, k, v of attn.qkv)
  PackedWeights w;
  const ActQuant* in = nullptr;  // input quantizer if not q->input (class-token rows)
  const ActQuant& input() const { return in ? *in : q->input; }
};

struct Block {
  Linear q, k, v, proj, fc1, fc2;  // q, k, v: the three thirds of attn.qkv
  AttnCoder coder;
  AttnCoder::View coder_view{};
  std::vector<float> sk;          // T copies of k.scale (the S GEMM's per-"channel" scales)
  std::vector<float> sv;          // hd copies of v.scale
  std::vector<int32_t> zk;        // T copies of k.zero - 2^(kbits-1)
  std::vector<int32_t> zv;        // hd copies of v.zero - 2^(vbits-1)
  // Level tables (ActQuant::lut) padded to 256 entries for VitRowOps::map_bytes; empty = none.
  // k and v: code -> lut[code] - 2^(bits-1) (the offset that makes them s8 weights).
  std::vector<uint8_t> lv_qkv, lv_q, kmap, vmap, lv_proj, lv_fc1, lv_fc2;
  // Class-token quantizers (QBlock::cls): the Linears again, packed for the class rows' input
  // quantizers (cq, ck, cv: thirds of attn.qkv); null without them.
  const ClsQuant* cls = nullptr;
  Linear cq, ck, cv, cproj, cfc1, cfc2;
  // Error-feedback gains (ef_gains) of the Linears whose input rows are rounded with error
  // feedback (QLinear::ef_damp > 0); empty = round to nearest.
  std::vector<float> ef_qkv, ef_proj, ef_fc1, ef_fc2;
};

// `q`'s level table padded to 256 entries, each minus `offset` (mod 256); empty without one.
std::vector<uint8_t> level_table(const ActQuant& q, int offset = 0) {
  if (q.lut.empty()) return {};
  std::vector<uint8_t> t(256, 0);
  for (size_t c = 0; c < q.lut.size(); ++c) t[c] = uint8_t(q.lut[c] - offset);
  return t;
}

// p[i] -= c (mod 256): codes -> two's complement code - c. A function of its own, with locals
// only: inside the executor's lambdas a byte store may alias the captured sizes, which kept
// the loop scalar (1 ms per DeiT-S image).
void subtract_bytes(uint8_t* p, int64_t n, uint8_t c) {
  for (int64_t i = 0; i < n; ++i) p[i] = uint8_t(p[i] - c);
}

// Rows per error-feedback call (VitRowOps::ef_quant_rows takes 16 rows at once in its AVX-512
// build, 8 or 4 in the others).
constexpr int64_t kEfRows = 16;

template <class T>
void grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

}  // namespace

enum Stage : int {
  kPatch, kLn1, kQkvGemm, kQkvSplit, kAttn, kProjGemm, kLn2, kFc1Gemm, kGelu, kFc2Gemm, kHead, kStages
};
static const char* const kStageNames[kStages] = {
    "patch_embed", "ln1+quant", "qkv_gemm+quant", "kv_offset", "attention", "proj_gemm",
    "residual+ln2+quant", "fc1_gemm", "gelu+quant", "fc2_gemm", "final_ln+head"};

struct Executor::Impl {
  QuantModel m;
  Isa isa;
  int threads;
  std::unique_ptr<ThreadPool> pool;
  const VitRowOps* ops = nullptr;
  std::vector<uint8_t> lv_head;   // head input level table (level_table), empty = none
  int64_t T = 0, D = 0, H = 0, P = 0, hd = 0, NP = 0;  // tokens, dim, mlp, patch len, head dim, patches
  float eps = 0, inv_sqrt_hd = 0;
  Linear patch, head;
  std::vector<Block> blocks;

  // Workspace (grows to the largest batch seen).
  int64_t cap = 0;
  std::vector<uint8_t> im2col;     // B*NP x P
  std::vector<float> x;            // B*T x D residual stream
  std::vector<float> y;            // B*T x max(H, D) GEMM float outputs (fc1; proj, fc2)
  std::vector<uint8_t> a;          // B*T x D codes (LN outputs, attention output)
  std::vector<uint8_t> hcodes;     // B*T x H codes (GELU output)
  std::vector<uint8_t> qcodes;     // B*T x D
  std::vector<int8_t> kvals;       // B*T x D: k code - 2^(kbits-1)
  std::vector<int8_t> vvals;       // B*T x D: v code - 2^(vbits-1)
  std::vector<uint8_t> cls_codes;  // B x D
  std::vector<uint8_t> cls_in;     // B x D class-row codes (QBlock::cls): LN1, attention, LN2 outputs
  std::vector<uint8_t> cls_h;      // B x H class-row codes of the GELU output (QBlock::cls)
  // Attention scratch, one slot per task.
  int slots = 0;
  std::vector<float> scores;       // slots x T x T
  std::vector<uint8_t> levels;     // slots x T x T
  // Per slot, one head's k (T channels x hd) and v^T (hd channels x T) packed as GEMM weights
  // straight from kvals / vvals (repack_weights_s8 reuses the memory: no allocation per head).
  std::vector<PackedWeights> kpack, vpack;
  std::vector<int32_t> attn_rowsum;  // slots x T: row sums for the attention GEMMs

  bool profile = false;
  double stage_s[kStages] = {};
  int64_t profiled_images = 0;

  void check_model();
  void ensure(int64_t batch);
  void run(const uint8_t* pixels, int64_t batch, float* logits);
  void gemm_float(const Linear& l, const uint8_t* a_codes, int64_t lda, int64_t rows, float* out, int64_t ldo);
  // GEMM with the u8 epilogue: out = codes of `oq` (gemm.h's Uint8 arithmetic is vo_quantize of
  // the Float epilogue's value, so the codes equal quant_row of gemm_float's output).
  void gemm_codes(const Linear& l, const uint8_t* a_codes, int64_t lda, int64_t rows, const ActQuant& oq,
                  uint8_t* out, int64_t ldo);
  template <class F>
  void rows_parallel(int64_t rows, int64_t grain, F&& f);
  void attention(const Block& b, const QBlock& qb, int64_t batch, bool cls_only);
  // Class-token quantizers (Block::cls), image b, head h: row 0 of the raw scores into s[0..T);
  // then from them (s is overwritten) the post-Softmax row's codes (into codes[0..T)) and its
  // output, into cls_in.
  void cls_scores(const Block& blk, int64_t b, int64_t h, float* s) const;
  // Row 0 of the raw scores s[0..T) -> exp(s_t * inv_sqrt_hd - max) in place (exp_row: the
  // executor's exp); returns 1 / sum (the sum in double, in key order, then rounded to float).
  float softmax_row0(float* s) const;
  void cls_attn_out(const Block& blk, int64_t b, int64_t h, float* s, uint8_t* codes);
  // Dynamic class-row scale (QBlock::attn_cls_dynamic), image b, head h: from row 0 of the raw scores
  // s[0..T) (overwritten), the class token's post-Softmax codes (into codes[0..T)) and its
  // attention output, into `a` as proj.input codes, or into `y` (float) when proj's input is
  // rounded with error feedback.
  void dynamic_cls_out(const Block& blk, const QBlock& qb, int64_t b, int64_t h, float* s, uint8_t* codes);
};

template <class F>
void Executor::Impl::rows_parallel(int64_t rows, int64_t grain, F&& f) {
  const int64_t n_tasks = (rows + grain - 1) / grain;
  auto task = [&](int t) {
    const int64_t r0 = int64_t(t) * grain, r1 = std::min(rows, r0 + grain);
    for (int64_t r = r0; r < r1; ++r) f(r);
  };
  if (pool->size() > 1 && n_tasks > 1) {
    pool->parallel_for(int(n_tasks), task);
  } else {
    for (int t = 0; t < n_tasks; ++t) task(t);
  }
}

// The arguments a Linear's GEMM shares whatever its epilogue: A, its quantizer, weight scales
// and biases of the Linear's output channels.
static GemmArgs linear_args(const Linear& l, const uint8_t* a_codes, int64_t lda, int64_t rows, Epilogue e,
                            void* out, int64_t ldo) {
  GemmArgs g;
  g.m = int(rows);
  g.a = a_codes;
  g.lda = lda;
  g.za = l.input().zero;
  g.epilogue = e;
  g.out = out;
  g.ldo = ldo;
  g.sa = l.input().scale;
  g.sw = l.q->w_scale.data() + l.row0;
  g.bias = l.q->bias.data() + l.row0;
  return g;
}

void Executor::Impl::gemm_float(const Linear& l, const uint8_t* a_codes, int64_t lda, int64_t rows,
                                float* out, int64_t ldo) {
  gemm(l.w, linear_args(l, a_codes, lda, rows, Epilogue::Float, out, ldo), pool.get());
}

void Executor::Impl::gemm_codes(const Linear& l, const uint8_t* a_codes, int64_t lda, int64_t rows,
                                const ActQuant& oq, uint8_t* out, int64_t ldo) {
  GemmArgs g = linear_args(l, a_codes, lda, rows, Epilogue::Uint8, out, ldo);
  const QuantParams qp = quant_params(oq);
  g.inv_so = qp.inv_scale;
  g.zo = qp.zero;
  g.out_bits = oq.bits;
  gemm(l.w, g, pool.get());
}

void Executor::Impl::check_model() {
  const QuantModel& q = m;
  auto fail = [](const std::string& msg) { throw InputError("executor: " + msg); };
  if (q.dim <= 0 || q.heads <= 0 || q.dim % q.heads != 0) fail("embed_dim must be a positive multiple of num_heads");
  if (q.patch <= 0 || q.image_size <= 0 || q.image_size % q.patch != 0) fail("image_size must be a multiple of patch_size");
  if (q.in_chans <= 0 || q.mlp_hidden <= 0 || q.num_classes <= 0) fail("in_chans, mlp_hidden and num_classes must be positive");
  if (q.depth != int64_t(q.blocks.size()) || q.depth <= 0) fail("depth does not match the number of blocks");
  if (!(q.ln_eps > 0)) fail("ln_eps must be positive");
  const int64_t D = q.dim, T = q.tokens(), Hh = q.mlp_hidden, Pp = q.in_chans * q.patch * q.patch;
  auto vec = [&](const std::vector<float>& v, int64_t n, const std::string& name) {
    if (int64_t(v.size()) != n) fail(name + " has " + std::to_string(v.size()) + " values, expected " + std::to_string(n));
  };
  auto act_ok = [](const ActQuant& a) {
    return a.bits >= 2 && a.bits <= 8 && a.zero >= 0 && a.zero <= a.qmax() && a.scale > 0 && a.levels_valid();
  };
  auto lin = [&](const QLinear& l, int64_t out, int64_t in, const std::string& name) {
    if (l.out != out || l.in != in) fail(name + " is " + std::to_string(l.out) + "x" + std::to_string(l.in) + ", expected " + std::to_string(out) + "x" + std::to_string(in));
    if (int64_t(l.w.size()) != out * in || int64_t(l.w_zero.size()) != out) fail(name + " weights or zero points have the wrong size");
    vec(l.w_scale, out, name + ".weight_scale");
    vec(l.bias, out, name + ".bias");
    if (l.wbits < 2 || l.wbits > 8) fail(name + " has " + std::to_string(l.wbits) + "-bit weights");
    if (!act_ok(l.input)) fail(name + ".input quantizer is invalid");
    if (!(l.ef_damp >= 0) || l.ef_damp > 1e6f) fail(name + ".input.ef_damp must be 0 (off) or in (0, 1e6]");
    if (l.ef_block < 0 || (l.ef_block > 0 && !(l.ef_damp > 0))) fail(name + ".input.ef_block must be 0, or >= 1 with error feedback");
    if (!l.w_shift.empty()) {
      if (int64_t(l.w_shift.size()) != in) fail(name + ".weight_shift has the wrong size");
      if (l.wbits > 7) fail(name + ".weight_shift needs weights of at most 7 bits");
      for (uint8_t s : l.w_shift)
        if (s > max_col_shift(l.wbits)) fail(name + ".weight_shift is above " + std::to_string(max_col_shift(l.wbits)));
    }
  };
  lin(q.patch_embed, D, Pp, "patch_embed");
  if (q.patch_embed.input.bits != 8 || q.patch_embed.input.zero != 0 || !q.patch_embed.input.lut.empty())
    fail("patch_embed.input must be 8-bit with zero point 0 (raw pixels)");
  vec(q.cls_token, D, "cls_token");
  vec(q.pos_embed, T * D, "pos_embed");
  for (size_t i = 0; i < q.blocks.size(); ++i) {
    const QBlock& b = q.blocks[i];
    const std::string p = "blocks." + std::to_string(i) + ".";
    vec(b.ln1_w, D, p + "norm1.weight");
    vec(b.ln1_b, D, p + "norm1.bias");
    vec(b.ln2_w, D, p + "norm2.weight");
    vec(b.ln2_b, D, p + "norm2.bias");
    lin(b.qkv, 3 * D, D, p + "attn.qkv");
    lin(b.proj, D, D, p + "attn.proj");
    lin(b.fc1, Hh, D, p + "mlp.fc1");
    lin(b.fc2, D, Hh, p + "mlp.fc2");
    for (const ActQuant* a : {&b.q, &b.k, &b.v})
      if (!act_ok(*a)) fail(p + "attn q/k/v quantizer is invalid");
    if (T > gemm_max_k(8, 8)) fail("too many tokens for int32 accumulation of attention x V");
    if ((b.cls || b.attn_cls_dynamic) && q.dim / q.heads > kMaxClsHeadDim)
      fail("class-token quantizers support head_dim <= " + std::to_string(kMaxClsHeadDim));
    if (b.cls && b.attn_cls_dynamic) fail(p + "a dynamic class-row softmax scale cannot go with class-token quantizers");
    if (b.cls)
      for (const ActQuant* a : b.cls->sites())
        if (!act_ok(*a) || !a->lut.empty()) fail(p + "cls quantizer is invalid");
    if (b.cls.has_value() != q.blocks[0].cls.has_value()) fail("class-token quantizers must be in every block or in none");
  }
  vec(q.norm_w, D, "norm.weight");
  vec(q.norm_b, D, "norm.bias");
  lin(q.head, q.num_classes, D, "head");
  if (q.patch_embed.ef_damp > 0 || q.head.ef_damp > 0) fail("error-feedback rounding is for the blocks' Linears only");
}

// Output channels [row0, row0 + rows) of q (all of them by default).
// `in` overrides the input quantizer (the A operand's bits the packing is chosen for).
static Linear make_linear(const QLinear& q, Isa isa, int64_t row0 = 0, int64_t rows = -1, const ActQuant* in = nullptr) {
  if (rows < 0) rows = q.out;
  Linear l;
  l.q = &q;
  l.row0 = row0;
  l.in = in;
  if (q.w_shift.empty()) {
    l.w = pack_weights(q.w.data() + row0 * q.in, int(rows), int(q.in), q.wbits <= 4 ? 4 : 8, q.w_zero.data() + row0,
                       isa, l.input().bits);
    return l;
  }
  // Column shifts: the int8 values (w - w_zero) << w_shift with zero points 0 (max_col_shift
  // keeps them in [-127, 127]); the GEMM is the same exact integer sum.
  std::vector<int8_t> w(size_t(rows * q.in));
  const std::vector<int32_t> zero(size_t(rows), 0);
  for (int64_t n = 0; n < rows; ++n)
    for (int64_t k = 0; k < q.in; ++k)
      w[size_t(n * q.in + k)] = int8_t((int32_t(q.w[size_t((row0 + n) * q.in + k)]) - q.w_zero[size_t(row0 + n)]) * (1 << q.shift(k)));
  l.w = pack_weights(w.data(), int(rows), int(q.in), 8, zero.data(), isa, l.input().bits);
  return l;
}

void Executor::Impl::ensure(int64_t batch) {
  if (batch <= cap) return;
  const int64_t rows = batch * T;
  grow(im2col, size_t(batch * NP * P));
  grow(x, size_t(rows * D));
  grow(y, size_t(rows * std::max(H, D)));
  grow(a, size_t(rows * D));
  grow(hcodes, size_t(rows * H));
  grow(qcodes, size_t(rows * D));
  grow(kvals, size_t(rows * D));
  grow(vvals, size_t(rows * D));
  grow(cls_codes, size_t(batch * D));
  grow(cls_in, size_t(batch * D));
  grow(cls_h, size_t(batch * H));
  slots = int(std::min<int64_t>(batch * m.heads, 4 * int64_t(threads)));
  grow(scores, size_t(slots * T * T));
  grow(levels, size_t(slots * T * T));
  grow(attn_rowsum, size_t(slots * T));
  if (kpack.size() < size_t(slots)) {
    kpack.resize(size_t(slots));
    vpack.resize(size_t(slots));
  }
  cap = batch;
}

void Executor::Impl::cls_scores(const Block& blk, int64_t b, int64_t h, float* s) const {
  const ClsQuant& c = *blk.cls;
  const uint8_t* q0 = qcodes.data() + b * T * D + h * hd;   // the class token's q codes
  for (int64_t t = 0; t < T; ++t) {
    const int8_t* kr = kvals.data() + (b * T + t) * D + h * hd;
    int32_t acc = 0;
    for (int64_t d = 0; d < hd; ++d) acc += (int32_t(q0[d]) - c.q.zero) * (int32_t(kr[d]) - blk.zk[size_t(t)]);
    s[t] = float(acc) * (c.q.scale * blk.sk[size_t(t)]);
  }
}

float Executor::Impl::softmax_row0(float* s) const {
  float mx = s[0];
  for (int64_t t = 1; t < T; ++t) mx = std::max(mx, s[t]);
  for (int64_t t = 0; t < T; ++t) s[t] = (s[t] - mx) * inv_sqrt_hd;
  ops->exp_row(s, int(T), s);
  double sum = 0;
  for (int64_t t = 0; t < T; ++t) sum += s[t];
  return float(1.0 / sum);
}

void Executor::Impl::cls_attn_out(const Block& blk, int64_t b, int64_t h, float* s, uint8_t* pc) {
  const ClsQuant& c = *blk.cls;
  // Softmax of row 0, codes of the class row's quantizer.
  const float inv = softmax_row0(s);
  for (int64_t t = 0; t < T; ++t) pc[t] = c.attn.quantize(s[t] * inv);
  // O[d] = sum_t (p_t - zp) (v_td - zv_d) * (sp * sv), quantized with the class row's proj input;
  // accumulated key by key, over contiguous v rows.
  int32_t acc[kMaxClsHeadDim] = {0};
  const int32_t* zv = blk.zv.data();
  for (int64_t t = 0; t < T; ++t) {
    const int32_t pt = int32_t(pc[t]) - c.attn.zero;
    const int8_t* vr = vvals.data() + (b * T + t) * D + h * hd;
    for (int64_t d = 0; d < hd; ++d) acc[d] += pt * (int32_t(vr[d]) - zv[d]);
  }
  for (int64_t d = 0; d < hd; ++d)
    cls_in[size_t(b * D + h * hd + d)] = c.proj_in.quantize(float(acc[d]) * (c.attn.scale * blk.sv[size_t(d)]));
}

void Executor::Impl::dynamic_cls_out(const Block& blk, const QBlock& qb, int64_t b, int64_t h, float* s, uint8_t* pc) {
  // Softmax of row 0; then c_t = nearbyint(p_t * (L / m)) in [0, L], m = max_t p_t, and
  // O[d] = sum_t c_t (v_td - zv_d) * ((m / L) * sv_d).
  const float inv = softmax_row0(s);
  float m = 0.0f;
  for (int64_t t = 0; t < T; ++t) {
    s[t] *= inv;
    m = std::max(m, s[t]);
  }
  const float L = float((1 << qb.attn.bits) - 1);
  const float r = L / m, so = m / L;
  for (int64_t t = 0; t < T; ++t) {
    float c = s[t] * r;
    c = c > 0.0f ? c : 0.0f;   // NaN -> 0
    c = c < L ? c : L;
    pc[t] = uint8_t(std::nearbyint(c));
  }
  int32_t acc[kMaxClsHeadDim] = {0};
  const int32_t* zv = blk.zv.data();
  for (int64_t t = 0; t < T; ++t) {
    const int32_t pt = pc[t];
    const int8_t* vr = vvals.data() + (b * T + t) * D + h * hd;
    for (int64_t d = 0; d < hd; ++d) acc[d] += pt * (int32_t(vr[d]) - zv[d]);
  }
  const int64_t base = b * T * D + h * hd;
  if (blk.ef_proj.empty()) {
    for (int64_t d = 0; d < hd; ++d) a[size_t(base + d)] = qb.proj.input.quantize(float(acc[d]) * (so * blk.sv[size_t(d)]));
  } else {
    for (int64_t d = 0; d < hd; ++d) y[size_t(base + d)] = float(acc[d]) * (so * blk.sv[size_t(d)]);
  }
}

void Executor::Impl::attention(const Block& blk, const QBlock& qb, int64_t batch, bool cls_only) {
  const int64_t heads = m.heads;
  const int64_t pairs = batch * heads;
  const int n_slots = int(std::min<int64_t>(pairs, slots));
  const int64_t mq = cls_only ? 1 : T;  // query rows needed
  const QuantParams po = quant_params(qb.proj.input);
  // With class-token quantizers, query row 0 (the class token's q, post-Softmax row and output)
  // is computed apart, in exact integer arithmetic; the GEMMs run the other rows.
  // With a dynamic class-row scale, the S GEMM computes row 0 too, and row 0's softmax, codes
  // and output are computed apart (dynamic_cls_out).
  const ClsQuant* cls = blk.cls;
  const bool dyn = qb.attn_cls_dynamic;
  const int64_t r0 = cls ? 1 : 0;            // first row of the S GEMM
  const int64_t s0 = cls || dyn ? 1 : 0;     // first row of the shared softmax codes and the O GEMM
  auto task = [&](int slot) {
    float* sc = scores.data() + int64_t(slot) * T * T;
    uint8_t* lv = levels.data() + int64_t(slot) * T * T;
    PackedWeights& kw = kpack[size_t(slot)];
    PackedWeights& vw = vpack[size_t(slot)];
    int32_t* rs = attn_rowsum.data() + int64_t(slot) * T;
    // Static split of the (image, head) pairs over the slots: results do not depend on it.
    const int64_t p0 = pairs * slot / n_slots, p1 = pairs * (slot + 1) / n_slots;
    for (int64_t pr = p0; pr < p1; ++pr) {
      const int64_t b = pr / heads, h = pr % heads;
      const int64_t base = b * T * D + h * hd;
      // S = (q - zq)(k - zk)^T * (sq*sk): k is the weights operand (T channels, rows of hd).
      repack_weights_s8(kw, kvals.data() + base, D, 1, int(T), int(hd), blk.zk.data(), isa, qb.q.bits);
      if (cls) cls_scores(blk, b, h, sc);
      GemmArgs g;
      g.m = int(mq - r0);
      g.a = qcodes.data() + base + r0 * D;
      g.lda = D;
      g.za = qb.q.zero;
      g.epilogue = Epilogue::Float;
      g.out = sc + r0 * T;
      g.ldo = T;
      g.sa = qb.q.scale;
      g.sw = blk.sk.data();
      g.rowsum_scratch = rs;
      if (g.m > 0) gemm(kw, g, nullptr);
      if (mq - s0 > 0)
        ops->softmax_levels(sc + s0 * T, T, int(T), int(mq - s0), inv_sqrt_hd, &blk.coder_view, lv + s0 * T, T);
      // O = levels x (v - zv), * (lut_scale*sv), quantized with proj.input (u8 epilogue).
      // v^T: hd channels, W[d][t] = v[t][d].
      repack_weights_s8(vw, vvals.data() + base, 1, D, int(hd), int(T), blk.zv.data(), isa, 8);
      if (cls) cls_attn_out(blk, b, h, sc, lv);
      if (dyn) dynamic_cls_out(blk, qb, b, h, sc, lv);
      GemmArgs o;
      o.m = int(mq - s0);
      o.a = lv + s0 * T;
      o.lda = T;
      o.za = 0;
      o.ldo = D;
      o.sa = qb.attn.lut_scale;
      o.sw = blk.sv.data();
      if (blk.ef_proj.empty()) {
        o.epilogue = Epilogue::Uint8;
        o.out = a.data() + base + s0 * D;
        o.inv_so = po.inv_scale;
        o.zo = po.zero;
        o.out_bits = qb.proj.input.bits;
      } else {   // float output; the rows are rounded with error feedback after all heads
        o.epilogue = Epilogue::Float;
        o.out = y.data() + base + s0 * D;
      }
      o.rowsum_scratch = rs;
      if (o.m > 0) gemm(vw, o, nullptr);
    }
  };
  if (pool->size() > 1 && n_slots > 1) {
    pool->parallel_for(n_slots, task);
  } else {
    for (int s = 0; s < n_slots; ++s) task(s);
  }
}

void Executor::Impl::run(const uint8_t* pixels, int64_t batch, float* logits) {
  if (batch <= 0) return;
  if (pixels == nullptr || logits == nullptr) throw UsageError("Executor::run: null pixels or logits");
  ensure(batch);
  const int64_t S = m.image_size, p = m.patch, C = m.in_chans, gw = S / p;
  auto t0 = Clock::now();
  auto lap = [&](Stage s) {
    if (!profile) return;
    const auto t1 = Clock::now();
    stage_s[s] += std::chrono::duration<double>(t1 - t0).count();
    t0 = t1;
  };

  // 1. Patch embedding: im2col of raw pixels in (channel, y, x) order, GEMM, cls + pos.
  rows_parallel(batch * NP, 16, [&](int64_t r) {
    const int64_t b = r / NP, i = r % NP, py = i / gw, px = i % gw;
    const uint8_t* img = pixels + b * S * S;
    uint8_t* dst = im2col.data() + r * P;
    for (int64_t c = 0; c < C; ++c)
      for (int64_t yy = 0; yy < p; ++yy) {
        std::memcpy(dst, img + (py * p + yy) * S + px * p, size_t(p));
        dst += p;
      }
  });
  gemm_float(patch, im2col.data(), P, batch * NP, y.data(), D);
  rows_parallel(batch * T, 16, [&](int64_t r) {
    const int64_t b = r / T, t = r % T;
    float* xr = x.data() + r * D;
    const float* pos = m.pos_embed.data() + t * D;
    const float* src = t == 0 ? m.cls_token.data() : y.data() + (b * NP + t - 1) * D;
    for (int64_t j = 0; j < D; ++j) xr[j] = src[j] + pos[j];
  });
  lap(kPatch);

  const int64_t rows = batch * T;
  for (size_t bi = 0; bi < blocks.size(); ++bi) {
    const Block& blk = blocks[bi];
    const QBlock& qb = m.blocks[bi];
    const bool last = bi + 1 == blocks.size();
    const ClsQuant* cls = blk.cls;
    // With class-token quantizers, the class rows (x rows b*T) also go through their own
    // quantizers into cls_in / cls_h and their own GEMMs, whose outputs overwrite theirs.
    auto cls_ln = [&](const std::vector<float>& w, const std::vector<float>& bias, const ActQuant& q) {
      const QuantParams qp = quant_params(q);
      rows_parallel(batch, 4, [&](int64_t b) {
        ops->layernorm_quant(x.data() + b * T * D, int(D), w.data(), bias.data(), eps, qp, cls_in.data() + b * D);
      });
    };

    // Rows r < n_rows of `in` (n floats at in + r*ldi, written by prepare(r) just before, then
    // overwritten) -> codes at out + r*ldo with error feedback through `g` (ef_gains), kEfRows
    // rows a task.
    // With QLinear::ef_block, each block of K columns is rounded on its own through its K x K
    // gains (at g + s*K for the block starting at column s).
    auto ef_rows = [&](float* in, int64_t ldi, int64_t n_rows, const std::vector<float>& g, const QLinear& l,
                       uint8_t* out, int64_t ldo, const auto& prepare) {
      const ActQuant& q = l.input;
      const QuantParams qp = quant_params(q);
      const uint8_t* lut = q.lut.empty() ? nullptr : q.lut.data();
      const int64_t n = l.in, K = ef_block_size(l);
      rows_parallel((n_rows + kEfRows - 1) / kEfRows, 1, [&](int64_t c) {
        const int64_t r0 = kEfRows * c, nr = std::min<int64_t>(kEfRows, n_rows - r0);
        for (int64_t r = r0; r < r0 + nr; ++r) prepare(r);
        for (int64_t s = 0; s < n; s += K)
          ops->ef_quant_rows(in + r0 * ldi + s, ldi, int(nr), int(std::min(K, n - s)), g.data() + s * K, qp, lut,
                             out + r0 * ldo + s, ldo);
      });
    };
    auto as_is = [](int64_t) {};
    // LN1 -> codes (the previous block's fc2 residual was added already).
    if (!blk.ef_qkv.empty()) {   // y is free here: LN1 rows in float, then error feedback
      ef_rows(y.data(), D, rows, blk.ef_qkv, qb.qkv, a.data(), D, [&](int64_t r) {
        ops->layernorm_row(x.data() + r * D, int(D), qb.ln1_w.data(), qb.ln1_b.data(), eps, y.data() + r * D);
      });
    } else {
      const QuantParams qp = quant_params(qb.qkv.input);
      rows_parallel((rows + 1) / 2, 4, [&](int64_t pr) {  // pairs of rows (layernorm_quant2)
        const int64_t r = 2 * pr;
        if (r + 1 < rows)
          ops->layernorm_quant2(x.data() + r * D, x.data() + (r + 1) * D, int(D), qb.ln1_w.data(), qb.ln1_b.data(),
                                eps, qp, a.data() + r * D, a.data() + (r + 1) * D);
        else
          ops->layernorm_quant(x.data() + r * D, int(D), qb.ln1_w.data(), qb.ln1_b.data(), eps, qp, a.data() + r * D);
        if (!blk.lv_qkv.empty()) ops->map_bytes(a.data() + r * D, std::min<int64_t>(2, rows - r) * D, blk.lv_qkv.data());
      });
    }
    if (cls) cls_ln(qb.ln1_w, qb.ln1_b, cls->qkv_in);
    lap(kLn1);
    // q codes, k and v codes, all [rows, D], straight from the GEMM's u8 epilogue. The last
    // block needs the class tokens' queries only (rows b*T).
    if (last && !cls)
      gemm_codes(blk.q, a.data(), T * D, batch, qb.q, qcodes.data(), T * D);
    else if (!last)
      gemm_codes(blk.q, a.data(), D, rows, qb.q, qcodes.data(), D);
    uint8_t* kcodes = reinterpret_cast<uint8_t*>(kvals.data());
    uint8_t* vcodes = reinterpret_cast<uint8_t*>(vvals.data());
    gemm_codes(blk.k, a.data(), D, rows, qb.k, kcodes, D);
    gemm_codes(blk.v, a.data(), D, rows, qb.v, vcodes, D);
    if (!blk.lv_q.empty() && !(last && cls)) {
      const int64_t qr = last ? batch : rows, qs = last ? T * D : D;
      rows_parallel(qr, 16, [&](int64_t r) { ops->map_bytes(qcodes.data() + r * qs, D, blk.lv_q.data()); });
    }
    if (cls) {   // the class rows' q, k (own quantizers) and v (the block's v quantizer)
      gemm_codes(blk.cq, cls_in.data(), D, batch, cls->q, qcodes.data(), T * D);
      gemm_codes(blk.ck, cls_in.data(), D, batch, cls->k, kcodes, T * D);
      gemm_codes(blk.cv, cls_in.data(), D, batch, qb.v, vcodes, T * D);
    }
    lap(kQkvGemm);
    // k and v as weights of the attention GEMMs: values code - 2^(bits-1), in place.
    {
      const uint8_t ko = uint8_t(1 << (qb.k.bits - 1)), vo = uint8_t(1 << (qb.v.bits - 1));
      rows_parallel(rows, 16, [&](int64_t r) {
        if (cls && r % T == 0) subtract_bytes(kcodes + r * D, D, uint8_t(1 << (cls->k.bits - 1)));
        else if (blk.kmap.empty()) subtract_bytes(kcodes + r * D, D, ko);
        else ops->map_bytes(kcodes + r * D, D, blk.kmap.data());
        if (blk.vmap.empty()) subtract_bytes(vcodes + r * D, D, vo);
        else ops->map_bytes(vcodes + r * D, D, blk.vmap.data());
      });
    }
    lap(kQkvSplit);
    attention(blk, qb, batch, last);
    // The last block continues with the class tokens only (rows b*T, stride T*D).
    const int64_t n_rows = last ? batch : rows;
    const int64_t row_step = last ? T : 1;
    if (!blk.ef_proj.empty()) {
      // Attention outputs in y (float); with class-token quantizers the class rows are in cls_in.
      if (!(last && cls)) {
        if (cls) {   // rows 1.. of each image
          for (int64_t b = 0; b < batch; ++b)
            ef_rows(y.data() + (b * T + 1) * D, D, T - 1, blk.ef_proj, qb.proj, a.data() + (b * T + 1) * D, D,
                    as_is);
        } else {
          ef_rows(y.data(), row_step * D, n_rows, blk.ef_proj, qb.proj, a.data(), row_step * D, as_is);
        }
      }
    } else if (!blk.lv_proj.empty() && !(last && cls))   // (the last block's class rows are in cls_in)
      rows_parallel(n_rows, 16, [&](int64_t r) { ops->map_bytes(a.data() + r * row_step * D, D, blk.lv_proj.data()); });
    lap(kAttn);

    if (!(last && cls)) gemm_float(blk.proj, a.data(), row_step * D, n_rows, y.data(), D);
    if (cls) gemm_float(blk.cproj, cls_in.data(), D, batch, y.data(), last ? D : T * D);
    lap(kProjGemm);
    if (!blk.ef_fc1.empty()) {   // residual add, LN2 rows in float into y (row r's proj output, used), feedback
      ef_rows(y.data(), D, n_rows, blk.ef_fc1, qb.fc1, a.data(), D, [&](int64_t r) {
        float* xr = x.data() + r * row_step * D;
        float* yr = y.data() + r * D;
        for (int64_t j = 0; j < D; ++j) xr[j] = xr[j] + yr[j];
        ops->layernorm_row(xr, int(D), qb.ln2_w.data(), qb.ln2_b.data(), eps, yr);
      });
    } else {
      const QuantParams qp = quant_params(qb.fc1.input);
      rows_parallel((n_rows + 1) / 2, 4, [&](int64_t pr) {  // pairs of rows (layernorm_quant2)
        const int64_t r = 2 * pr, nr = std::min<int64_t>(2, n_rows - r);
        float* xr[2] = {nullptr, nullptr};
        for (int64_t i = 0; i < nr; ++i) {
          xr[i] = x.data() + (r + i) * row_step * D;
          const float* yr = y.data() + (r + i) * D;
          for (int64_t j = 0; j < D; ++j) xr[i][j] = xr[i][j] + yr[j];
        }
        if (nr == 2)
          ops->layernorm_quant2(xr[0], xr[1], int(D), qb.ln2_w.data(), qb.ln2_b.data(), eps, qp, a.data() + r * D,
                                a.data() + (r + 1) * D);
        else
          ops->layernorm_quant(xr[0], int(D), qb.ln2_w.data(), qb.ln2_b.data(), eps, qp, a.data() + r * D);
        if (!blk.lv_fc1.empty()) ops->map_bytes(a.data() + r * D, nr * D, blk.lv_fc1.data());
      });
    }
    if (cls) cls_ln(qb.ln2_w, qb.ln2_b, cls->fc1_in);
    lap(kLn2);
    if (!(last && cls)) gemm_float(blk.fc1, a.data(), D, n_rows, y.data(), H);
    if (cls) gemm_float(blk.cfc1, cls_in.data(), D, batch, y.data(), last ? H : T * H);
    lap(kFc1Gemm);
    {
      const QuantParams qp = quant_params(qb.fc2.input);
      const float* mul = qb.fc2_in_mul.empty() ? nullptr : qb.fc2_in_mul.data();
      if (cls) {   // first: error feedback below overwrites y
        const QuantParams cq = quant_params(cls->fc2_in);
        rows_parallel(batch, 4, [&](int64_t b) {
          ops->gelu_quant(y.data() + (last ? b : b * T) * H, int(H), mul, cq, cls_h.data() + b * H);
        });
      }
      const int64_t gelu_rows = last && cls ? 0 : n_rows;
      if (!blk.ef_fc2.empty()) {   // GELU (times the multiplier) in place, then feedback
        ef_rows(y.data(), H, gelu_rows, blk.ef_fc2, qb.fc2, hcodes.data(), H, [&](int64_t r) {
          float* yr = y.data() + r * H;
          ops->gelu_row(yr, int(H), yr);
          if (mul)
            for (int64_t j = 0; j < H; ++j) yr[j] = yr[j] * mul[j];
        });
      } else {
        rows_parallel(gelu_rows, 4, [&](int64_t r) {
          ops->gelu_quant(y.data() + r * H, int(H), mul, qp, hcodes.data() + r * H);
          if (!blk.lv_fc2.empty()) ops->map_bytes(hcodes.data() + r * H, H, blk.lv_fc2.data());
        });
      }
    }
    lap(kGelu);
    if (!(last && cls)) gemm_float(blk.fc2, hcodes.data(), H, n_rows, y.data(), D);
    if (cls) gemm_float(blk.cfc2, cls_h.data(), H, batch, y.data(), last ? D : T * D);
    lap(kFc2Gemm);
    rows_parallel(n_rows, 16, [&](int64_t r) {
      float* xr = x.data() + r * row_step * D;
      const float* yr = y.data() + r * D;
      for (int64_t j = 0; j < D; ++j) xr[j] = xr[j] + yr[j];
    });
    lap(kFc2Gemm);
  }

  // 3. Final LayerNorm of the class tokens -> head.
  {
    const QuantParams qp = quant_params(m.head.input);
    for (int64_t b = 0; b < batch; ++b)
      ops->layernorm_quant(x.data() + b * T * D, int(D), m.norm_w.data(), m.norm_b.data(), eps, qp,
                           cls_codes.data() + b * D);
    if (!lv_head.empty()) ops->map_bytes(cls_codes.data(), batch * D, lv_head.data());
    gemm_float(head, cls_codes.data(), D, batch, logits, m.num_classes);
  }
  lap(kHead);
  if (profile) profiled_images += batch;
}

Executor::Executor(const QuantModel& model, Isa isa, int threads) : impl_(new Impl) {
  if (threads < 1) throw UsageError("executor: threads must be >= 1, got " + std::to_string(threads));
  if (!isa_available(isa)) throw UsageError(std::string("executor: this CPU or build lacks ISA ") + isa_name(isa));
  Impl& I = *impl_;
  I.m = model;
  I.isa = isa;
  I.threads = threads;
  I.check_model();
  const QuantModel& m = I.m;
  I.ops = &vit_row_ops(isa);
  I.T = m.tokens();
  I.D = m.dim;
  I.H = m.mlp_hidden;
  I.P = m.in_chans * m.patch * m.patch;
  I.hd = m.head_dim();
  I.NP = I.T - 1;
  I.eps = static_cast<float>(m.ln_eps);
  I.inv_sqrt_hd = 1.0f / std::sqrt(static_cast<float>(I.hd));
  I.patch = make_linear(m.patch_embed, isa);
  I.head = make_linear(m.head, isa);
  I.lv_head = level_table(m.head.input);
  I.blocks.resize(m.blocks.size());
  // Error-feedback gains (O(in^3) each) are computed after the loop, one Linear per task on
  // the executor's threads; each Linear's gains are the same bits whichever thread makes them.
  struct EfJob {
    const QLinear* l;
    std::vector<float>* g;
  };
  std::vector<EfJob> ef_jobs;
  for (size_t i = 0; i < m.blocks.size(); ++i) {
    const QBlock& qb = m.blocks[i];
    Block& b = I.blocks[i];
    b.q = make_linear(qb.qkv, isa, 0, I.D);
    b.k = make_linear(qb.qkv, isa, I.D, I.D);
    b.v = make_linear(qb.qkv, isa, 2 * I.D, I.D);
    b.proj = make_linear(qb.proj, isa);
    b.fc1 = make_linear(qb.fc1, isa);
    b.fc2 = make_linear(qb.fc2, isa);
    b.coder = make_attn_coder(qb.attn);
    b.coder_view = b.coder.view();
    b.sk.assign(size_t(I.T), qb.k.scale);
    b.sv.assign(size_t(I.hd), qb.v.scale);
    b.zk.assign(size_t(I.T), qb.k.zero - (1 << (qb.k.bits - 1)));
    b.zv.assign(size_t(I.hd), qb.v.zero - (1 << (qb.v.bits - 1)));
    b.lv_qkv = level_table(qb.qkv.input);
    b.lv_q = level_table(qb.q);
    b.kmap = level_table(qb.k, 1 << (qb.k.bits - 1));
    b.vmap = level_table(qb.v, 1 << (qb.v.bits - 1));
    b.lv_proj = level_table(qb.proj.input);
    b.lv_fc1 = level_table(qb.fc1.input);
    b.lv_fc2 = level_table(qb.fc2.input);
    if (qb.qkv.ef_damp > 0) ef_jobs.push_back({&qb.qkv, &b.ef_qkv});
    if (qb.proj.ef_damp > 0) ef_jobs.push_back({&qb.proj, &b.ef_proj});
    if (qb.fc1.ef_damp > 0) ef_jobs.push_back({&qb.fc1, &b.ef_fc1});
    if (qb.fc2.ef_damp > 0) ef_jobs.push_back({&qb.fc2, &b.ef_fc2});
    if (qb.cls) {
      const ClsQuant& c = *qb.cls;
      b.cls = &c;
      b.cq = make_linear(qb.qkv, isa, 0, I.D, &c.qkv_in);
      b.ck = make_linear(qb.qkv, isa, I.D, I.D, &c.qkv_in);
      b.cv = make_linear(qb.qkv, isa, 2 * I.D, I.D, &c.qkv_in);
      b.cproj = make_linear(qb.proj, isa, 0, -1, &c.proj_in);
      b.cfc1 = make_linear(qb.fc1, isa, 0, -1, &c.fc1_in);
      b.cfc2 = make_linear(qb.fc2, isa, 0, -1, &c.fc2_in);
      b.sk[0] = c.k.scale;   // key 0 is the class token's
      b.zk[0] = c.k.zero - (1 << (c.k.bits - 1));
    }
  }
  I.pool.reset(new ThreadPool(threads));
  if (!ef_jobs.empty()) {
    // Widest first (the order only balances the threads). Not std::stable_sort: GCC 12's
    // temporary buffer trips ASan's alloc-dealloc-mismatch check.
    std::sort(ef_jobs.begin(), ef_jobs.end(), [](const EfJob& a, const EfJob& b) { return a.l->in > b.l->in; });
    std::vector<std::exception_ptr> err(ef_jobs.size());
    I.pool->parallel_for(int(ef_jobs.size()), [&](int t) {
      try {
        *ef_jobs[size_t(t)].g = ef_gains(*ef_jobs[size_t(t)].l);
      } catch (...) {
        err[size_t(t)] = std::current_exception();
      }
    });
    for (const auto& e : err)
      if (e) std::rethrow_exception(e);
  }
}

Executor::~Executor() = default;

void Executor::run(const uint8_t* pixels, int64_t batch, float* logits) { impl_->run(pixels, batch, logits); }
const QuantModel& Executor::model() const { return impl_->m; }
Isa Executor::isa() const { return impl_->isa; }
int Executor::threads() const { return impl_->threads; }

std::string Executor::kernel_summary() const {
  std::string s;
  auto add = [&](const PackedWeights& w) {
    const std::string k = std::string(gemm_kernel_name(w)) + (w.bits == 4 ? " (int4)" : " (int8)");
    if (s.find(k) == std::string::npos) s += (s.empty() ? "" : ", ") + k;
  };
  add(impl_->patch.w);
  for (const Block& b : impl_->blocks) {
    add(b.q.w);
    add(b.proj.w);
    add(b.fc1.w);
    add(b.fc2.w);
  }
  add(impl_->head.w);
  s += std::string("; row ops: ") + impl_->ops->name;
  return s;
}

size_t Executor::packed_weight_bytes() const {
  size_t n = impl_->patch.w.data_bytes + impl_->head.w.data_bytes;
  for (const Block& b : impl_->blocks)
    for (const Linear* l : {&b.q, &b.k, &b.v, &b.proj, &b.fc1, &b.fc2}) n += l->w.data_bytes;
  return n;
}

static size_t attn_pack_bytes(const std::vector<PackedWeights>& v) {
  size_t n = 0;
  for (const PackedWeights& w : v) n += w.data_bytes;
  return n;
}

size_t Executor::workspace_bytes() const {
  const Impl& I = *impl_;
  return I.im2col.size() + I.x.size() * 4 + I.y.size() * 4 + I.a.size() + I.hcodes.size() + I.qcodes.size() +
         I.kvals.size() + I.vvals.size() + I.cls_codes.size() + I.cls_in.size() + I.cls_h.size() + I.scores.size() * 4 + I.levels.size() +
         attn_pack_bytes(I.kpack) + attn_pack_bytes(I.vpack) + I.attn_rowsum.size() * 4;
}

void Executor::set_profile(bool on) { impl_->profile = on; }

std::vector<std::pair<std::string, double>> Executor::profile() const {
  std::vector<std::pair<std::string, double>> out;
  for (int s = 0; s < kStages; ++s) out.push_back({kStageNames[s], impl_->stage_s[s]});
  return out;
}

int64_t Executor::profiled_images() const { return impl_->profiled_images; }

void Executor::reset_profile() {
  for (double& v : impl_->stage_s) v = 0;
  impl_->profiled_images = 0;
}

}  // namespace reparq
