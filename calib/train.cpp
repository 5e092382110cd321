// train.cpp: training loop and FP32 evaluation of the float ViT.
#include "calib/train.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <numeric>
#include <random>

#include "calib/evaluate.h"
#include "calib/progress.h"
#include "kernels/error.h"
#include "kernels/safetensors.h"

namespace reparq {

namespace {

// Builds one augmented uint8 batch [B, H, W] from the images at idx[begin, end).
torch::Tensor make_batch(const ImageSet& s, const std::vector<int64_t>& idx, int64_t begin,
                         int64_t end, int shift, bool flip, std::mt19937_64& rng) {
  const int64_t B = end - begin, R = s.rows, C = s.cols;
  torch::Tensor t = torch::zeros({B, R, C}, torch::kUInt8);
  uint8_t* dst = t.data_ptr<uint8_t>();
  std::uniform_int_distribution<int> sh(-shift, shift);
  std::bernoulli_distribution coin(0.5);
  for (int64_t b = 0; b < B; ++b) {
    const uint8_t* src = s.image(idx[begin + b]);
    int dy = shift ? sh(rng) : 0, dx = shift ? sh(rng) : 0;
    bool f = flip && coin(rng);
    uint8_t* o = dst + b * R * C;
    for (int64_t y = 0; y < R; ++y) {
      int64_t sy = y - dy;
      if (sy < 0 || sy >= R) continue;
      for (int64_t x = 0; x < C; ++x) {
        int64_t sx = (f ? C - 1 - x : x) - dx;
        if (sx < 0 || sx >= C) continue;
        o[y * C + x] = src[sy * C + sx];
      }
    }
  }
  return t;
}

torch::Tensor labels_of(const ImageSet& s, const std::vector<int64_t>& idx, int64_t begin, int64_t end) {
  torch::Tensor t = torch::empty({end - begin}, torch::kInt64);
  for (int64_t i = begin; i < end; ++i) t[i - begin] = int64_t(s.labels[idx[i]]);
  return t;
}

}  // namespace

EvalResult evaluate_float(const Vit& model, const ImageSet& set, int64_t limit, int64_t batch,
                          const std::string& label, bool keep_logits) {
  torch::NoGradGuard ng;
  const int64_t classes = model.config().num_classes;
  return evaluate(set, limit, batch, classes,
                  [&](const uint8_t* px, int64_t b, float* out) {
                    torch::Tensor x = torch::from_blob(const_cast<uint8_t*>(px), {b, set.rows, set.cols}, torch::kUInt8);
                    torch::Tensor l = model.forward(x).contiguous();
                    std::memcpy(out, l.data_ptr<float>(), sizeof(float) * b * classes);
                  },
                  label, keep_logits);
}

TrainReport train(Vit& model, const ImageSet& tr, const ImageSet& te, const TrainOptions& o) {
  if (o.epochs <= 0) throw UsageError("--epochs must be positive");
  if (o.batch <= 0) throw UsageError("--batch must be positive");
  if (!(o.lr > 0)) throw UsageError("--lr must be positive");
  const auto& c = model.config();
  if (tr.rows != c.image_size || tr.cols != c.image_size)
    throw UsageError("images are " + std::to_string(tr.rows) + "x" + std::to_string(tr.cols) +
                     " but the model expects " + std::to_string(c.image_size));
  torch::manual_seed(o.seed);
  std::mt19937_64 rng(o.seed * 0x9E3779B97F4A7C15ull + 1);

  // No weight decay on biases, norms, the class token and position embedding.
  std::vector<torch::Tensor> decay, no_decay;
  for (auto& [name, t] : model.params()) {
    t.requires_grad_(true);
    (t.dim() >= 2 && name != "cls_token" && name != "pos_embed" ? decay : no_decay).push_back(t);
  }
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(o.lr).weight_decay(o.weight_decay)));
  groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(
                                    torch::optim::AdamWOptions(o.lr).weight_decay(0.0)));
  torch::optim::AdamW opt(std::move(groups), torch::optim::AdamWOptions(o.lr));

  const int64_t n = o.limit > 0 ? std::min(o.limit, tr.count) : tr.count;
  const int64_t steps_per_epoch = (n + o.batch - 1) / o.batch;
  const int64_t total_steps = steps_per_epoch * o.epochs;
  const double warm = std::max(1.0, o.warmup_epochs * double(steps_per_epoch));
  std::vector<int64_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);

  // A continued run records where it started: the checkpoint and that checkpoint's own training
  // metadata, so the chain of commands that made a bundled model stays readable from the file.
  std::map<std::string, std::string> init_meta;
  if (!o.init.empty()) {
    init_meta["train.init"] = o.init;
    const SafeTensorsFile f = SafeTensorsFile::open(o.init);
    for (const auto& [k, v] : f.metadata())
      if (k.rfind("train.", 0) == 0) init_meta["init." + k] = v;
  }

  TrainReport rep;
  auto t0 = std::chrono::steady_clock::now();
  int64_t step = 0;
  for (int ep = 0; ep < o.epochs; ++ep) {
    std::shuffle(idx.begin(), idx.end(), rng);
    Progress prog("train epoch " + std::to_string(ep + 1) + "/" + std::to_string(o.epochs), steps_per_epoch, "steps");
    double loss_sum = 0;
    int64_t loss_n = 0;
    for (int64_t s = 0; s < steps_per_epoch; ++s, ++step) {
      double lr = step < warm ? o.lr * double(step + 1) / warm
                              : 0.5 * o.lr * (1 + std::cos(M_PI * double(step - warm) / double(total_steps - warm)));
      for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
      int64_t b0 = s * o.batch, b1 = std::min(n, b0 + o.batch);
      torch::Tensor x = make_batch(tr, idx, b0, b1, o.shift, o.flip, rng);
      torch::Tensor y = labels_of(tr, idx, b0, b1);
      torch::Tensor logits = model.forward(x);
      torch::Tensor loss = torch::nn::functional::cross_entropy(
          logits, y, torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(o.label_smoothing));
      opt.zero_grad();
      loss.backward();
      opt.step();
      loss_sum += loss.item<double>();
      ++loss_n;
      if (s % 20 == 0 || s + 1 == steps_per_epoch) {
        char note[64];
        std::snprintf(note, sizeof note, "loss %.4f lr %.2e", loss_sum / loss_n, lr);
        prog.set_note(note);
      }
      prog.update(s + 1);
    }
    prog.finish();
    rep.final_loss = loss_sum / std::max<int64_t>(1, loss_n);
    EvalResult er = evaluate_float(model, te, o.eval_limit, 256, "test after epoch " + std::to_string(ep + 1));
    rep.test_top1 = er.top1_pct();
    rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "epoch %d/%d: train loss %.4f, test top-1 %.2f %% (%lld images), %.0f s elapsed\n",
                 ep + 1, o.epochs, rep.final_loss, rep.test_top1, (long long)er.count, rep.seconds);
    if (!o.out.empty()) {
      char buf[64];
      std::map<std::string, std::string> meta = {
          {"train.command", o.command},
          {"train.epochs_done", std::to_string(ep + 1)},
          {"train.seed", std::to_string(o.seed)}};
      meta.insert(init_meta.begin(), init_meta.end());
      std::snprintf(buf, sizeof buf, "%.0f", rep.seconds);
      meta["train.seconds"] = buf;
      std::snprintf(buf, sizeof buf, "%.2f", rep.test_top1);
      meta["train.test_top1"] = buf;
      model.save(o.out, meta);
    }
  }
  for (auto& [name, t] : model.params()) t.requires_grad_(false);
  return rep;
}

}  // namespace reparq
