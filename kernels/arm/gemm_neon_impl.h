// gemm_neon_impl.h: the one source of the Arm64 GEMM kernels (gemm.h's definition, u8 x s8/s4
// -> s32 / f32 / u8). Included by kernels/arm/gemm_neon.cpp, gemm_neondot.cpp and
// gemm_neoni8mm.cpp, each compiled with its own -march flags and -ffp-contract=off. Neon and
// NeonDot run the tile below, each with its way to form the dot products (Dot below);
// NeonI8mm (USMMLA, its own layout and tile in gemm_neoni8mm.cpp) shares PanelCtx, init_ctx,
// store_block (the epilogues) and rowsum. Everything here lives in an anonymous
// namespace so that no inline function is shared by the linker between builds with different
// flags (practice 5). No include guard on purpose: one inclusion per translation unit.
//
// Layout (gemm.h, "Neon, NeonDot"): the Avx512Vnni layout. Panels of 64 channels =
// up to 4 blocks of 16; per k-group the panel's blocks one after the other, 64 bytes each,
// byte 4c+i = W[16b+c][4g+i] (int8), or W'[..][8g+i] in the low nibble and W'[..][8g+4+i] in
// the high nibble with W' = W + 8 (int4). One 16-byte vector j of a block therefore holds
// channels 4j..4j+3 x 4 consecutive k: one int32 lane per channel for the dot instructions.
//
// Products per flavour (acc lanes wrap modulo 2^32; every correction is added modulo 2^32 and
// the true result fits in int32, gemm.h's bound, so the wrapped result is exact):
//   Widen (plain NEON): w widened to s16, a (u8 <= 255) widened to s16, vmulq_s16 (|a w| <=
//       255 * 128 = 32640 fits s16), vpadalq_s16 adds pairs into s32; the two s32 lanes of a
//       channel are added at the end.               acc = sum a w
//   Sdot (FEAT_DotProd): no u8 x s8 instruction, so a is offset to s8: a' = a - 128 (an XOR
//       with 0x80), SDOT a' x w.                     acc = sum a w - 128 colsum(w)
// Correction (kzw_csum = K zw - colsum, PackedWeights):
//   sum (a - za)(w - zw) = sum a w - za colsum - zw rowsum(a) + K za zw
//                        = sum a w + za kzw_csum - zw rowsum(a)                    (Widen; Mmla)
//                        = acc + 128 colsum + za kzw_csum - zw rowsum(a)
//                        = acc + 128 K zw - (128 - za) kzw_csum - zw rowsum(a)     (Sdot)
// The K tail: weights are zero-padded to whole groups, and the last partial 16 k of A are read
// from a zero-padded copy (never past a row); padded k contribute 0 (weight 0) in every flavour.

#include <arm_neon.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/gemm_kernel.h"

