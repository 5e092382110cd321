// gemm_avx2.cpp: gemm_u8s8s32_4x16c4__avx2 and gemm_u8s4s32_4x16c8__avx2.
// Built with -mavx2 -mfma -ffp-contract=off (this file only).
//
// Exactness. vpmaddubsw (u8 x s8, pairs summed into SATURATING int16) is not exact for
// int8 weights: 255*(-128)*2 = -65280 < -32768. So:
//  * int8 weights are pre-widened to int16 at pack time and multiplied with vpmaddwd
//    (int16 x int16, pairs summed into int32): |255*128*2| < 2^31, never saturates.
//    A is widened in registers: the 4 bytes of a k-group are broadcast, zero-extended to
//    int16 (vpunpcklbw with 0) and split into the (k0,k1) and (k2,k3) pairs by vpshufd.
//  * int4 weights are stored offset (W + 8 in [0, 15]) so vpmaddubsw is exact:
//    a pair sums to at most 2*255*15 = 7650, and adding the two halves of a group of 8 k
//    gives at most 15300 < 32767; vpmaddwd with ones then widens to int32.
// Epilogue: acc + za*(K*zw - colsum) - zw*rowsum(A), then the GemmArgs epilogue (gemm.h).
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/gemm_kernel.h"

// Loops over the MR x NB accumulators must be unrolled before GCC's scalar replacement of
// aggregates runs, or the accumulator array lives on the stack (GCC 12: a load and a store
// per vpdpbusd). `#pragma GCC unroll` unrolls them early enough.
#define REPARQ_UNROLL _Pragma("GCC unroll 16")

namespace reparq {
namespace detail {
namespace {

constexpr int kMR = 4;
constexpr int kBlock = kAvx2Block;
constexpr int kMaxNB = kAvx2PanelBlocks;

inline std::int32_t load_a4(const std::uint8_t* p) {
  std::int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

struct PanelCtx {
  const GemmArgs* args;
  const PackedWeights* w;
  const std::int32_t* rowsum;
  const std::int8_t* wp;
  int n0;
  int nb;
};

inline __m256i lane_mask(int valid) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(valid), idx);
}

template <int MR, int NB>
inline void epilogue(const PanelCtx& c, int m0, const std::int32_t* acc_buf) {
  const GemmArgs& args = *c.args;
  __m256i acc[MR][NB];
  REPARQ_UNROLL for (int i = 0; i < MR; ++i) {
    REPARQ_UNROLL for (int j = 0; j < NB; ++j) {
      acc[i][j] = _mm256_load_si256(reinterpret_cast<const __m256i*>(acc_buf + (i * NB + j) * 8));
    }
  }
  const PackedWeights& w = *c.w;
  int valid[NB];
  __m256i mask[NB], corr[NB], zwv[NB];
  const __m256i za = _mm256_set1_epi32(args.za);
  REPARQ_UNROLL for (int j = 0; j < NB; ++j) {
    const int n = c.n0 + j * kBlock;
    valid[j] = std::min(kBlock, w.n - n);
    mask[j] = lane_mask(valid[j]);
    corr[j] = _mm256_mullo_epi32(
        za, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.kzw_csum.data() + n)));
    zwv[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.zw.data() + n));
  }
  REPARQ_UNROLL for (int i = 0; i < MR; ++i) {
    REPARQ_UNROLL for (int j = 0; j < NB; ++j) {
      acc[i][j] = _mm256_add_epi32(acc[i][j], corr[j]);
      if (c.rowsum != nullptr) {
        const __m256i rs = _mm256_set1_epi32(c.rowsum[m0 + i]);
        acc[i][j] = _mm256_sub_epi32(acc[i][j], _mm256_mullo_epi32(zwv[j], rs));
      }
    }
  }
  if (args.epilogue == Epilogue::Int32) {
    std::int32_t* out = static_cast<std::int32_t*>(args.out);
    REPARQ_UNROLL for (int i = 0; i < MR; ++i) {
      REPARQ_UNROLL for (int j = 0; j < NB; ++j) {
        int* dst = out + (m0 + i) * args.ldo + c.n0 + j * kBlock;
        _mm256_maskstore_epi32(dst, mask[j], acc[i][j]);
      }
    }
    return;
  }
  __m256 scale[NB], bias[NB];
  const __m256 sa = _mm256_set1_ps(args.sa);
  REPARQ_UNROLL for (int j = 0; j < NB; ++j) {
    const int n = c.n0 + j * kBlock;
    scale[j] = _mm256_mul_ps(sa, _mm256_maskload_ps(args.sw + n, mask[j]));
    bias[j] = args.bias != nullptr ? _mm256_maskload_ps(args.bias + n, mask[j])
                                   : _mm256_setzero_ps();
  }
  if (args.epilogue == Epilogue::Float) {
    float* out = static_cast<float*>(args.out);
    REPARQ_UNROLL for (int i = 0; i < MR; ++i) {
      REPARQ_UNROLL for (int j = 0; j < NB; ++j) {
        const __m256 y = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc[i][j]), scale[j]),
                                       bias[j]);
        _mm256_maskstore_ps(out + (m0 + i) * args.ldo + c.n0 + j * kBlock, mask[j], y);
      }
    }
    return;
  }
  std::uint8_t* out = static_cast<std::uint8_t*>(args.out);
  const __m256 inv_so = _mm256_set1_ps(args.inv_so);
  const __m256 lo = _mm256_set1_ps(-65536.0f), hi = _mm256_set1_ps(65536.0f);
  const __m256i zo = _mm256_set1_epi32(args.zo);
  const __m256i qmin = _mm256_setzero_si256();
  const __m256i qmax = _mm256_set1_epi32((1 << args.out_bits) - 1);
  REPARQ_UNROLL for (int i = 0; i < MR; ++i) {
    REPARQ_UNROLL for (int j = 0; j < NB; ++j) {
      const __m256 y = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc[i][j]), scale[j]),
                                     bias[j]);
      __m256 t = _mm256_mul_ps(y, inv_so);
      t = _mm256_max_ps(t, lo);  // (t > lo) ? t : lo, NaN -> lo
      t = _mm256_min_ps(t, hi);
      __m256i q = _mm256_add_epi32(_mm256_cvtps_epi32(t), zo);  // nearest-even (MXCSR default)
      q = _mm256_min_epi32(_mm256_max_epi32(q, qmin), qmax);
      // 8 int32 in [0, 255] -> 8 bytes.
      const __m256i p16 = _mm256_packus_epi32(q, q);      // per 128-bit lane
      const __m256i p8 = _mm256_packus_epi16(p16, p16);
      const std::uint32_t lo4 = static_cast<std::uint32_t>(_mm256_extract_epi32(p8, 0));
      const std::uint32_t hi4 = static_cast<std::uint32_t>(_mm256_extract_epi32(p8, 4));
      const std::uint64_t bytes = lo4 | (static_cast<std::uint64_t>(hi4) << 32);
      std::uint8_t* dst = out + (m0 + i) * args.ldo + c.n0 + j * kBlock;
      if (valid[j] >= kBlock) {
        std::memcpy(dst, &bytes, 8);
      } else {
        std::memcpy(dst, &bytes, static_cast<size_t>(valid[j]));  // little-endian byte order
      }
    }
  }
}

