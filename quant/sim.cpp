// sim.cpp: simulated quantized forward (FORMAT.md) in LibTorch.
#include "quant/sim.h"

#include <torch/torch.h>

#include <cmath>
#include <cstring>

#include "kernels/error.h"

namespace reparq {

namespace {

torch::Tensor vec(const std::vector<float>& v, std::vector<int64_t> shape = {}) {
  if (shape.empty()) shape = {int64_t(v.size())};
  return torch::from_blob(const_cast<float*>(v.data()), shape, torch::kFloat32).clone();
}

SimLinear from_q(const QLinear& l) {
  SimLinear s;
  torch::Tensor w = torch::empty({l.out, l.in}, torch::kFloat32);
  float* p = w.data_ptr<float>();
  for (int64_t n = 0; n < l.out; ++n)
    for (int64_t k = 0; k < l.in; ++k) p[n * l.in + k] = l.weight(n, k);
  s.weight = w;
  s.bias = vec(l.bias);
  s.input = l.input;
  if (l.ef_damp > 0) s.ef = vec(ef_gains_dense(l), {l.in, l.in});
  return s;
}

torch::Tensor maybe_fq(const torch::Tensor& x, const std::optional<ActQuant>& q) {
  return q ? fake_quant(x, *q) : x;
}

torch::Tensor linear(const torch::Tensor& x, const SimLinear& l) {
  return torch::linear(maybe_fq(x, l.input), l.weight, l.bias);
}

}  // namespace

torch::Tensor quant_codes(const torch::Tensor& x, const ActQuant& q) {
  torch::Tensor t = (x * q.inv_scale()).nan_to_num(-65536.0, 65536.0, -65536.0).clamp(-65536.0, 65536.0);
  torch::Tensor c = (t.round() + double(q.zero)).clamp(0, q.qmax());
  if (q.lut.empty()) return c;
  torch::Tensor lut = torch::from_blob(const_cast<uint8_t*>(q.lut.data()), {int64_t(q.lut.size())}, torch::kUInt8).to(torch::kFloat32);
  return lut.index({c.to(torch::kLong)});
}

torch::Tensor fake_quant(const torch::Tensor& x, const ActQuant& q) {
  return (quant_codes(x, q) - double(q.zero)) * q.scale;
}

torch::Tensor ef_fake_quant(const torch::Tensor& x, const torch::Tensor& g, const ActQuant& q) {
  const int64_t n = x.size(1);
  // Columns as rows ([n, M]): each step reads row i and updates the rows after it.
  torch::Tensor t = (x.to(torch::kFloat32) * q.inv_scale()).nan_to_num(-65536.0, 65536.0, -65536.0)
                        .clamp(-65536.0, 65536.0).t().contiguous();
  torch::Tensor gc = g.to(torch::kFloat32).contiguous();
  torch::Tensor codes = torch::empty_like(t);
  torch::Tensor lut;
  if (!q.lut.empty())
    lut = torch::from_blob(const_cast<uint8_t*>(q.lut.data()), {int64_t(q.lut.size())}, torch::kUInt8).to(torch::kFloat32);
  for (int64_t i = 0; i < n; ++i) {
    torch::Tensor ti = t[i].clamp(-65536.0, 65536.0);
    torch::Tensor c = (ti.round() + double(q.zero)).clamp(0, q.qmax());
    if (lut.defined()) c = lut.index({c.to(torch::kLong)});
    codes[i].copy_(c);
    if (i + 1 == n) break;
    torch::Tensor e = ti - (c - double(q.zero));
    torch::Tensor rest = t.narrow(0, i + 1, n - i - 1);
    rest.sub_(gc[i].narrow(0, i + 1, n - i - 1).unsqueeze(1) * e.unsqueeze(0));
  }
  return (codes.t() - double(q.zero)) * q.scale;
}

torch::Tensor fake_quant_attn(const torch::Tensor& a, const AttnQuant& q) {
  const int64_t L = int64_t(q.lut.size());
  std::vector<float> asc(q.thresholds.rbegin(), q.thresholds.rend());
  torch::Tensor thr = vec(asc);
  // c = #{i : a < t_i} = (L-1) - #{ascending u_j <= a}
  torch::Tensor le = torch::bucketize(a.contiguous(), thr, /*out_int32=*/false, /*right=*/true);
  torch::Tensor c = (L - 1) - le;
  std::vector<float> lv(L);
  for (int64_t i = 0; i < L; ++i) lv[i] = q.level(int(i));
  return vec(lv).index({c});
}

torch::Tensor fake_quant_attn_row_dynamic(const torch::Tensor& a, int bits) {
  const float L = float((1 << bits) - 1);
  torch::Tensor m = a.amax(-1, /*keepdim=*/true);
  // L / m and m / L in float32, as the executor computes them; NaN codes -> 0.
  const torch::Tensor Lt = torch::full_like(m, L);
  torch::Tensor c = (a * (Lt / m)).nan_to_num(0.0, L, 0.0).clamp(0.0, L).round();
  return c * (m / Lt);
}

SimModel::SimModel(const QuantModel& q)
    : image_size(q.image_size), patch(q.patch), in_chans(q.in_chans), dim(q.dim), depth(q.depth),
      heads(q.heads), num_classes(q.num_classes), ln_eps(q.ln_eps), mean(q.mean), std(q.std) {
  patch_embed = from_q(q.patch_embed);
  cls_token = vec(q.cls_token, {1, 1, dim});
  pos_embed = vec(q.pos_embed, {1, q.tokens(), dim});
  for (const QBlock& b : q.blocks) {
    SimBlock s;
    s.ln1_w = vec(b.ln1_w); s.ln1_b = vec(b.ln1_b);
    s.ln2_w = vec(b.ln2_w); s.ln2_b = vec(b.ln2_b);
    s.qkv = from_q(b.qkv); s.proj = from_q(b.proj); s.fc1 = from_q(b.fc1); s.fc2 = from_q(b.fc2);
    s.q = b.q; s.k = b.k; s.v = b.v; s.attn = b.attn; s.cls = b.cls; s.attn_cls_dynamic = b.attn_cls_dynamic;
    if (!b.fc2_in_mul.empty()) s.fc2_in_mul = vec(b.fc2_in_mul);
    blocks.push_back(std::move(s));
  }
  norm_w = vec(q.norm_w); norm_b = vec(q.norm_b);
  head = from_q(q.head);
}

SimModel::SimModel(const Vit& fp) {
  torch::NoGradGuard ng;
  const VitConfig& c = fp.config();
  image_size = c.image_size; patch = c.patch; in_chans = c.in_chans; dim = c.dim; depth = c.depth;
  heads = c.heads; num_classes = c.num_classes; ln_eps = c.ln_eps; mean = c.mean; std = c.std;
  // conv over normalized input == linear over raw pixels with W/(255 std), bias - (mean/std) sum W.
  torch::Tensor w = fp.param("patch_embed.proj.weight").reshape({dim, -1});
  patch_embed.weight = w / (255.0f * std);
  patch_embed.bias = fp.param("patch_embed.proj.bias") - w.sum(1) * (mean / std);
  cls_token = fp.param("cls_token").clone();
  pos_embed = fp.param("pos_embed").clone();
  auto P = [&](int i, const char* r) { return fp.param("blocks." + std::to_string(i) + "." + r).clone(); };
  for (int i = 0; i < depth; ++i) {
    SimBlock s;
    s.ln1_w = P(i, "norm1.weight"); s.ln1_b = P(i, "norm1.bias");
    s.ln2_w = P(i, "norm2.weight"); s.ln2_b = P(i, "norm2.bias");
    s.qkv = {P(i, "attn.qkv.weight"), P(i, "attn.qkv.bias"), std::nullopt, {}};
    s.proj = {P(i, "attn.proj.weight"), P(i, "attn.proj.bias"), std::nullopt, {}};
    s.fc1 = {P(i, "mlp.fc1.weight"), P(i, "mlp.fc1.bias"), std::nullopt, {}};
    s.fc2 = {P(i, "mlp.fc2.weight"), P(i, "mlp.fc2.bias"), std::nullopt, {}};
    blocks.push_back(std::move(s));
  }
  norm_w = fp.param("norm.weight").clone(); norm_b = fp.param("norm.bias").clone();
  head = {fp.param("head.weight").clone(), fp.param("head.bias").clone(), std::nullopt, {}};
}

torch::Tensor SimModel::embed(const torch::Tensor& pixels, const SiteHook& hook) const {
  if (pixels.dim() != 3 || pixels.size(1) != image_size || pixels.size(2) != image_size)
    throw UsageError("sim: images must be [B, " + std::to_string(image_size) + ", " + std::to_string(image_size) + "]");
  const int64_t B = pixels.size(0), g = image_size / patch, D = dim;
  // im2col in (c, y, x) order; gray pixels replicated to every channel.
  torch::Tensor px = pixels.to(torch::kFloat32).reshape({B, g, patch, g, patch}).permute({0, 1, 3, 2, 4})
                         .reshape({B, g * g, 1, patch * patch});
  px = px.expand({B, g * g, in_chans, patch * patch}).reshape({B, g * g, in_chans * patch * patch});
  torch::Tensor x = linear(px, patch_embed);
  if (hook) hook(-1, Site::PatchOut, x);
  return torch::cat({cls_token.expand({B, 1, D}), x}, 1) + pos_embed;
}

torch::Tensor sim_block_forward(const SimBlock& s, const torch::Tensor& x, int64_t heads, double ln_eps,
                                int block, const SiteHook& hook, const SiteQuant& fq) {
  auto H = [&](Site site, const torch::Tensor& t) { if (hook) hook(block, site, t); };
  // The class token's row (token 0: dim 2 of q, k [B, heads, N, hd] and of the attention, else
  // dim 1) with its own quantizer when the block has them (straight-through when learning); its
  // v row keeps the block's v quantizer (QBlock::cls).
  auto cls_row = [&](const torch::Tensor& t, const torch::Tensor& tq, const ActQuant& c, int64_t dim) {
    torch::Tensor r = t.narrow(dim, 0, 1);
    torch::Tensor rq = r.requires_grad() ? r + (fake_quant(r.detach(), c) - r.detach()) : fake_quant(r, c);
    return torch::cat({rq, tq.narrow(dim, 1, tq.size(dim) - 1)}, dim);
  };
  auto Q = [&](Site site, const torch::Tensor& t, const std::optional<ActQuant>& q) {
    if (!q) return t;
    torch::Tensor tq = fq ? fq(site, t, *q) : fake_quant(t, *q);
    if (!s.cls) return tq;
    const ClsQuant& c = *s.cls;
    switch (site) {
      case Site::Norm1Out: return cls_row(t, tq, c.qkv_in, 1);
      case Site::Q: return cls_row(t, tq, c.q, 2);
      case Site::K: return cls_row(t, tq, c.k, 2);
      case Site::ProjIn: return cls_row(t, tq, c.proj_in, 1);
      case Site::Norm2Out: return cls_row(t, tq, c.fc1_in, 1);
      case Site::Fc2In: return cls_row(t, tq, c.fc2_in, 1);
      default: return tq;
    }
  };
  auto lin = [&](Site site, const torch::Tensor& t, const SimLinear& l) {
    if (!l.ef.defined() || !l.input || fq || t.requires_grad()) return torch::linear(Q(site, t, l.input), l.weight, l.bias);
    // Error-feedback rounding; the class token's row keeps its own quantizer when it has one.
    const int64_t B = t.size(0), N = t.size(1), Dn = t.size(2), r0 = s.cls ? 1 : 0;
    torch::Tensor rows = t.narrow(1, r0, N - r0).reshape({B * (N - r0), Dn});
    torch::Tensor tq = ef_fake_quant(rows, l.ef, *l.input).reshape({B, N - r0, Dn});
    if (r0) tq = torch::cat({Q(site, t.narrow(1, 0, 1), l.input), tq}, 1);
    return torch::linear(tq, l.weight, l.bias);
  };
  const int64_t B = x.size(0), N = x.size(1), D = x.size(2), nh = heads, hd = D / heads;
  const float inv_sqrt = 1.0f / std::sqrt(float(hd));
  torch::Tensor h = torch::layer_norm(x, {D}, s.ln1_w, s.ln1_b, ln_eps);
  H(Site::Norm1Out, h);
  h = lin(Site::Norm1Out, h, s.qkv);
  H(Site::QkvOut, h);
  auto qkv = h.reshape({B, N, 3, nh, hd}).permute({2, 0, 3, 1, 4});
  torch::Tensor q = qkv[0], k = qkv[1], v = qkv[2];
  H(Site::Q, q); H(Site::K, k); H(Site::V, v);
  q = Q(Site::Q, q, s.q); k = Q(Site::K, k, s.k); v = Q(Site::V, v, s.v);
  torch::Tensor a = (torch::matmul(q, k.transpose(-2, -1)) * inv_sqrt).softmax(-1);
  H(Site::Attn, a);
  if (s.attn) {
    // Straight-through when learning (block reconstruction); the exact levels otherwise.
    torch::Tensor aq = a.requires_grad() ? a + (fake_quant_attn(a.detach(), *s.attn) - a.detach())
                                         : fake_quant_attn(a, *s.attn);
    if (s.attn_cls_dynamic && !s.cls) {   // the class token's query row with its own scale
      torch::Tensor r = a.narrow(2, 0, 1);
      torch::Tensor rq = r.requires_grad() ? r + (fake_quant_attn_row_dynamic(r.detach(), s.attn->bits) - r.detach())
                                           : fake_quant_attn_row_dynamic(r, s.attn->bits);
      aq = torch::cat({rq, aq.narrow(2, 1, aq.size(2) - 1)}, 2);
    }
    a = s.cls ? cls_row(a, aq, s.cls->attn, 2) : aq;
  }
  h = torch::matmul(a, v).transpose(1, 2).reshape({B, N, D});
  H(Site::ProjIn, h);
  h = lin(Site::ProjIn, h, s.proj);
  H(Site::ProjOut, h);
  torch::Tensor y = x + h;
  h = torch::layer_norm(y, {D}, s.ln2_w, s.ln2_b, ln_eps);
  H(Site::Norm2Out, h);
  h = lin(Site::Norm2Out, h, s.fc1);
  H(Site::Fc1Out, h);
  h = torch::gelu(h);
  if (s.fc2_in_mul.defined()) h = h * s.fc2_in_mul;
  H(Site::Fc2In, h);
  h = lin(Site::Fc2In, h, s.fc2);
  H(Site::Fc2Out, h);
  return y + h;
}

void scale_qk_channels(SimBlock& s, const torch::Tensor& r) {
  torch::NoGradGuard ng;
  const int64_t D = s.qkv.weight.size(1);
  if (s.qkv.weight.size(0) != 3 * D || r.numel() != D)
    throw UsageError("scale_qk_channels: want a qkv Linear [3D, D] and D factors");
  using torch::indexing::Slice;
  s.qkv.weight = s.qkv.weight.clone();   // may share storage with the float model
  s.qkv.bias = s.qkv.bias.clone();
  s.qkv.weight.index({Slice(0, D), Slice()}).mul_(r.unsqueeze(1));
  s.qkv.bias.index({Slice(0, D)}).mul_(r);
  s.qkv.weight.index({Slice(D, 2 * D), Slice()}).div_(r.unsqueeze(1));
  s.qkv.bias.index({Slice(D, 2 * D)}).div_(r);
}

torch::Tensor SimModel::forward(const torch::Tensor& pixels, const SiteHook& hook) const {
  torch::NoGradGuard ng;
  torch::Tensor x = embed(pixels, hook);
  for (int b = 0; b < depth; ++b) x = sim_block_forward(blocks[b], x, heads, ln_eps, b, hook);
  torch::Tensor t = torch::layer_norm(x.select(1, 0), {dim}, norm_w, norm_b, ln_eps);
  if (hook) hook(-1, Site::NormOut, t);
  torch::Tensor logits = linear(t, head);
  if (hook) hook(-1, Site::HeadOut, logits);
  return logits;
}

EvalResult evaluate_sim(const SimModel& m, const ImageSet& set, int64_t limit, int64_t batch,
                        const std::string& label, bool keep_logits) {
  return evaluate(set, limit, batch, m.num_classes,
                  [&](const uint8_t* px, int64_t b, float* out) {
                    torch::Tensor x = torch::from_blob(const_cast<uint8_t*>(px), {b, set.rows, set.cols}, torch::kUInt8);
                    torch::Tensor l = m.forward(x).contiguous();
                    std::memcpy(out, l.data_ptr<float>(), sizeof(float) * b * m.num_classes);
                  },
                  label, keep_logits);
}

}  // namespace reparq