namespace reparq {
namespace detail {
namespace {

enum class Dot { Widen, Sdot };

constexpr int kBlock = kNeonBlock;         // 16 channels = 4 vectors of 4
constexpr int kMaxNB = kNeonPanelBlocks;   // blocks per panel
constexpr int kPanel = kBlock * kMaxNB;

// Rows per micro-tile: the dot flavours keep 4 rows x 16 channels in 16 accumulators; Widen
// needs two accumulators per 4 channels, so 2 rows.
template <Dot D>
constexpr int mr_of() { return D == Dot::Widen ? 2 : 4; }
template <Dot D>
constexpr int accs_of() { return D == Dot::Widen ? 8 : 4; }  // accumulators per row and block

// Per (task, panel) constants.
struct PanelCtx {
  const GemmArgs* args;
  const std::int8_t* wp;       // panel start in the packed data
  std::int64_t group_stride;   // bytes from one k-group of a block to the next (nb * 64)
  int k;
  int n0, nn;                  // first channel of the panel, valid channels in it
  const std::int32_t* rowsum;  // M row sums of A, or nullptr when every zw is 0
  alignas(16) std::int32_t corr[kPanel];  // the constant part of the correction above
  alignas(16) std::int32_t zw[kPanel];
  alignas(16) float scale[kPanel];        // sa * sw[n]
  alignas(16) float bias[kPanel];         // bias[n] or 0
};

// One step: 4 k of each row (lane L of the rows' A vectors) times the block's 4 weight vectors.
template <Dot D, int R, int L>
inline void step(int32x4_t (&acc)[R][accs_of<D>()], const uint8x16_t (&a)[R], const int8x16_t (&w)[4]) {
  if constexpr (D == Dot::Widen) {
    int16x8_t a16[R];
    for (int r = 0; r < R; ++r) {
      const uint8x16_t rep = vreinterpretq_u8_u32(vdupq_laneq_u32(vreinterpretq_u32_u8(a[r]), L));
      a16[r] = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(rep)));  // a0 a1 a2 a3 a0 a1 a2 a3
    }
    for (int j = 0; j < 4; ++j) {
      const int16x8_t lo = vmovl_s8(vget_low_s8(w[j]));  // channels 4j, 4j+1 x 4 k
      const int16x8_t hi = vmovl_high_s8(w[j]);          // channels 4j+2, 4j+3 x 4 k
      for (int r = 0; r < R; ++r) {
        acc[r][2 * j] = vpadalq_s16(acc[r][2 * j], vmulq_s16(lo, a16[r]));
        acc[r][2 * j + 1] = vpadalq_s16(acc[r][2 * j + 1], vmulq_s16(hi, a16[r]));
      }
    }
  } else {
#if defined(__ARM_FEATURE_DOTPROD)
    for (int r = 0; r < R; ++r) {
      const int8x16_t as = vreinterpretq_s8_u8(veorq_u8(a[r], vdupq_n_u8(0x80)));  // a - 128
      for (int j = 0; j < 4; ++j) acc[r][j] = vdotq_laneq_s32(acc[r][j], w[j], as, L);
    }
#endif
  }
}

// The 4 weight vectors of one k-group of a block: int8 as stored; int4 as the low nibbles
// (k 8g..8g+3) or the high nibbles (k 8g+4..8g+7), values W + 8 in [0, 15].
inline void load_w8(const std::int8_t* p, int8x16_t (&w)[4]) {
  for (int j = 0; j < 4; ++j) w[j] = vld1q_s8(p + 16 * j);
}
inline void load_w4(const std::int8_t* p, int8x16_t (&lo)[4], int8x16_t (&hi)[4]) {
  const uint8x16_t mask = vdupq_n_u8(0x0F);
  for (int j = 0; j < 4; ++j) {
    const uint8x16_t b = vld1q_u8(reinterpret_cast<const std::uint8_t*>(p) + 16 * j);
    lo[j] = vreinterpretq_s8_u8(vandq_u8(b, mask));
    hi[j] = vreinterpretq_s8_u8(vshrq_n_u8(b, 4));
  }
}

// 16 k of every row (4 steps): int8 = 4 groups, int4 = 2 groups (low and high nibbles).
// `steps` < 4 only for the K tail (the lanes beyond hold zero-padded A and are skipped).
template <Dot D, bool kInt4, int R>
inline void k16(int32x4_t (&acc)[R][accs_of<D>()], const uint8x16_t (&a)[R], const std::int8_t* wq,
                std::int64_t gs, int steps) {
  int8x16_t w[4], w2[4];
  if constexpr (!kInt4) {
    load_w8(wq, w);
    step<D, R, 0>(acc, a, w);
    if (steps > 1) { load_w8(wq + gs, w); step<D, R, 1>(acc, a, w); }
    if (steps > 2) { load_w8(wq + 2 * gs, w); step<D, R, 2>(acc, a, w); }
    if (steps > 3) { load_w8(wq + 3 * gs, w); step<D, R, 3>(acc, a, w); }
  } else {
    load_w4(wq, w, w2);
    step<D, R, 0>(acc, a, w);
    step<D, R, 1>(acc, a, w2);
    if (steps > 2) {
      load_w4(wq + gs, w, w2);
      step<D, R, 2>(acc, a, w);
      step<D, R, 3>(acc, a, w2);
    }
  }
}

// Writes one row x one block (16 channels starting at panel offset cb, nvalid of them valid)
// through the epilogue; res holds the exact int32 results for the 16 channels.
inline void store_block(const PanelCtx& c, int m, int cb, int nvalid, const int32x4_t (&res)[4]) {
  const GemmArgs& g = *c.args;
  const std::int64_t at = static_cast<std::int64_t>(m) * g.ldo + c.n0 + cb;
  if (g.epilogue == Epilogue::Int32) {
    std::int32_t* o = static_cast<std::int32_t*>(g.out) + at;
    if (nvalid == kBlock) {
      for (int j = 0; j < 4; ++j) vst1q_s32(o + 4 * j, res[j]);
    } else {
      std::int32_t tmp[kBlock];
      for (int j = 0; j < 4; ++j) vst1q_s32(tmp + 4 * j, res[j]);
      std::memcpy(o, tmp, sizeof(std::int32_t) * nvalid);
    }
    return;
  }
  float32x4_t y[4];
  for (int j = 0; j < 4; ++j) {
    const float32x4_t f = vcvtq_f32_s32(res[j]);                 // (float)acc, nearest even
    const float32x4_t s = vmulq_f32(f, vld1q_f32(c.scale + cb + 4 * j));  // a multiply ...
    y[j] = vaddq_f32(s, vld1q_f32(c.bias + cb + 4 * j));                  // ... then an add
  }
  if (g.epilogue == Epilogue::Float) {
    float* o = static_cast<float*>(g.out) + at;
    if (nvalid == kBlock) {
      for (int j = 0; j < 4; ++j) vst1q_f32(o + 4 * j, y[j]);
    } else {
      float tmp[kBlock];
      for (int j = 0; j < 4; ++j) vst1q_f32(tmp + 4 * j, y[j]);
      std::memcpy(o, tmp, sizeof(float) * nvalid);
    }
    return;
  }
  // Uint8: t = y * inv_so, clamped by FMAXNM / FMINNM (IEEE maxNum / minNum return the number
  // when one operand is a NaN, so NaN -> -65536 as in gemm.h; t is a product, never a
  // signalling NaN), FCVTNS (round to nearest, ties to even = nearbyint under the default mode),
  // + zo (no overflow: |t| <= 65536), then the clamp to [0, qmax] by saturating narrowing:
  // SQXTUN s32 -> u16 (negative -> 0), UQXTN u16 -> u8 (above 255 -> 255), min with qmax.
  const float32x4_t inv = vdupq_n_f32(g.inv_so);
  const float32x4_t lo = vdupq_n_f32(-65536.0f), hi = vdupq_n_f32(65536.0f);
  const int32x4_t zo = vdupq_n_s32(g.zo);
  uint16x4_t q16[4];
  for (int j = 0; j < 4; ++j) {
    const float32x4_t t = vminnmq_f32(vmaxnmq_f32(vmulq_f32(y[j], inv), lo), hi);
    q16[j] = vqmovun_s32(vaddq_s32(vcvtnq_s32_f32(t), zo));
  }
  const uint8x16_t q8 = vminq_u8(vcombine_u8(vqmovn_u16(vcombine_u16(q16[0], q16[1])),
                                             vqmovn_u16(vcombine_u16(q16[2], q16[3]))),
                                 vdupq_n_u8(static_cast<std::uint8_t>((1 << g.out_bits) - 1)));
  std::uint8_t* o = static_cast<std::uint8_t*>(g.out) + at;
  if (nvalid == kBlock) {
    vst1q_u8(o, q8);
  } else {
    std::uint8_t tmp[kBlock];
    vst1q_u8(tmp, q8);
    std::memcpy(o, tmp, static_cast<std::size_t>(nvalid));
  }
}

// R rows starting at m0 x block b of the panel: the K loop, the correction, the epilogue.
template <Dot D, bool kInt4, int R>
void tile(const PanelCtx& c, int m0, int b) {
  constexpr int kA = accs_of<D>();
  constexpr int kGroup = kInt4 ? 8 : 4;
  constexpr int kGroupsPer16 = 16 / kGroup;
  const std::int64_t lda = c.args->lda;
  const std::uint8_t* a = c.args->a + static_cast<std::int64_t>(m0) * lda;
  const std::int64_t gs = c.group_stride;
  const std::int8_t* wq = c.wp + static_cast<std::int64_t>(b) * 64;

  int32x4_t acc[R][kA];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < kA; ++j) acc[r][j] = vdupq_n_s32(0);