// The K loop alone, one simple loop in its own function (see gemm_avx512vnni.cpp: GCC 12 keeps
// accumulators on the stack otherwise). Runs n_groups groups of k (4 for int8, 8 for int4) and
// adds them to the MR x NB accumulators in acc_buf (zeroed first when `init`).
//  int8: weights as int16, per group and block of 8 channels 2 vectors (k0k1 pairs, k2k3 pairs).
//  int4: offset nibbles, per group of 8 k and block of 8 channels 32 bytes.
template <int MR, int NB, bool kInt4>
__attribute__((noinline)) void accumulate(const std::uint8_t* a, std::int64_t lda,
                                          const std::int8_t* wq, int n_groups,
                                          std::int32_t* acc_buf, bool init) {
  constexpr int kGroup = kInt4 ? 8 : 4;
  constexpr int kSubBytes = kInt4 ? 32 : 64;
  __m256i acc[MR][NB];
  REPARQ_UNROLL for (int i = 0; i < MR; ++i) {
    REPARQ_UNROLL for (int j = 0; j < NB; ++j) {
      acc[i][j] = init ? _mm256_setzero_si256()
                       : _mm256_load_si256(reinterpret_cast<const __m256i*>(acc_buf + (i * NB + j) * 8));
    }
  }
  const __m256i zero = _mm256_setzero_si256();
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const __m256i ones = _mm256_set1_epi16(1);
  for (int g = 0; g < n_groups; ++g, a += kGroup, wq += NB * kSubBytes) {
    if constexpr (kInt4) {
      __m256i wlo[NB], whi[NB];
      REPARQ_UNROLL for (int j = 0; j < NB; ++j) {
        const __m256i v = _mm256_load_si256(reinterpret_cast<const __m256i*>(wq + j * 32));
        wlo[j] = _mm256_and_si256(v, low4);
        whi[j] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
      }
      REPARQ_UNROLL for (int i = 0; i < MR; ++i) {
        const __m256i a0 = _mm256_set1_epi32(load_a4(a + i * lda));
        const __m256i a1 = _mm256_set1_epi32(load_a4(a + i * lda + 4));
        REPARQ_UNROLL for (int j = 0; j < NB; ++j) {
          const __m256i s16 = _mm256_add_epi16(_mm256_maddubs_epi16(a0, wlo[j]),
                                               _mm256_maddubs_epi16(a1, whi[j]));  // <= 15300
          acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(s16, ones));
        }
      }
    } else {
      REPARQ_UNROLL for (int i = 0; i < MR; ++i) {
        // (a0,a1),(a2,a3) as int16 pairs in alternating dwords, then each pair broadcast.
        const __m256i u = _mm256_unpacklo_epi8(_mm256_set1_epi32(load_a4(a + i * lda)), zero);
        const __m256i p01 = _mm256_shuffle_epi32(u, 0x00);
        const __m256i p23 = _mm256_shuffle_epi32(u, 0x55);
        REPARQ_UNROLL for (int j = 0; j < NB; ++j) {
          const __m256i w01 = _mm256_load_si256(reinterpret_cast<const __m256i*>(wq + j * 64));
          const __m256i w23 = _mm256_load_si256(reinterpret_cast<const __m256i*>(wq + j * 64 + 32));
          acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(p01, w01));
          acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(p23, w23));
        }
      }
    }
  }
  REPARQ_UNROLL for (int i = 0; i < MR; ++i) {
    REPARQ_UNROLL for (int j = 0; j < NB; ++j) {
      _mm256_store_si256(reinterpret_cast<__m256i*>(acc_buf + (i * NB + j) * 8), acc[i][j]);
    }
  }
}

