// quantizers.cpp: see quantizers.h.
#include "quant/quantizers.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/error.h"
#include "quant/sim.h"

namespace reparq {

namespace {

// Linear-interpolation quantile of each column of a column-sorted [n, C] tensor -> [C].
torch::Tensor quantile_sorted(const torch::Tensor& sorted, double p) {
  const int64_t n = sorted.size(0);
  double pos = p * double(n - 1);
  int64_t lo = int64_t(std::floor(pos)), hi = std::min(lo + 1, n - 1);
  double f = pos - double(lo);
  return sorted[lo] * (1.0 - f) + sorted[hi] * f;
}

// Per-channel (scale, zero) from [C] ranges, as act_from_range does per tensor.
ChannelQuant channels_from_range(torch::Tensor lo, torch::Tensor hi, int bits) {
  const double Q = double((1 << bits) - 1);
  lo = lo.clamp_max(0);   // the zero point must lie in [0, Q]: the range has to contain 0
  hi = hi.clamp_min(0);
  hi = torch::max(hi, lo + 1e-8);
  ChannelQuant q;
  q.bits = bits;
  q.scale = ((hi - lo) / Q).clamp_min(1e-8);
  q.zero = (-lo / q.scale).round().clamp(0, Q);
  return q;
}

torch::Tensor channel_mse(const torch::Tensor& x, const ChannelQuant& q) {
  return (fake_quant_channels(x, q) - x).pow(2).mean(0);   // [C]
}

const double kRepqPcts[] = {0.999, 0.9999, 0.99999};

// Per-group (channel or row) choice among candidate quantizers: each group keeps the
// candidate with the lowest error so far. `fields` are the candidate's per-group tensors.
struct PerGroupBest {
  torch::Tensor mse;
  std::vector<torch::Tensor> fields;
  void offer(const torch::Tensor& m, std::vector<torch::Tensor> cand) {
    if (!mse.defined()) {
      mse = m;
      fields = std::move(cand);
      return;
    }
    torch::Tensor better = m < mse;
    for (size_t i = 0; i < fields.size(); ++i) fields[i] = torch::where(better, cand[i], fields[i]);
    mse = torch::min(m, mse);
  }
};

}  // namespace

// ---- per tensor -------------------------------------------------------------------------

ActQuant act_from_range(double lo, double hi, int bits) {
  if (bits < 2 || bits > 8) throw UsageError("activation bits must be 2..8, got " + std::to_string(bits));
  ActQuant a;
  a.bits = bits;
  const double Q = double((1 << bits) - 1);
  lo = std::min(lo, 0.0);   // the zero point must lie in [0, Q]: the range has to contain 0
  hi = std::max(hi, 0.0);
  if (!(hi > lo)) hi = lo + 1e-6;
  a.scale = float(std::max((hi - lo) / Q, 1e-8));
  double z = std::nearbyint(-lo / double(a.scale));
  a.zero = int32_t(std::min(std::max(z, 0.0), Q));
  return a;
}

ActQuant act_grid_levels(const torch::Tensor& x, int bits, const torch::Tensor& chan_w) {
  torch::NoGradGuard ng;
  torch::Tensor X = x.detach().reshape({-1, x.size(-1)}).to(torch::kFloat64);
  ActQuant g = act_from_range(X.min().item<double>(), X.max().item<double>(), 8);
  torch::Tensor codes = quant_codes(X.to(torch::kFloat32), g).to(torch::kLong).reshape({-1});
  torch::Tensor w = chan_w.defined() ? chan_w.to(torch::kFloat64).unsqueeze(0).expand_as(X).reshape({-1})
                                     : torch::ones({X.numel()}, torch::kFloat64);
  torch::Tensor xv = X.reshape({-1});
  torch::Tensor W = torch::zeros({256}, torch::kFloat64), S1 = torch::zeros_like(W), S2 = torch::zeros_like(W);
  W.index_add_(0, codes, w);
  S1.index_add_(0, codes, w * xv);
  S2.index_add_(0, codes, w * xv * xv);
  std::vector<int> bins;
  std::vector<double> pw{0}, p1{0}, p2{0};   // prefix sums over the non-empty bins
  for (int c = 0; c < 256; ++c) {
    if (!(W[c].item<double>() > 0)) continue;
    bins.push_back(c);
    pw.push_back(pw.back() + W[c].item<double>());
    p1.push_back(p1.back() + S1[c].item<double>());
    p2.push_back(p2.back() + S2[c].item<double>());
  }
  const int n = int(bins.size()), K = std::min(n, 1 << bits);
  const double s8 = g.scale, z8 = g.zero;
  auto level = [&](int i, int j) {   // grid code of the cell holding non-empty bins i..j-1
    double m = (p1[j] - p1[i]) / (pw[j] - pw[i]);
    return std::min(255.0, std::max(0.0, std::nearbyint(m / s8) + z8));
  };
  auto cost = [&](int i, int j) {
    double v = s8 * (level(i, j) - z8);
    return (p2[j] - p2[i]) - 2 * v * (p1[j] - p1[i]) + v * v * (pw[j] - pw[i]);
  };
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<std::vector<double>> dp(K + 1, std::vector<double>(n + 1, inf));
  std::vector<std::vector<int>> from(K + 1, std::vector<int>(n + 1, 0));
  dp[0][0] = 0;
  for (int k = 1; k <= K; ++k)
    for (int j = k; j <= n; ++j)
      for (int i = k - 1; i < j; ++i) {
        double c = dp[k - 1][i] + cost(i, j);
        if (c < dp[k][j]) dp[k][j] = c, from[k][j] = i;
      }
  std::vector<int> lv;
  for (int k = K, j = n; k > 0; j = from[k][j], --k) lv.push_back(int(level(from[k][j], j)));
  g.lut = nearest_level_lut(lv, g.qmax());
  return g;
}

std::vector<uint8_t> nearest_level_lut(std::vector<int> lv, int qmax) {
  std::sort(lv.begin(), lv.end());
  lv.erase(std::unique(lv.begin(), lv.end()), lv.end());
  std::vector<uint8_t> lut(size_t(qmax) + 1);
  for (int c = 0; c <= qmax; ++c) {
    int best = lv[0];
    for (int l : lv)
      if (std::abs(l - c) < std::abs(best - c)) best = l;
    lut[size_t(c)] = uint8_t(best);
  }
  return lut;
}

ActQuant act_minmax(const torch::Tensor& x, int bits) {
  return act_from_range(x.min().item<double>(), x.max().item<double>(), bits);
}

double quant_mse(const torch::Tensor& x, const ActQuant& q) {
  return (fake_quant(x, q) - x).pow(2).mean().item<double>();
}

ActQuant act_percentile(const torch::Tensor& x, int bits, bool wide) {
  torch::Tensor s = std::get<0>(x.reshape({-1, 1}).sort(0));
  std::vector<double> ps(std::begin(kRepqPcts), std::end(kRepqPcts));
  if (wide) ps.insert(ps.end(), {0.99, 0.995, 0.9995, 1.0});
  ActQuant best;
  double best_mse = INFINITY;
  for (double p : ps) {
    ActQuant a = act_from_range(quantile_sorted(s, 1 - p).item<double>(), quantile_sorted(s, p).item<double>(), bits);
    double m = quant_mse(x, a);
    if (m < best_mse) best_mse = m, best = a;
  }
  return best;
}

ActQuant act_search(const torch::Tensor& x, int bits, QuantLoss loss, const void* ctx) {
  torch::Tensor s = std::get<0>(x.reshape({-1, 1}).sort(0));
  const double mn = s[0].item<double>(), mx = s[-1].item<double>();
  ActQuant best;
  double best_loss = INFINITY;
  auto eval = [&](double lo, double hi) {
    ActQuant a = act_from_range(lo, hi, bits);
    double l = loss(fake_quant(x, a), ctx);
    if (l < best_loss) best_loss = l, best = a;
    return l;
  };
  for (double p : {0.999, 0.9999, 0.99999, 0.99, 0.995, 0.9995, 1.0})
    eval(quantile_sorted(s, 1 - p).item<double>(), quantile_sorted(s, p).item<double>());
  // Coarse grid of (a, b) in {1, 0.85, ..., 0.25}^2, then steps of 0.05 around its best.
  double ga = 1, gb = 1, gl = INFINITY;
  for (int i = 0; i < 6; ++i)
    for (int j = 0; j < 6; ++j) {
      const double a = 1.0 - 0.15 * i, b = 1.0 - 0.15 * j;
      const double l = eval(mn * a, mx * b);
      if (l < gl) gl = l, ga = a, gb = b;
    }
  for (int i = -2; i <= 2; ++i)
    for (int j = -2; j <= 2; ++j) {
      const double a = ga + 0.05 * i, b = gb + 0.05 * j;
      if ((i || j) && a > 0.1 && a <= 1.0 + 1e-9 && b > 0.1 && b <= 1.0 + 1e-9) eval(mn * a, mx * b);
    }
  return best;
}

double loss_mse_to(const torch::Tensor& xq, const void* ctx) {
  return (xq - *static_cast<const torch::Tensor*>(ctx)).pow(2).sum().item<double>();
}

double loss_linear_out(const torch::Tensor& xq, const void* ctx) {
  const auto* c = static_cast<const LinearLossCtx*>(ctx);
  return torch::matmul(xq - c->x, c->w.t()).pow(2).sum().item<double>();
}

// ---- per channel ------------------------------------------------------------------------

torch::Tensor fake_quant_channels(const torch::Tensor& x, const ChannelQuant& q) {
  const double Q = double((1 << q.bits) - 1);
  torch::Tensor c = ((x * (1.0 / q.scale)).clamp(-65536, 65536).round() + q.zero).clamp(0, Q);
  return (c - q.zero) * q.scale;
}

ChannelQuant channel_minmax(const torch::Tensor& x, int bits) {
  return channels_from_range(std::get<0>(x.min(0)), std::get<0>(x.max(0)), bits);
}

ChannelQuant channel_percentile(const torch::Tensor& x, int bits) {
  torch::Tensor s = std::get<0>(x.sort(0));
  PerGroupBest best;
  for (double p : kRepqPcts) {
    ChannelQuant q = channels_from_range(quantile_sorted(s, 1 - p), quantile_sorted(s, p), bits);
    best.offer(channel_mse(x, q), {q.scale, q.zero});
  }
  ChannelQuant q;
  q.bits = bits;
  q.scale = best.fields[0];
  q.zero = best.fields[1];
  return q;
}

double layer_output_mse(const torch::Tensor& x, const ChannelQuant& q, const torch::Tensor& w) {
  torch::Tensor d = torch::matmul(fake_quant_channels(x, q) - x, w.t());
  return d.pow(2).sum(1).mean().item<double>();
}

ChannelQuant channel_dual_clip(const torch::Tensor& x, const torch::Tensor& w, int bits, int iters) {
  // 1. Grid start: lower and upper percentile chosen independently per channel.
  torch::Tensor s = std::get<0>(x.sort(0));
  const double grid[] = {0.99, 0.999, 0.9999, 0.99999, 1.0};
  PerGroupBest best;
  for (double pl : grid)
    for (double pu : grid) {
      torch::Tensor lo = quantile_sorted(s, 1 - pl), hi = quantile_sorted(s, pu);
      best.offer(channel_mse(x, channels_from_range(lo, hi, bits)), {lo, hi});
    }
  const torch::Tensor best_lo = best.fields[0], best_hi = best.fields[1];
  ChannelQuant start = channels_from_range(best_lo, best_hi, bits);
  if (iters <= 0) return start;

  // 2. Learn (lo, hi) per channel by the consuming layer's output error, straight-through
  //    rounding; bounds parameterized multiplicatively around the grid start.
  torch::AutoGradMode ag(true);
  const double Q = double((1 << bits) - 1);
  torch::Tensor lo0 = best_lo.detach(), hi0 = best_hi.detach();
  torch::Tensor a = torch::zeros_like(lo0).requires_grad_(true);
  torch::Tensor b = torch::zeros_like(hi0).requires_grad_(true);
  torch::optim::Adam opt({a, b}, torch::optim::AdamOptions(5e-3));
  torch::Tensor wt = w.t().detach();
  torch::Tensor y = torch::matmul(x, wt);
  auto forward = [&](const torch::Tensor& lo, const torch::Tensor& hi) {
    torch::Tensor delta = (hi - lo) / Q;
    torch::Tensor xc = torch::min(torch::max(x, lo), hi);
    torch::Tensor t = (xc - lo) / delta;
    torch::Tensor r = t + (t.round() - t).detach();
    return r * delta + lo;
  };
  double start_loss = layer_output_mse(x, start, w);
  torch::Tensor best_a = a.detach().clone(), best_b = b.detach().clone();
  double best_loss = INFINITY;
  for (int it = 0; it < iters; ++it) {
    torch::Tensor lo = lo0 * torch::exp(a), hi = hi0 * torch::exp(b);
    torch::Tensor loss = (torch::matmul(forward(lo, hi), wt) - y).pow(2).sum(1).mean();
    double l = loss.item<double>();
    if (l < best_loss) best_loss = l, best_a = a.detach().clone(), best_b = b.detach().clone();
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
  torch::NoGradGuard ng;
  ChannelQuant learned = channels_from_range(lo0 * torch::exp(best_a), hi0 * torch::exp(best_b), bits);
  // Keep the learned bounds only if they lower the real (integer zero point) output error.
  return layer_output_mse(x, learned, w) < start_loss ? learned : start;
}

// ---- re-parameterization ---------------------------------------------------------------

Reparam make_reparam(const ChannelQuant& q, const std::string& target) {
  torch::Tensor st, zt;
  if (target == "mean") {
    st = q.scale.mean();
    zt = q.zero.mean().round();
  } else if (target == "median") {
    // torch's median returns the lower of the two middle values; use the mean of both.
    torch::Tensor ss = std::get<0>(q.scale.sort()), zs = std::get<0>(q.zero.sort());
    int64_t n = ss.size(0);
    st = (ss[(n - 1) / 2] + ss[n / 2]) / 2;
    zt = ((zs[(n - 1) / 2] + zs[n / 2]) / 2).round();
  } else {
    throw UsageError("re-parameterization target must be mean or median, got '" + target + "'");
  }
  Reparam r;
  r.layer.bits = q.bits;
  r.layer.scale = st.item<float>();
  r.layer.zero = int32_t(zt.item<double>());
  r.rho = q.scale / double(r.layer.scale);
  r.tau = (double(r.layer.zero) - q.zero) * double(r.layer.scale);
  return r;
}

// ---- weights ----------------------------------------------------------------------------

torch::Tensor WeightQuant::dequant() const { return scale.unsqueeze(1) * (codes - zero.unsqueeze(1)); }

namespace {

struct RowParams {
  torch::Tensor scale, zero_u;  // [out], unsigned zero point in [0, Q]
};

RowParams row_params(const torch::Tensor& w, int bits, const std::string& method) {
  const double Q = double((1 << bits) - 1);
  auto from = [&](torch::Tensor lo, torch::Tensor hi) {
    lo = lo.clamp_max(0);   // the zero point must lie in [0, Q]: the range has to contain 0
    hi = hi.clamp_min(0);
    hi = torch::max(hi, lo + 1e-8);
    RowParams p;
    p.scale = ((hi - lo) / Q).clamp_min(1e-10);
    p.zero_u = (-lo / p.scale).round().clamp(0, Q);
    return p;
  };
  auto fq = [&](const RowParams& p) {
    torch::Tensor c = ((w / p.scale.unsqueeze(1)).round() + p.zero_u.unsqueeze(1)).clamp(0, Q);
    return (c - p.zero_u.unsqueeze(1)) * p.scale.unsqueeze(1);
  };
  if (method == "minmax") return from(std::get<0>(w.min(1)), std::get<0>(w.max(1)));
  if (method != "percentile") throw UsageError("weight quantizer must be minmax or percentile, got '" + method + "'");
  torch::Tensor s = std::get<0>(w.t().sort(0));   // [in, out] sorted per row of w
  PerGroupBest best;
  for (double p : kRepqPcts) {
    RowParams c = from(quantile_sorted(s, 1 - p), quantile_sorted(s, p));
    best.offer((fq(c) - w).pow(2).mean(1), {c.scale, c.zero_u});
  }
  return RowParams{best.fields[0], best.fields[1]};
}

WeightQuant finish(const torch::Tensor& codes_u, const RowParams& p, int bits) {
  const double half = double(1 << (bits - 1));
  WeightQuant q;
  q.bits = bits;
  q.codes = codes_u - half;
  q.scale = p.scale;
  q.zero = p.zero_u - half;
  return q;
}

}  // namespace

WeightQuant quantize_weight(const torch::Tensor& w, int bits, const std::string& method) {
  if (bits < 2 || bits > 8) throw UsageError("weight bits must be 2..8, got " + std::to_string(bits));
  torch::NoGradGuard ng;
  RowParams p = row_params(w, bits, method);
  const double Q = double((1 << bits) - 1);
  torch::Tensor c = ((w / p.scale.unsqueeze(1)).round() + p.zero_u.unsqueeze(1)).clamp(0, Q);
  return finish(c, p, bits);
}

WeightQuant quantize_weight_gptq(const torch::Tensor& w0, const torch::Tensor& x, int bits,
                                 const std::string& method, double damp, bool act_order) {
  if (bits < 2 || bits > 8) throw UsageError("weight bits must be 2..8, got " + std::to_string(bits));
  torch::NoGradGuard ng;
  const double Q = double((1 << bits) - 1);
  const int64_t in = w0.size(1);
  torch::Tensor W = w0.to(torch::kFloat64).clone();
  torch::Tensor X = x.reshape({-1, in}).to(torch::kFloat64);
  torch::Tensor H = 2.0 * torch::matmul(X.t(), X) / double(X.size(0));
  torch::Tensor diag = H.diagonal();
  torch::Tensor dead = diag == 0;
  H.diagonal().masked_fill_(dead, 1.0);
  W.index_put_({torch::indexing::Slice(), dead}, 0.0);
  RowParams p = row_params(W.to(torch::kFloat32), bits, method);
  torch::Tensor sc = p.scale.to(torch::kFloat64), zu = p.zero_u.to(torch::kFloat64);
  H.diagonal().add_(damp * H.diagonal().mean());
  // act_order (GPTQ's "act-order"): columns in decreasing order of H's diagonal, so the inputs
  // with the most energy are quantized first and their error is spread over the rest. The
  // order is a stable sort (ties keep their index order): the result is deterministic.
  std::vector<int64_t> perm(static_cast<size_t>(in));
  for (int64_t j = 0; j < in; ++j) perm[size_t(j)] = j;
  if (act_order) {
    const torch::Tensor d = H.diagonal().contiguous();
    const double* dv = d.data_ptr<double>();
    std::stable_sort(perm.begin(), perm.end(), [dv](int64_t a, int64_t b) { return dv[a] > dv[b]; });
    const torch::Tensor pi = torch::tensor(perm, torch::kLong);
    W = W.index_select(1, pi).contiguous();
    H = H.index_select(0, pi).index_select(1, pi).contiguous();
  }
  torch::Tensor L = torch::linalg_cholesky(H);
  torch::Tensor Hinv = torch::cholesky_inverse(L);
  torch::Tensor U = torch::linalg_cholesky(Hinv).t().contiguous();   // upper: Hinv = U^T U
  torch::Tensor codes = torch::empty_like(W);
  const int64_t block = 128;
  for (int64_t b0 = 0; b0 < in; b0 += block) {
    int64_t b1 = std::min(in, b0 + block);
    torch::Tensor E = torch::zeros({W.size(0), b1 - b0}, W.options());
    for (int64_t j = b0; j < b1; ++j) {
      torch::Tensor wj = W.select(1, j);
      torch::Tensor c = ((wj / sc).round() + zu).clamp(0, Q);
      codes.select(1, j).copy_(c);
      torch::Tensor qj = (c - zu) * sc;
      torch::Tensor err = (wj - qj) / U[j][j];
      if (j + 1 < b1)
        W.narrow(1, j + 1, b1 - j - 1).sub_(torch::outer(err, U[j].narrow(0, j + 1, b1 - j - 1)));
      E.select(1, j - b0).copy_(err);
    }
    if (b1 < in) W.narrow(1, b1, in - b1).sub_(torch::matmul(E, U.narrow(0, b0, b1 - b0).narrow(1, b1, in - b1)));
  }
  if (act_order) {   // back to the original column order
    std::vector<int64_t> inv(perm.size());
    for (size_t j = 0; j < perm.size(); ++j) inv[size_t(perm[j])] = int64_t(j);
    codes = codes.index_select(1, torch::tensor(inv, torch::kLong));
  }
  return finish(codes.to(torch::kFloat32), p, bits);
}

// ---- post-Softmax -----------------------------------------------------------------------

std::vector<double> attn_levels(const std::string& kind, int bits, double s, double alpha) {
  const int L = 1 << bits, Q = L - 1;
  std::vector<double> lv(L);
  for (int c = 0; c < L; ++c) {
    if (kind == "uniform") lv[c] = s * double(Q - c) / Q;
    else if (kind == "log2") lv[c] = c == Q ? 0.0 : s * std::pow(2.0, -c);
    else if (kind == "logsqrt2") lv[c] = c == Q ? 0.0 : s * std::pow(2.0, -0.5 * c);
    else if (kind == "tanq") lv[c] = s * (0.5 + std::atan((2.0 * (Q - c) / Q - 1.0) * std::tan(alpha / 2)) / alpha);
    else throw UsageError("softmax quantizer must be uniform, log2, logsqrt2 or tanq, got '" + kind + "'");
  }
  return lv;
}

AttnQuant make_attn_quant(const std::string& kind, int bits, double s, double alpha) {
  if (bits < 2 || bits > 8) throw UsageError("softmax bits must be 2..8, got " + std::to_string(bits));
  if (kind == "tanq" && !(alpha > 0 && alpha < M_PI)) throw UsageError("TanQ alpha must be in (0, pi)");
  std::vector<double> lv = attn_levels(kind, bits, s, alpha);
  const int L = 1 << bits, Q = L - 1;
  const bool logk = kind == "log2" || kind == "logsqrt2";
  AttnQuant q;
  q.kind = kind;
  q.bits = bits;
  q.scale = float(s);
  q.param = float(alpha);
  q.lut_scale = float(s / 255.0);
  q.thresholds.resize(Q);
  for (int c = 0; c < Q; ++c) {
    double t;
    if (!logk) t = 0.5 * (lv[c] + lv[c + 1]);
    else if (c + 1 < Q) t = std::sqrt(lv[c] * lv[c + 1]);
    else t = lv[c] * std::pow(2.0, kind == "log2" ? -0.5 : -0.25);
    q.thresholds[c] = float(t);
  }
  // Thresholds must strictly decrease and stay > 0 in float (so 0 keeps the last code); tiny
  // levels (log2 at 8 bits reaches s * 2^-254) underflow to equal values or 0: nudge those up
  // from the bottom, starting at the smallest positive float.
  q.thresholds[Q - 1] = std::max(q.thresholds[Q - 1], std::numeric_limits<float>::denorm_min());
  for (int c = Q - 2; c >= 0; --c)
    if (!(q.thresholds[c] > q.thresholds[c + 1]))
      q.thresholds[c] = std::nextafter(q.thresholds[c + 1], std::numeric_limits<float>::infinity());
  q.lut.resize(L);
  for (int c = 0; c < L; ++c) q.lut[c] = uint8_t(std::min(255.0, std::nearbyint(lv[c] / double(q.lut_scale))));
  return q;
}

AttnQuant search_attn_quant(const torch::Tensor& a, const std::string& kind, int bits) {
  torch::NoGradGuard ng;
  torch::Tensor flat = a.reshape({-1});
  // Subsample large maps (deterministic stride) to bound the search cost.
  const int64_t cap = 1 << 21;
  if (flat.numel() > cap) flat = flat.slice(0, 0, flat.numel(), flat.numel() / cap + 1);
  torch::Tensor s = std::get<0>(flat.reshape({-1, 1}).sort(0));
  std::vector<double> scales = {1.0, s[s.size(0) - 1].item<double>()};
  for (double p : kRepqPcts) scales.push_back(quantile_sorted(s, p).item<double>());
  std::vector<double> alphas = {0.0};
  if (kind == "tanq") alphas = {0.4, 0.8, 1.2, 1.6, 2.0, 2.4, 2.8, 3.0};
  AttnQuant best;
  double best_mse = INFINITY;
  for (double sc : scales) {
    if (!(sc > 0)) continue;
    for (double al : alphas) {
      AttnQuant q = make_attn_quant(kind, bits, std::min(sc, 1.0), al);
      double m = (fake_quant_attn(flat, q) - flat).pow(2).mean().item<double>();
      if (m < best_mse) best_mse = m, best = q;
    }
  }
  return best;
}

}  // namespace reparq