  const int k16_full = c.k / 16;
  for (int t = 0; t < k16_full; ++t) {
    uint8x16_t av[R];
    for (int r = 0; r < R; ++r) av[r] = vld1q_u8(a + r * lda + 16 * t);
    k16<D, kInt4, R>(acc, av, wq, gs, 4);
    wq += kGroupsPer16 * gs;
  }
  const int rest = c.k - 16 * k16_full;
  if (rest > 0) {
    std::uint8_t tail[R][16] = {};
    uint8x16_t av[R];
    for (int r = 0; r < R; ++r) {
      std::memcpy(tail[r], a + r * lda + 16 * k16_full, static_cast<std::size_t>(rest));
      av[r] = vld1q_u8(tail[r]);
    }
    // Steps of 4 k that hold a valid k; int4 steps come in pairs (a group's two nibbles).
    int steps = (rest + 3) / 4;
    if (kInt4) steps = (steps + 1) / 2 * 2;
    k16<D, kInt4, R>(acc, av, wq, gs, steps);
  }

  const int cb = b * kBlock;
  const int nvalid = std::min(kBlock, c.nn - cb);
  for (int r = 0; r < R; ++r) {
    int32x4_t res[4];
    for (int j = 0; j < 4; ++j) {
      if constexpr (D == Dot::Widen) {
        res[j] = vpaddq_s32(acc[r][2 * j], acc[r][2 * j + 1]);  // channel = sum of its 2 lanes
      } else {
        res[j] = acc[r][j];
      }
      res[j] = vaddq_s32(res[j], vld1q_s32(c.corr + cb + 4 * j));
      if (c.rowsum != nullptr) {
        res[j] = vmlsq_s32(res[j], vld1q_s32(c.zw + cb + 4 * j), vdupq_n_s32(c.rowsum[m0 + r]));
      }
    }
    store_block(c, m0 + r, cb, nvalid, res);
  }
}

