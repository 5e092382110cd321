// train.h: `reparq train`: a ViT trained on Fashion-MNIST with AdamW, warm-up + cosine
// learning rate, label smoothing and light augmentation (random shifts, horizontal flips).
#pragma once
#include <cstdint>
#include <string>

#include "calib/data.h"
#include "calib/vit.h"

namespace reparq {

struct TrainOptions {
  int epochs = 10;
  int64_t batch = 128;
  double lr = 1e-3;
  double weight_decay = 0.05;
  double warmup_epochs = 1.0;
  double label_smoothing = 0.1;
  int shift = 2;            // random translation of up to +-shift pixels
  bool flip = true;         // random horizontal flip
  uint64_t seed = 0;
  int64_t limit = 0;        // train on the first `limit` images only (tests); 0 = all
  int64_t eval_limit = 0;   // evaluate on the first `eval_limit` test images; 0 = all
  std::string out;          // written after every epoch (atomically)
  std::string command;      // recorded in the file's metadata
  std::string init;         // checkpoint training started from (recorded with its own command)
};

struct TrainReport {
  double seconds = 0;
  double test_top1 = 0;     // after the last epoch
  double final_loss = 0;
};

TrainReport train(Vit& model, const ImageSet& train_set, const ImageSet& test_set,
                  const TrainOptions& opt);

// FP32 accuracy of the model (batched LibTorch forward) on `set`.
struct EvalResult;
EvalResult evaluate_float(const Vit& model, const ImageSet& set, int64_t limit, int64_t batch,
                          const std::string& label, bool keep_logits = false);

}  // namespace reparq
