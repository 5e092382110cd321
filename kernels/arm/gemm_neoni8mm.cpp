// gemm_neoni8mm.cpp: gemm_u8s8s32_4x16c8__neoni8mm_mmla and gemm_u8s4s32_4x16c16__neoni8mm_mmla,
// matrix-multiply kernels (ARMv8.6 FEAT_I8MM: USMMLA, u8 activations x s8 weights -> s32, no
// offset). Built with -march=armv8.2-a+dotprod+i8mm -ffp-contract=off (this file only).
//
// USMMLA Vd.4S, Vn.16B, Vm.16B: Vn = 2 rows x 8 k of A (u8), Vm = 2 channels x 8 k of W (s8),
// Vd += the 2x2 product block [r0.c0, r0.c1, r1.c0, r1.c1] (exact int32 sums of 8 products).
//
// Layout (gemm.h, "NeonI8mm"): panels of 64 channels = up to 4 blocks of 16; per k-group the
// panel's blocks one after the other, 128 bytes each; in a block, channel c's 8 bytes at 8c:
//   int8: group = 8 k, byte 8c+i = W[16b+c][8g+i];
//   int4: group = 16 k, byte 8c+i = W'[16b+c][16g+i] (low nibble) | W'[16b+c][16g+8+i] (high),
//         W' = W + 8 in [0, 15] (offset binary, zw' = zw + 8, as in the other layouts).
// So the 16-byte vector j of a block is channels 2j, 2j+1 x 8 k: USMMLA's Vm as stored (int4:
// after AND 0x0F for the first 8 k, after USHR #4 for the next 8).
//
// A: the micro-tile's rows in pairs; a pair's 8 k are two 8-byte loads into one register (no
// packed copy of A; an odd row count pairs the last row with itself and drops the copy). The
// last partial group of k is read from a zero-padded stack copy (never past a row; the weights
// there are zero anyway). acc = sum a w exactly like SUDOT, so the correction is the plain one
// of gemm_neon_impl.h: acc + za kzw_csum - zw rowsum(a).
//
// Epilogue: accumulator [p][j] holds rows 2p, 2p+1 x channels 2j, 2j+1; the 64-bit halves are
// un-interleaved (ZIP1/ZIP2 .2D) into 4 vectors of 4 channels per row and go through
// store_block (gemm_neon_impl.h), the same epilogue code as the other Arm kernels.
#include "kernels/arm/gemm_neon_impl.h"

#if !defined(__ARM_FEATURE_MATMUL_INT8)
#error "gemm_neoni8mm.cpp needs -march=armv8.2-a+i8mm"
#endif