// Fills the per-panel constants; returns the number of blocks in the panel. sub_bytes: bytes of
// one block x k-group in the layout (64 for the Vnni layout, 128 for the MMLA one).
// offset128: the Sdot correction (a - 128), else the plain one (Widen, Mmla).
inline int init_ctx(PanelCtx& c, const GemmCall& call, int panel_index, int sub_bytes,
                    bool offset128) {
  const PackedWeights& w = *call.w;
  const GemmArgs& g = *call.args;
  c.args = &g;
  c.k = w.k;
  c.n0 = panel_index * w.panel_n;
  c.nn = std::min(w.panel_n, w.n - c.n0);
  c.rowsum = call.rowsum;
  const int nb = (c.nn + kBlock - 1) / kBlock;
  c.wp = w.data.get() + panel_index * w.panel_bytes;
  c.group_stride = static_cast<std::int64_t>(nb) * sub_bytes;
  // Vectors of 4 channels. zw and kzw_csum are zero-padded to whole panels (PackedWeights), so
  // the padding channels get corr = zw = 0 without a test. Lane multiplies and adds wrap
  // modulo 2^32, as the correction requires.
  const std::int32_t* zwp = w.zw.data() + c.n0;
  const std::int32_t* kcp = w.kzw_csum.data() + c.n0;
  const int32x4_t za = vdupq_n_s32(g.za);
  const int32x4_t k128 = vdupq_n_s32(static_cast<std::int32_t>(128u * static_cast<std::uint32_t>(w.k)));
  const int32x4_t m128 = vdupq_n_s32(128 - g.za);
  for (int i = 0; i < kPanel; i += 4) {
    const int32x4_t zw = vld1q_s32(zwp + i), kc = vld1q_s32(kcp + i);
    // Sdot: 128 K zw - (128 - za) kzw_csum; the others: za kzw_csum.
    const int32x4_t corr = offset128 ? vmlsq_s32(vmulq_s32(k128, zw), m128, kc) : vmulq_s32(za, kc);
    vst1q_s32(c.corr + i, corr);
    vst1q_s32(c.zw + i, zw);
  }
  if (g.epilogue != Epilogue::Int32) {  // scale and bias are read by the other epilogues only
    const int n4 = c.nn & ~3;
    const float32x4_t sa = vdupq_n_f32(g.sa);
    for (int i = 0; i < n4; i += 4) {
      vst1q_f32(c.scale + i, vmulq_f32(sa, vld1q_f32(g.sw + c.n0 + i)));
      vst1q_f32(c.bias + i, g.bias != nullptr ? vld1q_f32(g.bias + c.n0 + i) : vdupq_n_f32(0.0f));
    }
    for (int i = n4; i < kPanel; ++i) {
      const bool valid = i < c.nn;
      c.scale[i] = valid ? g.sa * g.sw[c.n0 + i] : 0.0f;
      c.bias[i] = valid && g.bias != nullptr ? g.bias[c.n0 + i] : 0.0f;
    }
  }
  return nb;
}

