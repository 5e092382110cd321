// gemm.h: the executor's integer GEMM, u8 activations x s8/s4 per-channel weights -> s32 / f32 / u8.
//
// ---------------------------------------------------------------------------------------------
// Definition (kernels/gemm_ref.cpp is the executable form of this text; every SIMD path must
// match it bit for bit, float outputs included).
//
//   A  M x K uint8 activation codes, row-major with row stride lda (elements). Zero point za.
//      For b-bit activations (a_bits = b, declared at pack time) codes and za lie in [0, 2^b-1].
//   W  N x K weights, per output channel n, given at pack time as
//        bits = 8: int8 values in [-128, 127], or
//        bits = 4: values in [-8, 7]; in memory (canonical, on-disk) two per byte along K:
//                  element 2i in the LOW nibble, 2i+1 in the HIGH nibble, two's complement;
//                  each row holds (K+1)/2 bytes and an odd K leaves the last high nibble 0.
//      Zero point zw[n] (int32) in the same range as the values ([-2^(bits-1), 2^(bits-1)-1]);
//      asymmetric weights (RepQ-ViT) are stored as code - 2^(bits-1), zw likewise.
//      Real weight = sw[n] * (W[n][k] - zw[n]); real activation = sa * (A[m][k] - za).
//
//   acc[m][n] = sum_k (A[m][k] - za) * (W[n][k] - zw[n])          exactly, in int32.
//
//   Overflow bound, enforced by pack_weights (InputError): |A - za| <= 2^a_bits - 1 and
//   |W - zw| <= 2^bits - 1, so |acc| <= K (2^a_bits - 1)(2^bits - 1) <= 2^31 - 1 requires
//   K <= gemm_max_k(bits, a_bits): 33025 for W8A8, 561433 for W4A8.
//   (Fast paths compute sum A*W - za*colsum(W[n]) - zw[n]*rowsum(A[m]) + K*za*zw[n] in
//   wrapping int32 arithmetic; since the true value fits, the wrapped result is exact.)
//
//   Epilogues, chosen per call (GemmArgs::epilogue):
//     Int32:  C32[m][n] = acc
//     Float:  s[n] = sa * sw[n]                     (one float multiply)
//             Y[m][n] = (float)acc * s[n] + b[n]    (a multiply, then an add: never an FMA;
//                                                    kernels build with -ffp-contract=off;
//                                                    b[n] = bias[n], or 0.0f without bias)
//     Uint8:  y as in Float, then
//             t = y * inv_so                        (float multiply)
//             t = clamp t to [-65536, 65536]        (t > -65536 ? t : -65536, then
//                                                    t < 65536 ? t : 65536; NaN -> -65536;
//                                                    keeps the int conversion defined and
//                                                    changes no in-range result)
//             q = clamp((int)nearbyint(t) + zo, 0, qmax),  qmax = 2^out_bits - 1
//             nearbyint rounds half to even (default rounding mode; the SIMD paths use
//             cvtps2dq under the default MXCSR, or Arm's FCVTNS, which are the same).
// ---------------------------------------------------------------------------------------------
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/cpu.h"

namespace reparq {

class ThreadPool;

enum class Epilogue : int { Int32 = 0, Float = 1, Uint8 = 2 };

// Largest K for which acc cannot overflow int32 (see the bound above).
std::int64_t gemm_max_k(int w_bits, int a_bits);

// Canonical int4 storage: values in [-8, 7] (n x k, row-major) -> rows of (k+1)/2 bytes,
// element 2i in the low nibble. Throws InputError on a value outside [-8, 7].
std::vector<std::uint8_t> pack_int4_rows(const std::int8_t* w, int n, int k);

// Weights prepared for one ISA: canonical values re-laid out for its kernels, plus per-channel
// sums. Built by pack_weights(); treat the fields as read-only. Move-only.
struct PackedWeights {
  Isa isa = Isa::Scalar;
  int n = 0, k = 0;
  int bits = 8;    // 8 or 4
  int a_bits = 8;  // declared activation width, for the overflow bound
  int panel_n = 0;   // output channels per panel (the unit of work of one task)
  int n_panels = 0;
  std::int64_t panel_bytes = 0;  // bytes of one full panel in `data`
  bool needs_rowsum = false;     // some stored zero point != 0: kernels need rowsum(A)

  // Layout of `data` per ISA (values stored as s8, or 4-bit in nibbles):
  //   Scalar:      canonical rows (int8 n x k, or int4 rows of (k+1)/2 bytes).
  //   Avx512Vnni:  panels of 64 channels = up to 4 blocks of 16; per k-group, the blocks of
  //                the panel one after the other, 64 bytes each.
  //                int8: group = 4 k; byte 4c+i = W[16b+c][4g+i].
  //                int4: group = 8 k; byte 4c+i holds W'[..][8g+i] low, W'[..][8g+4+i] high,
  //                      with W' = W + 8 in [0, 15] (offset binary; zw' = zw + 8).
  //   Avx2:        panels of 16 channels = up to 2 blocks of 8; per k-group of 4, per block
  //                int8: 64 bytes of int16: [k pair 0..1 of 8 channels][k pair 2..3];
  //                int4: group = 8 k, 32 bytes, like Avx512Vnni with 8 channels.
  //   Neon, NeonDot (Arm64, kernels/arm/gemm_neon_impl.h): the Avx512Vnni layout (panels of
  //                64 channels, blocks of 16, byte 4c+i; int4 offset nibbles as there). Each
  //                16-byte quarter of a block is 4 channels x 4 k: one int32 lane per channel
  //                for SDOT by element, or two s16 pairs per channel for the plain NEON
  //                widening kernel.
  //   NeonI8mm (Arm64 USMMLA, kernels/arm/gemm_neoni8mm.cpp): panels of 64 channels = up to 4
  //                blocks of 16; per k-group, the blocks of the panel one after the other,
  //                128 bytes each, channel c of the block at bytes 8c..8c+7:
  //                int8: group = 8 k; byte 8c+i = W[16b+c][8g+i].
  //                int4: group = 16 k; byte 8c+i holds W'[..][16g+i] low, W'[..][16g+8+i] high
  //                      (W' = W + 8, offset binary as above).
  //                Each 16-byte vector of a block is 2 channels x 8 k: USMMLA's second operand.
  //   K is zero-padded to whole groups, N to whole blocks.
  struct AlignedFree {
    void operator()(void* p) const;
  };
  std::unique_ptr<std::int8_t[], AlignedFree> data;
  std::size_t data_bytes = 0;