namespace reparq {
namespace detail {
namespace {

static_assert(kMmlaBlock == kBlock && kMmlaBlock * kMmlaPanelBlocks == kPanel,
              "the MMLA panel shares PanelCtx and store_block with the Vnni-layout kernels");

constexpr int kMmlaMR = 4;  // rows per micro-tile: 2 row pairs x 8 channel pairs = 16 accumulators

// One k-group of P row pairs x one block: int8 = 8 k (one USMMLA per pair and channel pair);
// int4 = 16 k (the low nibbles with the pairs' first 8 k, the high nibbles with the next 8).
template <bool kInt4, int P>
inline void group(int32x4_t (&acc)[P][8], const uint8x16_t (&a)[P], const uint8x16_t (&a_hi)[P],
                  const std::int8_t* wq) {
  for (int j = 0; j < 8; ++j) {
    if constexpr (!kInt4) {
      const int8x16_t w = vld1q_s8(wq + 16 * j);
      for (int p = 0; p < P; ++p) acc[p][j] = vusmmlaq_s32(acc[p][j], a[p], w);
    } else {
      const uint8x16_t b = vld1q_u8(reinterpret_cast<const std::uint8_t*>(wq) + 16 * j);
      const int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(b, vdupq_n_u8(0x0F)));
      const int8x16_t hi = vreinterpretq_s8_u8(vshrq_n_u8(b, 4));
      for (int p = 0; p < P; ++p) acc[p][j] = vusmmlaq_s32(acc[p][j], a[p], lo);
      for (int p = 0; p < P; ++p) acc[p][j] = vusmmlaq_s32(acc[p][j], a_hi[p], hi);
    }
  }
}

// Two rows' 8 bytes at offset `at` as one USMMLA operand.
inline uint8x16_t pair8(const std::uint8_t* r0, const std::uint8_t* r1, std::int64_t at) {
  return vcombine_u8(vld1_u8(r0 + at), vld1_u8(r1 + at));
}

// R rows starting at m0 x block b of the panel: the K loop, the correction, the epilogue.
template <bool kInt4, int R>
void tile_mmla(const PanelCtx& c, int m0, int b) {
  constexpr int P = (R + 1) / 2;
  constexpr int kGroup = kInt4 ? 16 : 8;
  const std::int64_t lda = c.args->lda;
  const std::uint8_t* rows[2 * P];
  for (int r = 0; r < 2 * P; ++r) {
    rows[r] = c.args->a + static_cast<std::int64_t>(m0 + std::min(r, R - 1)) * lda;
  }
  const std::int64_t gs = c.group_stride;
  const std::int8_t* wq = c.wp + static_cast<std::int64_t>(b) * 128;

  int32x4_t acc[P][8];
  for (int p = 0; p < P; ++p)
    for (int j = 0; j < 8; ++j) acc[p][j] = vdupq_n_s32(0);

  const int full = c.k / kGroup;
  for (int t = 0; t < full; ++t) {
    uint8x16_t a[P], a_hi[P];
    const std::int64_t at = static_cast<std::int64_t>(kGroup) * t;
    for (int p = 0; p < P; ++p) {
      a[p] = pair8(rows[2 * p], rows[2 * p + 1], at);
      if constexpr (kInt4) a_hi[p] = pair8(rows[2 * p], rows[2 * p + 1], at + 8);
    }
    group<kInt4, P>(acc, a, a_hi, wq);
    wq += gs;
  }
  const int rest = c.k - kGroup * full;
  if (rest > 0) {
    std::uint8_t tail[2 * P][16] = {};
    uint8x16_t a[P], a_hi[P];
    const std::int64_t at = static_cast<std::int64_t>(kGroup) * full;
    for (int r = 0; r < 2 * P; ++r) std::memcpy(tail[r], rows[r] + at, static_cast<std::size_t>(rest));
    for (int p = 0; p < P; ++p) {
      a[p] = pair8(tail[2 * p], tail[2 * p + 1], 0);
      a_hi[p] = pair8(tail[2 * p], tail[2 * p + 1], 8);  // zeros unless int4 with rest > 8
    }
    group<kInt4, P>(acc, a, a_hi, wq);
  }

  const int cb = b * kBlock;
  const int nvalid = std::min(kBlock, c.nn - cb);
  // Unrolled, so that acc[p] stays in registers (a runtime p would spill it).
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const int p = r / 2;
    int32x4_t res[4];
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) {
      const int64x2_t x = vreinterpretq_s64_s32(acc[p][2 * q]);
      const int64x2_t y = vreinterpretq_s64_s32(acc[p][2 * q + 1]);
      res[q] = vreinterpretq_s32_s64(r % 2 == 0 ? vzip1q_s64(x, y) : vzip2q_s64(x, y));
      res[q] = vaddq_s32(res[q], vld1q_s32(c.corr + cb + 4 * q));
      if (c.rowsum != nullptr) {
        res[q] = vmlsq_s32(res[q], vld1q_s32(c.zw + cb + 4 * q), vdupq_n_s32(c.rowsum[m0 + r]));
      }
    }
    store_block(c, m0 + r, cb, nvalid, res);
  }
}

template <bool kInt4>
void panel_mmla(const GemmCall& call, int m_begin, int m_end, int panel_index) {
  PanelCtx c;
  const int nb = init_ctx(c, call, panel_index, 128, false);
  for (int m0 = m_begin; m0 < m_end; m0 += kMmlaMR) {
    const int rows = std::min(kMmlaMR, m_end - m0);
    for (int b = 0; b < nb; ++b) {
      switch (rows) {
        case 1: tile_mmla<kInt4, 1>(c, m0, b); break;
        case 2: tile_mmla<kInt4, 2>(c, m0, b); break;
        case 3: tile_mmla<kInt4, 3>(c, m0, b); break;
        default: tile_mmla<kInt4, kMmlaMR>(c, m0, b); break;
      }
    }
  }
}

// ---- pack_s8: the vectorized twin of gemm.cpp's generic packer (S8Oct layout) --------------
// Panel p, k-group g (8 k), block b of the panel's nb blocks: 128 bytes at
// p * panel_bytes + (g * nb + b) * 128, byte 8c + i = W[16(4p + b) + c][8g + i]; zero padding.