// One MR x (8*NB) output tile: whole groups of k straight from A, then the K tail (if any)
// from a zero-padded copy of the last partial group of each row (never reading past a row).
template <int MR, int NB, bool kInt4>
void tile(const PanelCtx& c, int m0) {
  constexpr int kGroup = kInt4 ? 8 : 4;
  constexpr int kSubBytes = kInt4 ? 32 : 64;
  const std::uint8_t* a = c.args->a + m0 * c.args->lda;
  const std::int64_t lda = c.args->lda;
  const int K = c.w->k;
  const int full = K / kGroup;
  alignas(32) std::int32_t acc[MR * NB * 8];
  accumulate<MR, NB, kInt4>(a, lda, c.wp, full, acc, true);
  const int rest = K - full * kGroup;
  if (rest > 0) {
    std::uint8_t a_tail[MR * kGroup] = {};
    for (int i = 0; i < MR; ++i) std::memcpy(a_tail + i * kGroup, a + i * lda + full * kGroup, rest);
    accumulate<MR, NB, kInt4>(a_tail, kGroup, c.wp + static_cast<std::int64_t>(full) * NB * kSubBytes,
                              1, acc, false);
  }
  epilogue<MR, NB>(c, m0, acc);
}

using TileFn = void (*)(const PanelCtx&, int);

template <bool kInt4, int MR>
TileFn tile_for_nb(int nb) {
  return nb == 1 ? tile<MR, 1, kInt4> : tile<MR, 2, kInt4>;
}

template <bool kInt4>
TileFn tile_for(int mr, int nb) {
  switch (mr) {
    case 1: return tile_for_nb<kInt4, 1>(nb);
    case 2: return tile_for_nb<kInt4, 2>(nb);
    case 3: return tile_for_nb<kInt4, 3>(nb);
    default: return tile_for_nb<kInt4, 4>(nb);
  }
}

template <bool kInt4>
void panel(const GemmCall& call, int m_begin, int m_end, int panel_index) {
  const PackedWeights& w = *call.w;
  PanelCtx c;
  c.args = call.args;
  c.w = &w;
  c.rowsum = call.rowsum;
  c.wp = w.data.get() + panel_index * w.panel_bytes;
  c.n0 = panel_index * w.panel_n;
  c.nb = std::min(kMaxNB, (w.n - c.n0 + kBlock - 1) / kBlock);
  const TileFn full = tile_for<kInt4>(kMR, c.nb);
  int m = m_begin;
  for (; m + kMR <= m_end; m += kMR) full(c, m);
  if (m < m_end) tile_for<kInt4>(m_end - m, c.nb)(c, m);
}

void rowsum(const std::uint8_t* a, std::int64_t lda, int m, int k, std::int32_t* out) {
  for (int i = 0; i < m; ++i) {
    const std::uint8_t* row = a + i * lda;
    __m256i s = _mm256_setzero_si256();
    int j = 0;
    for (; j + 32 <= k; j += 32) {
      s = _mm256_add_epi64(s, _mm256_sad_epu8(
                                  _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + j)),
                                  _mm256_setzero_si256()));
    }
    std::int64_t total = _mm256_extract_epi64(s, 0) + _mm256_extract_epi64(s, 1) +
                         _mm256_extract_epi64(s, 2) + _mm256_extract_epi64(s, 3);
    for (; j < k; ++j) total += row[j];
    out[i] = static_cast<std::int32_t>(total);
  }
}

}  // namespace

GemmIsaKernels gemm_kernels_avx2() {
  GemmIsaKernels k;
  k.panel_int8 = panel<false>;
  k.panel_int4 = panel<true>;
  k.rowsum = rowsum;
  k.name_int8 = "gemm_u8s8s32_4x16c4__avx2";
  k.name_int4 = "gemm_u8s4s32_4x16c8__avx2";
  return k;
}

}  // namespace detail
}  // namespace reparq
