// fuzz_qmodel.cpp: libFuzzer harness of the quantized-model loader through executor
// preparation: bytes -> SafeTensorsFile::from_bytes -> load_quant_model (every check of
// docs/FORMAT.md) -> Executor (weights repacked for the scalar kernel and the best ISA of this
// CPU) -> one forward pass on a fixed image when the model is small. Allowed outcomes: success
// or reparq::InputError.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/cpu.h"
#include "kernels/error.h"
#include "kernels/executor.h"
#include "kernels/qmodel.h"
#include "kernels/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace reparq;
  try {
    const SafeTensorsFile f = SafeTensorsFile::from_bytes(std::vector<uint8_t>(data, data + size), "fuzz.safetensors");
    const QuantModel m = load_quant_model(f);
    // Work of one image, roughly: keep each input well under a millisecond.
    const int64_t T = m.tokens(), D = m.dim;
    const int64_t macs = m.depth * (T * D * (4 * D + 2 * m.mlp_hidden) + 2 * T * T * D);
    for (Isa isa : {Isa::Scalar, best_isa()}) {
      Executor ex(m, isa, 1);
      if (macs > 4'000'000 || m.image_size > 64) break;
      std::vector<uint8_t> img(size_t(m.image_size * m.image_size));
      for (size_t i = 0; i < img.size(); ++i) img[i] = uint8_t(i * 37 + 11);
      std::vector<float> logits(size_t(m.num_classes));
      ex.run(img.data(), 1, logits.data());
      if (isa == best_isa()) break;
    }
  } catch (const InputError&) {
  }
  return 0;
}
