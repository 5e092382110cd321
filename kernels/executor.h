// executor.h: the integer ViT executor. Loads a QuantModel (docs/FORMAT.md), packs every
// weight once for the chosen ISA, and runs batches of uint8 images to float logits with
// integer GEMMs (kernels/gemm.h) and float LayerNorm/softmax/GELU between them, exactly as
// FORMAT.md's "forward pass" section says. No allocation in the hot path once a batch size
// has been seen; results are bit-identical across ISAs, thread counts and batch sizes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cpu.h"
#include "kernels/qmodel.h"

namespace reparq {

class Executor {
 public:
  // Throws InputError when the model cannot run (inconsistent shapes), UsageError when `isa`
  // is not available on this CPU or threads < 1.
  Executor(const QuantModel& model, Isa isa, int threads);
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // pixels: batch x image_size x image_size uint8 (gray; replicated to in_chans channels);
  // logits: batch x num_classes.
  void run(const uint8_t* pixels, int64_t batch, float* logits);

  const QuantModel& model() const;
  Isa isa() const;
  int threads() const;
  std::string kernel_summary() const;   // e.g. "gemm_u8s8s32_6x64c4__avx512vnni (int8), ..."
  size_t packed_weight_bytes() const;
  size_t workspace_bytes() const;       // activations buffers for the largest batch so far

  // Per-stage wall time (seconds, summed over run() calls while profiling is on), in forward
  // order: patch_embed, ln1+quant, qkv_gemm+quant, ..., final_ln+head. Timing adds a clock read
  // per stage; results are unchanged.
  void set_profile(bool on);
  std::vector<std::pair<std::string, double>> profile() const;
  int64_t profiled_images() const;
  void reset_profile();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace reparq