// Rows contiguous (stride_k == 1): each channel's 8 k are 8 consecutive source bytes.
void pack_rows(const std::int8_t* src, std::int64_t stride_n, int n, int k, std::int8_t* dst,
               std::int32_t* colsum, std::int64_t panel_bytes, int n_panels) {
  const int full = k / 8, rest = k - full * 8, n_groups = (k + 7) / 8;
  const int n_blocks = (n + kBlock - 1) / kBlock;
  for (int p = 0; p < n_panels; ++p) {
    const int nb = std::min(kMaxNB, n_blocks - p * kMaxNB);
    const std::int64_t gs = static_cast<std::int64_t>(nb) * 128;
    std::int8_t* pb = dst + p * panel_bytes;
    for (int b = 0; b < nb; ++b) {
      for (int c = 0; c < kBlock; ++c) {
        const int i = (p * kMaxNB + b) * kBlock + c;
        std::int8_t* out = pb + b * 128 + 8 * c;
        if (i >= n) {  // padding channel
          for (int g = 0; g < n_groups; ++g) vst1_s8(out + g * gs, vdup_n_s8(0));
          continue;
        }
        const std::int8_t* row = src + i * stride_n;
        int32x4_t sum = vdupq_n_s32(0);
        for (int g = 0; g < full; ++g) {
          const int8x8_t v = vld1_s8(row + 8 * g);
          vst1_s8(out + g * gs, v);
          sum = vaddw_s16(sum, vget_low_s16(vpaddlq_s8(vcombine_s8(v, vdup_n_s8(0)))));
        }
        if (rest > 0) {
          std::int8_t t[8] = {};
          std::memcpy(t, row + 8 * full, static_cast<std::size_t>(rest));
          const int8x8_t v = vld1_s8(t);
          vst1_s8(out + full * gs, v);
          sum = vaddw_s16(sum, vget_low_s16(vpaddlq_s8(vcombine_s8(v, vdup_n_s8(0)))));
        }
        colsum[i] = vaddvq_s32(sum);
      }
    }
    // The unused tail of a partial last panel, zeroed so that the bytes equal pack_weights'.
    const std::int64_t used = static_cast<std::int64_t>(n_groups) * gs;
    if (used < panel_bytes) std::memset(pb + used, 0, static_cast<std::size_t>(panel_bytes - used));
  }
}

