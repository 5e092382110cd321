// gemm_ref.cpp: gemm_u8s8__ref, the scalar reference GEMM. Written to be read, not to be fast:
// it is the executable definition of the text at the top of kernels/gemm.h, and every SIMD
// path is tested against it bit for bit. Compiled with -ffp-contract=off (no FMA contraction).
#include <cmath>
#include <cstdint>

#include "kernels/gemm.h"

namespace reparq {
namespace {

// W[n][k] from canonical storage: int8 rows, or int4 nibble rows (element 2i low nibble).
std::int32_t weight_at(const std::int8_t* w, int k_total, int bits, int n, int k) {
  if (bits == 8) return w[static_cast<std::int64_t>(n) * k_total + k];
  const std::int64_t row_bytes = (k_total + 1) / 2;
  const std::uint8_t byte = static_cast<std::uint8_t>(w[n * row_bytes + k / 2]);
  const int nibble = (k % 2 == 0) ? (byte & 0x0F) : (byte >> 4);
  return nibble >= 8 ? nibble - 16 : nibble;  // two's complement 4-bit
}

float float_epilogue(std::int32_t acc, const GemmArgs& args, int n) {
  const float s = args.sa * args.sw[n];                      // s[n] = sa * sw[n]
  const float b = args.bias != nullptr ? args.bias[n] : 0.0f;
  const float scaled = static_cast<float>(acc) * s;          // multiply ...
  return scaled + b;                                         // ... then add (no FMA)
}

std::uint8_t requantize(float y, const GemmArgs& args) {
  float t = y * args.inv_so;
  t = t > -65536.0f ? t : -65536.0f;  // NaN -> -65536
  t = t < 65536.0f ? t : 65536.0f;
  const std::int32_t qmax = (1 << args.out_bits) - 1;
  std::int32_t q = static_cast<std::int32_t>(std::nearbyint(t)) + args.zo;
  if (q < 0) q = 0;
  if (q > qmax) q = qmax;
  return static_cast<std::uint8_t>(q);
}

}  // namespace

void gemm_u8s8__ref(const GemmArgs& args, const std::int8_t* w, int n_total, int k_total,
                    int bits, const std::int32_t* zw) {
  for (int m = 0; m < args.m; ++m) {
    const std::uint8_t* a_row = args.a + static_cast<std::int64_t>(m) * args.lda;
    for (int n = 0; n < n_total; ++n) {
      const std::int32_t zw_n = zw != nullptr ? zw[n] : 0;
      std::int32_t acc = 0;  // cannot overflow: K <= gemm_max_k(bits, a_bits)
      for (int k = 0; k < k_total; ++k) {
        acc += (static_cast<std::int32_t>(a_row[k]) - args.za) *
               (weight_at(w, k_total, bits, n, k) - zw_n);
      }
      const std::int64_t at = static_cast<std::int64_t>(m) * args.ldo + n;
      switch (args.epilogue) {
        case Epilogue::Int32:
          static_cast<std::int32_t*>(args.out)[at] = acc;
          break;
        case Epilogue::Float:
          static_cast<float*>(args.out)[at] = float_epilogue(acc, args, n);
          break;
        case Epilogue::Uint8:
          static_cast<std::uint8_t*>(args.out)[at] = requantize(float_epilogue(acc, args, n), args);
          break;
      }
    }
  }
}

}  // namespace reparq