template <Dot D, bool kInt4>
void panel(const GemmCall& call, int m_begin, int m_end, int panel_index) {
  PanelCtx c;
  const int nb = init_ctx(c, call, panel_index, 64, D == Dot::Sdot);

  constexpr int kMR = mr_of<D>();
  for (int m0 = m_begin; m0 < m_end; m0 += kMR) {
    const int rows = std::min(kMR, m_end - m0);
    for (int b = 0; b < nb; ++b) {
      switch (rows) {
        case 1: tile<D, kInt4, 1>(c, m0, b); break;
        case 2: tile<D, kInt4, 2>(c, m0, b); break;
        case 3: if constexpr (kMR > 2) tile<D, kInt4, 3>(c, m0, b); break;
        default: if constexpr (kMR > 3) tile<D, kInt4, kMR>(c, m0, b); break;
      }
    }
  }
}

// out[i] = sum_k a[i*lda + k], 16 bytes at a time (u8 -> u16 pairs -> u32), then the tail.
void rowsum(const std::uint8_t* a, std::int64_t lda, int m, int k, std::int32_t* out) {
  for (int i = 0; i < m; ++i) {
    const std::uint8_t* row = a + static_cast<std::int64_t>(i) * lda;
    uint32x4_t s32 = vdupq_n_u32(0);
    int j = 0;
    // 16-bit lanes hold at most 128 pair sums of 510 (<= 65280) before they are widened.
    while (j + 16 <= k) {
      uint16x8_t s16 = vdupq_n_u16(0);
      const int end = std::min(k - 15, j + 16 * 128);
      for (; j < end; j += 16) s16 = vpadalq_u8(s16, vld1q_u8(row + j));
      s32 = vpadalq_u16(s32, s16);
    }
    std::uint32_t s = vaddvq_u32(s32);
    for (; j < k; ++j) s += row[j];
    out[i] = static_cast<std::int32_t>(s);
  }
}

}  // namespace
}  // namespace detail
}  // namespace reparq