// Transposed source (stride_n == 1: W[i][j] = src[j * stride_k + i]): per block and group, the
// 8 source rows (k) of 16 channels are transposed to 16 channels x 8 k by three rounds of ZIP
// (bytes, halfwords, words); the column sums come from widening adds of the 8 rows.
void pack_cols(const std::int8_t* src, std::int64_t stride_k, int n, int k, std::int8_t* dst,
               std::int32_t* colsum, std::int64_t panel_bytes, int n_panels) {
  const int n_groups = (k + 7) / 8;
  const int n_blocks = (n + kBlock - 1) / kBlock;
  for (int p = 0; p < n_panels; ++p) {
    const int nb = std::min(kMaxNB, n_blocks - p * kMaxNB);
    std::int8_t* pb = dst + p * panel_bytes;
    for (int b = 0; b < nb; ++b) {
      const int c0 = (p * kMaxNB + b) * kBlock;
      const int valid = std::min(kBlock, n - c0);
      int32x4_t sum[4];
      for (int q = 0; q < 4; ++q) sum[q] = vdupq_n_s32(0);
      for (int g = 0; g < n_groups; ++g) {
        int8x16_t r[8];
        for (int t = 0; t < 8; ++t) {
          const int kk = 8 * g + t;
          if (kk >= k) {
            r[t] = vdupq_n_s8(0);
          } else if (valid == kBlock) {
            r[t] = vld1q_s8(src + kk * stride_k + c0);
          } else {  // partial block: never read past the row's n channels
            std::int8_t tmp[kBlock] = {};
            std::memcpy(tmp, src + kk * stride_k + c0, static_cast<std::size_t>(valid));
            r[t] = vld1q_s8(tmp);
          }
        }
        // Round 1: bytes of rows 2u, 2u+1 interleaved: z[u] channels 0..7, z[4+u] 8..15.
        int8x16_t z[8];
        for (int u = 0; u < 4; ++u) {
          z[u] = vzip1q_s8(r[2 * u], r[2 * u + 1]);
          z[4 + u] = vzip2q_s8(r[2 * u], r[2 * u + 1]);
        }
        // Round 2: halfwords: h[4h + v] holds 4 channels x k 0..3 (v even) or k 4..7 (v odd).
        int16x8_t h[8];
        for (int half = 0; half < 2; ++half) {
          const int16x8_t a0 = vreinterpretq_s16_s8(z[4 * half]), a1 = vreinterpretq_s16_s8(z[4 * half + 1]);
          const int16x8_t a2 = vreinterpretq_s16_s8(z[4 * half + 2]), a3 = vreinterpretq_s16_s8(z[4 * half + 3]);
          h[4 * half + 0] = vzip1q_s16(a0, a1);  // channels 8half + 0..3, k 0..3
          h[4 * half + 1] = vzip1q_s16(a2, a3);  // channels 8half + 0..3, k 4..7
          h[4 * half + 2] = vzip2q_s16(a0, a1);  // channels 8half + 4..7, k 0..3
          h[4 * half + 3] = vzip2q_s16(a2, a3);  // channels 8half + 4..7, k 4..7
        }
        // Round 3: words: each output vector = 2 channels x 8 k.
        std::int8_t* out = pb + (static_cast<std::int64_t>(g) * nb + b) * 128;
        for (int quad = 0; quad < 4; ++quad) {  // channels 4quad .. 4quad+3
          const int32x4_t lo = vreinterpretq_s32_s16(h[2 * quad]);
          const int32x4_t hi = vreinterpretq_s32_s16(h[2 * quad + 1]);
          vst1q_s8(out + 32 * quad, vreinterpretq_s8_s32(vzip1q_s32(lo, hi)));
          vst1q_s8(out + 32 * quad + 16, vreinterpretq_s8_s32(vzip2q_s32(lo, hi)));
        }
        // Column sums: 8 rows in s16 (|sum| <= 1024), then into the s32 totals.
        int16x8_t s_lo = vaddl_s8(vget_low_s8(r[0]), vget_low_s8(r[1]));
        int16x8_t s_hi = vaddl_high_s8(r[0], r[1]);
        for (int t = 2; t < 8; ++t) {
          s_lo = vaddw_s8(s_lo, vget_low_s8(r[t]));
          s_hi = vaddw_high_s8(s_hi, r[t]);
        }
        sum[0] = vaddw_s16(sum[0], vget_low_s16(s_lo));
        sum[1] = vaddw_high_s16(sum[1], s_lo);
        sum[2] = vaddw_s16(sum[2], vget_low_s16(s_hi));
        sum[3] = vaddw_high_s16(sum[3], s_hi);
      }
      std::int32_t cs[kBlock];
      for (int q = 0; q < 4; ++q) vst1q_s32(cs + 4 * q, sum[q]);
      std::memcpy(colsum + c0, cs, sizeof(std::int32_t) * static_cast<std::size_t>(valid));
    }
    const std::int64_t used = static_cast<std::int64_t>(n_groups) * nb * 128;
    if (used < panel_bytes) std::memset(pb + used, 0, static_cast<std::size_t>(panel_bytes - used));
  }
}

bool pack_s8(const std::int8_t* src, std::int64_t stride_n, std::int64_t stride_k, int n, int k,
             std::int8_t* dst, std::int32_t* colsum) {
  const int n_groups = (k + 7) / 8;
  const int n_panels = (n + kMaxNB * kBlock - 1) / (kMaxNB * kBlock);
  const std::int64_t panel_bytes = static_cast<std::int64_t>(n_groups) * kMaxNB * 128;
  if (stride_k == 1) {
    pack_rows(src, stride_n, n, k, dst, colsum, panel_bytes, n_panels);
    return true;
  }
  if (stride_n == 1) {
    pack_cols(src, stride_k, n, k, dst, colsum, panel_bytes, n_panels);
    return true;
  }
  return false;
}

}  // namespace

GemmIsaKernels gemm_kernels_neoni8mm() {
  GemmIsaKernels k;
  k.pack_s8 = pack_s8;
  k.panel_int8 = panel_mmla<false>;
  k.panel_int4 = panel_mmla<true>;
  k.rowsum = rowsum;
  k.name_int8 = "gemm_u8s8s32_4x16c8__neoni8mm_mmla";
  k.name_int4 = "gemm_u8s4s32_4x16c16__neoni8mm_mmla";
  return k;
}

}  // namespace detail
}  // namespace reparq