  // Per channel, padded with zeros to n_panels * panel_n (SIMD layouts only):
  std::vector<std::int32_t> zw;        // stored zero point (zw, or zw + 8 for offset int4)
  std::vector<std::int32_t> kzw_csum;  // K*zw - sum_k W (stored values), wrapping int32
  std::vector<std::int32_t> zw_orig;   // zw as given (the scalar path reads it)
};

// Packs N x K weights for `isa`. bits = 8: w holds int8 values; bits = 4: w holds one value in
// [-8, 7] per int8 (unpacked). zw: N zero points, or nullptr for all zero. Throws InputError
// on bad shapes, out-of-range values or zero points, or K above gemm_max_k(bits, a_bits);
// UsageError if `isa` is not available. The ISA chosen here is the one gemm() runs (through a
// kernel table filled once); best_isa() is the best one the cap (REPARQ_MAX_ISA, --isa) allows.
PackedWeights pack_weights(const std::int8_t* w, int n, int k, int bits, const std::int32_t* zw,
                           Isa isa = best_isa(), int a_bits = 8);

// Same for int4 weights already in canonical nibble rows (see pack_int4_rows).
PackedWeights pack_weights_int4_rows(const std::uint8_t* w_rows, int n, int k,
                                     const std::int32_t* zw, Isa isa = best_isa(), int a_bits = 8);

// Re-packs int8 weights into `w` for `isa`, reusing its memory: once `w` has held weights at
// least this large, no allocation happens (the attention packs K and V^T per head with it).
// W[i][j] = src[i * stride_n + j * stride_k] for i < n, j < k (strides in elements, either
// may be 1: stride_k = 1 reads rows, stride_n = 1 reads the transpose). zw: n zero points or
// nullptr. The result equals pack_weights() of the same values (tests/kernels/test_gemm.cpp),
// except that data_bytes keeps the capacity. The Avx512Vnni layout has a vectorized packer for
// stride_k == 1 and for stride_n == 1; other cases use the generic one. Throws like
// pack_weights (bits are 8).
void repack_weights_s8(PackedWeights& w, const std::int8_t* src, std::int64_t stride_n,
                       std::int64_t stride_k, int n, int k, const std::int32_t* zw, Isa isa,
                       int a_bits = 8);

struct GemmArgs {
  int m = 0;                          // rows of A and of the output
  const std::uint8_t* a = nullptr;    // M x K codes
  std::int64_t lda = 0;               // >= K
  std::int32_t za = 0;                // in [0, 2^a_bits - 1]

  Epilogue epilogue = Epilogue::Int32;
  void* out = nullptr;                // int32_t* / float* / uint8_t* by epilogue, M x N
  std::int64_t ldo = 0;               // row stride of out in elements, >= N

  float sa = 1.0f;                    // Float, Uint8: activation scale
  const float* sw = nullptr;          // Float, Uint8: N weight scales (required)
  const float* bias = nullptr;        // Float, Uint8: N biases, or nullptr for none
  float inv_so = 1.0f;                // Uint8: 1 / output scale
  std::int32_t zo = 0;                // Uint8: output zero point
  int out_bits = 8;                   // Uint8: qmax = 2^out_bits - 1, 1..8

  // Optional scratch of >= m int32 for the row sums of A (needed when a weight zero point is
  // nonzero). nullptr: a thread-local buffer that grows to the largest M seen on that thread.
  // Callers that run gemm() on pool threads pass their own, so that no allocation depends on
  // which thread ran which call.
  std::int32_t* rowsum_scratch = nullptr;
};

// out = epilogue(A x W^T). Splits work over (row chunk, channel panel) tasks on `pool` (or runs
// on the calling thread when pool is nullptr); every output element is computed by one task
// with the same instructions, so results do not depend on the thread count.
// Throws UsageError on inconsistent arguments (checked once per call, O(1)).
void gemm(const PackedWeights& w, const GemmArgs& args, ThreadPool* pool = nullptr);

// The scalar reference (kernels/gemm_ref.cpp), on canonical weights: w_canon is int8 n x k
// (bits 8) or nibble rows (bits 4); zw may be nullptr. The definition above, as plain loops.
void gemm_u8s8__ref(const GemmArgs& args, const std::int8_t* w_canon, int n, int k, int bits,
                    const std::int32_t* zw);

// Name of the micro-kernel gemm() runs for these weights, e.g. "gemm_u8s8s32_6x64c4__avx512vnni".
const char* gemm_kernel_name(const PackedWeights& w);

}  // namespace reparq
