// fuzz_safetensors.cpp: libFuzzer harness of the safetensors reader (kernels/safetensors.cpp).
// Any input must either parse into tensors whose views lie inside the buffer, or throw
// reparq::InputError; nothing else (crash, other exception, sanitizer report) is allowed.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "kernels/error.h"
#include "kernels/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    reparq::SafeTensorsFile f =
        reparq::SafeTensorsFile::from_bytes(std::vector<uint8_t>(data, data + size), "fuzz.safetensors");
    // Touch every tensor's bytes (ASan checks that the views lie inside the buffer) and the
    // metadata helpers.
    volatile uint8_t sink = 0;
    for (const reparq::TensorView& t : f.tensors()) {
      if (t.nbytes != static_cast<size_t>(t.numel()) * reparq::dtype_size(t.dtype)) std::abort();
      if (t.nbytes) sink = sink ^ t.data[0] ^ t.data[t.nbytes - 1];
      if (f.find(t.name) == nullptr) std::abort();
    }
    (void)sink;
    for (const auto& kv : f.metadata()) {
      try {
        (void)f.meta_int(kv.first);
      } catch (const reparq::InputError&) {
      }
      try {
        (void)f.meta_double(kv.first, 0.0);
      } catch (const reparq::InputError&) {
      }
    }
  } catch (const reparq::InputError&) {
  }
  return 0;
}
