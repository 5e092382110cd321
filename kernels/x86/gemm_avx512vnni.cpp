// gemm_avx512vnni.cpp: gemm_u8s8s32_6x64c4__avx512vnni and gemm_u8s4s32_6x64c8__avx512vnni.
// Built with -mavx512f -mavx512bw -mavx512vl -mavx512vnni -ffp-contract=off (this file only).
//
// Micro-kernel: MR (<= 6) rows x NB (<= 4) blocks of 16 channels held in 24 zmm accumulators
// for the whole K; per group of 4 k, the A bytes of a row are broadcast as one dword and
// vpdpbusd (u8 x s8, 4 products summed into an int32 lane, wrapping) updates the NB blocks.
// int4: a 64-byte group holds 16 channels x 8 k as offset nibbles (W + 8 in [0, 15]), unpacked
// with and / shift / and into two s8 vectors (k 0..3 low nibbles, k 4..7 high nibbles).
// Accumulators start at za*(K*zw - colsum) - zw*rowsum(A); then the GemmArgs epilogue (gemm.h).
// Work order: a task owns (192-row chunk, 64-channel panel) and walks the chunk in 6-row tiles,
// so the panel's weights stay in L1/L2. What mattered on Zen 5 (measured against oneDNN in the
// same process): keeping the 24 accumulators in registers (see accumulate()), prefetching the
// next tile's A rows during the K loop (+4-8 % at K = 384), PREFETCHW of the tile's output lines
// before the K loop (+4-6 % when the output does not fit in L2), and for 1-2 row tiles over
// weights too big for L2, prefetching the weight stream (M = 1 over 45 MB: 0.65x -> 1.0x oneDNN).
//
// GCC 12 false positive inside avx512fintrin.h (the `__Y = __Y` idiom, GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
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

constexpr int kMR = 6;
// Weights of 1-2 row tiles are prefetched this far ahead when they cannot stay in L2 (decode-
// like calls streaming weights from DRAM); for cached weights the extra loads only cost.
constexpr int kWeightPrefetchBytes = 2048;
constexpr std::size_t kWeightPrefetchMinBytes = std::size_t{1} << 20;
constexpr int kBlock = kVnniBlock;
constexpr int kMaxNB = kVnniPanelBlocks;

inline std::int32_t load_a4(const std::uint8_t* p) {
  std::int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// PREFETCHW (every CPU with AVX-512 VNNI has it; the file's flags do not enable -mprfchw).
inline void prefetch_for_write(const void* p) { __asm__ volatile("prefetchw %0" : : "m"(*static_cast<const char*>(p))); }

// Per (task, panel) constants, computed once in panel() and shared by all row tiles.
struct PanelCtx {
  const GemmArgs* args;
  const std::int8_t* wp;  // panel start in packed data
  int k;
  int n0;                 // first channel of the panel
  const std::int32_t* rowsum;  // nullptr when no zero point is nonzero
  alignas(64) std::int32_t corr[kMaxNB * kBlock];  // za * (K*zw - colsum): the accumulator start
  alignas(64) std::int32_t zw[kMaxNB * kBlock];
  alignas(64) float scale[kMaxNB * kBlock];        // sa * sw[n]
  alignas(64) float bias[kMaxNB * kBlock];
  __mmask16 mask[kMaxNB];                          // valid channels of each block
  bool prefetch_weights;                           // see kWeightPrefetchBytes
};

// Init from corr (and - zw * rowsum), the K loop, then the accumulators to acc_buf.
// This function holds one simple loop on purpose: with the epilogue or a K-tail block in the
// same body, GCC 12 kept a copy of the accumulators on the stack (a store per vpdpbusd).
// n_groups groups of k (4 for int8, 8 for int4). If `resume`, starts from acc_buf instead.
template <int MR, int NB, bool kInt4>
__attribute__((noinline)) void accumulate(const PanelCtx& c, const std::uint8_t* a,
                                          std::int64_t lda, const std::int8_t* wq, int n_groups,
                                          const std::int32_t* rowsum, std::int32_t* acc_buf,
                                          bool resume, std::int64_t pf_limit) {
  constexpr int kGroup = kInt4 ? 8 : 4;
  __m512i acc[MR][NB];
  if (resume) {
    REPARQ_UNROLL for (int i = 0; i < MR; ++i)
      REPARQ_UNROLL for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_load_si512(acc_buf + (i * NB + j) * 16);
  } else {
    REPARQ_UNROLL for (int j = 0; j < NB; ++j) {
      const __m512i corr = _mm512_load_si512(c.corr + j * 16);
      REPARQ_UNROLL for (int i = 0; i < MR; ++i) acc[i][j] = corr;
    }
    if (rowsum != nullptr) {
      REPARQ_UNROLL for (int j = 0; j < NB; ++j) {
        const __m512i zw = _mm512_load_si512(c.zw + j * 16);
        REPARQ_UNROLL for (int i = 0; i < MR; ++i) {
          acc[i][j] = _mm512_sub_epi32(acc[i][j], _mm512_mullo_epi32(zw, _mm512_set1_epi32(rowsum[i])));
        }
      }
    }
  }
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  // Prefetch the next row tile's A, one line per group: row pf_row, byte offset pf_off.
  const std::uint8_t* pf_base = a + MR * lda;
  int pf_row = 0;
  std::int64_t pf_off = 0;
  for (int g = 0; g < n_groups; ++g, a += kGroup, wq += NB * 64) {
    if (pf_off < pf_limit) _mm_prefetch(reinterpret_cast<const char*>(pf_base + pf_row * lda + pf_off), _MM_HINT_T0);
    if (MR <= 2 && c.prefetch_weights) {
      REPARQ_UNROLL for (int j = 0; j < NB; ++j) {
        _mm_prefetch(reinterpret_cast<const char*>(wq + kWeightPrefetchBytes + j * 64), _MM_HINT_T0);
      }
    }
    if (++pf_row == MR) {
      pf_row = 0;
      pf_off += 64;
    }
    __m512i wv[NB];
    if constexpr (kInt4) {
      // k 0..3 of the group: low nibbles; k 4..7: high nibbles.
      REPARQ_UNROLL for (int j = 0; j < NB; ++j) wv[j] = _mm512_and_si512(_mm512_load_si512(wq + j * 64), low4);
      REPARQ_UNROLL for (int i = 0; i < MR; ++i) {
        const __m512i av = _mm512_set1_epi32(load_a4(a + i * lda));
        REPARQ_UNROLL for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], av, wv[j]);
      }
      REPARQ_UNROLL for (int j = 0; j < NB; ++j) {
        wv[j] = _mm512_and_si512(_mm512_srli_epi16(_mm512_load_si512(wq + j * 64), 4), low4);
      }
      REPARQ_UNROLL for (int i = 0; i < MR; ++i) {
        const __m512i av = _mm512_set1_epi32(load_a4(a + i * lda + 4));
        REPARQ_UNROLL for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], av, wv[j]);
      }
    } else {
      REPARQ_UNROLL for (int j = 0; j < NB; ++j) wv[j] = _mm512_load_si512(wq + j * 64);
      REPARQ_UNROLL for (int i = 0; i < MR; ++i) {
        const __m512i av = _mm512_set1_epi32(load_a4(a + i * lda));
        REPARQ_UNROLL for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], av, wv[j]);
      }
    }
  }
  REPARQ_UNROLL for (int i = 0; i < MR; ++i)
    REPARQ_UNROLL for (int j = 0; j < NB; ++j) _mm512_store_si512(acc_buf + (i * NB + j) * 16, acc[i][j]);
}

template <int MR, int NB>
inline void epilogue(const PanelCtx& c, int m0, const std::int32_t* acc_buf) {
  const GemmArgs& args = *c.args;
  const std::int64_t ldo = args.ldo;
  if (args.epilogue == Epilogue::Int32) {
    std::int32_t* out = static_cast<std::int32_t*>(args.out) + m0 * ldo + c.n0;
    REPARQ_UNROLL for (int i = 0; i < MR; ++i) {
      REPARQ_UNROLL for (int j = 0; j < NB; ++j) {
        _mm512_mask_storeu_epi32(out + i * ldo + j * kBlock, c.mask[j],
                                 _mm512_load_si512(acc_buf + (i * NB + j) * 16));
      }
    }
    return;
  }
  if (args.epilogue == Epilogue::Float) {
    float* out = static_cast<float*>(args.out) + m0 * ldo + c.n0;
    REPARQ_UNROLL for (int j = 0; j < NB; ++j) {
      const __m512 scale = _mm512_load_ps(c.scale + j * 16);
      const __m512 bias = _mm512_load_ps(c.bias + j * 16);
      REPARQ_UNROLL for (int i = 0; i < MR; ++i) {
        const __m512 acc = _mm512_cvtepi32_ps(_mm512_load_si512(acc_buf + (i * NB + j) * 16));
        const __m512 y = _mm512_add_ps(_mm512_mul_ps(acc, scale), bias);  // no FMA
        _mm512_mask_storeu_ps(out + i * ldo + j * kBlock, c.mask[j], y);
      }
    }
    return;
  }
  std::uint8_t* out = static_cast<std::uint8_t*>(args.out) + m0 * ldo + c.n0;
  const __m512 inv_so = _mm512_set1_ps(args.inv_so);
  const __m512 lo = _mm512_set1_ps(-65536.0f), hi = _mm512_set1_ps(65536.0f);
  const __m512i zo = _mm512_set1_epi32(args.zo);
  const __m512i qmin = _mm512_setzero_si512();
  const __m512i qmax = _mm512_set1_epi32((1 << args.out_bits) - 1);
  REPARQ_UNROLL for (int j = 0; j < NB; ++j) {
    const __m512 scale = _mm512_load_ps(c.scale + j * 16);
    const __m512 bias = _mm512_load_ps(c.bias + j * 16);
    REPARQ_UNROLL for (int i = 0; i < MR; ++i) {
      const __m512 acc = _mm512_cvtepi32_ps(_mm512_load_si512(acc_buf + (i * NB + j) * 16));
      const __m512 y = _mm512_add_ps(_mm512_mul_ps(acc, scale), bias);
      __m512 t = _mm512_mul_ps(y, inv_so);
      t = _mm512_max_ps(t, lo);  // (t > lo) ? t : lo, NaN -> lo
      t = _mm512_min_ps(t, hi);  // (t < hi) ? t : hi
      __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(t), zo);  // nearest-even (MXCSR default)
      q = _mm512_min_epi32(_mm512_max_epi32(q, qmin), qmax);
      _mm_mask_storeu_epi8(out + i * ldo + j * kBlock, c.mask[j], _mm512_cvtepi32_epi8(q));
    }
  }
}

// One MR x (16*NB) output tile: whole groups of k straight from A, then the K tail (if any)
// from a zero-padded copy of the last partial group of each row (never reading past a row).
template <int MR, int NB, bool kInt4>
void tile(const PanelCtx& c, int m0) {
  constexpr int kGroup = kInt4 ? 8 : 4;
  const std::uint8_t* a = c.args->a + m0 * c.args->lda;
  const std::int64_t lda = c.args->lda;
  const int full = c.k / kGroup;
  const std::int32_t* rowsum = c.rowsum != nullptr ? c.rowsum + m0 : nullptr;
  // Prefetch the output lines for writing now; the K loop hides their latency. Without this,
  // the epilogue's stores to lines absent from cache stalled the kernel by 10-15 % when the
  // output does not fit in L2 (197 x 1152 floats).
  {
    const GemmArgs& args = *c.args;
    const std::int64_t elem = args.epilogue == Epilogue::Uint8 ? 1 : 4;
    const char* out = static_cast<const char*>(args.out) + (m0 * args.ldo + c.n0) * elem;
    const std::int64_t row_bytes = NB * kBlock * elem;
    REPARQ_UNROLL for (int i = 0; i < MR; ++i) {
      for (std::int64_t b = 0; b < row_bytes; b += 64) prefetch_for_write(out + i * args.ldo * elem + b);
    }
  }
  alignas(64) std::int32_t acc[MR * NB * 16];
  // Prefetch the next tile's rows only if they exist (pf_limit 0 turns it off).
  const std::int64_t pf_limit = m0 + 2 * MR <= c.args->m ? c.k : 0;
  accumulate<MR, NB, kInt4>(c, a, lda, c.wp, full, rowsum, acc, false, pf_limit);
  const int rest = c.k - full * kGroup;
  if (rest > 0) {
    std::uint8_t a_tail[MR * kGroup] = {};
    for (int i = 0; i < MR; ++i) std::memcpy(a_tail + i * kGroup, a + i * lda + full * kGroup, rest);
    accumulate<MR, NB, kInt4>(c, a_tail, kGroup, c.wp + static_cast<std::int64_t>(full) * NB * 64, 1,
                              rowsum, acc, true, 0);
  }
  epilogue<MR, NB>(c, m0, acc);
}

using TileFn = void (*)(const PanelCtx&, int);

template <bool kInt4, int MR>
constexpr TileFn tile_for_nb(int nb) {
  switch (nb) {
    case 1: return tile<MR, 1, kInt4>;
    case 2: return tile<MR, 2, kInt4>;
    case 3: return tile<MR, 3, kInt4>;
    default: return tile<MR, 4, kInt4>;
  }
}

template <bool kInt4>
TileFn tile_for(int mr, int nb) {
  switch (mr) {
    case 1: return tile_for_nb<kInt4, 1>(nb);
    case 2: return tile_for_nb<kInt4, 2>(nb);
    case 3: return tile_for_nb<kInt4, 3>(nb);
    case 4: return tile_for_nb<kInt4, 4>(nb);
    case 5: return tile_for_nb<kInt4, 5>(nb);
    default: return tile_for_nb<kInt4, 6>(nb);
  }
}

template <bool kInt4>
void panel(const GemmCall& call, int m_begin, int m_end, int panel_index) {
  const PackedWeights& w = *call.w;
  const GemmArgs& args = *call.args;
  PanelCtx c;
  c.args = &args;
  c.wp = w.data.get() + panel_index * w.panel_bytes;
  c.k = w.k;
  c.n0 = panel_index * w.panel_n;
  c.rowsum = call.rowsum;
  c.prefetch_weights = w.data_bytes >= kWeightPrefetchMinBytes;
  const int nb = std::min(kMaxNB, (w.n - c.n0 + kBlock - 1) / kBlock);
  const __m512i za = _mm512_set1_epi32(args.za);
  const __m512 sa = _mm512_set1_ps(args.sa);
  for (int j = 0; j < nb; ++j) {
    const int n = c.n0 + j * kBlock;
    const int valid = std::min(kBlock, w.n - n);
    c.mask[j] = valid >= kBlock ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << valid) - 1u);
    // K*zw - colsum is stored modulo 2^32; za * it, and everything after, wraps the same way.
    _mm512_store_si512(c.corr + j * 16, _mm512_mullo_epi32(za, _mm512_loadu_si512(w.kzw_csum.data() + n)));
    _mm512_store_si512(c.zw + j * 16, _mm512_loadu_si512(w.zw.data() + n));
    if (args.epilogue != Epilogue::Int32) {
      _mm512_store_ps(c.scale + j * 16, _mm512_mul_ps(sa, _mm512_maskz_loadu_ps(c.mask[j], args.sw + n)));
      _mm512_store_ps(c.bias + j * 16, args.bias != nullptr ? _mm512_maskz_loadu_ps(c.mask[j], args.bias + n)
                                                             : _mm512_setzero_ps());
    }
  }
  const TileFn full = tile_for<kInt4>(kMR, nb);
  int m = m_begin;
  for (; m + kMR <= m_end; m += kMR) full(c, m);
  if (m < m_end) tile_for<kInt4>(m_end - m, nb)(c, m);
}

void rowsum(const std::uint8_t* a, std::int64_t lda, int m, int k, std::int32_t* out) {
  for (int i = 0; i < m; ++i) {
    const std::uint8_t* row = a + i * lda;
    __m512i s = _mm512_setzero_si512();
    int j = 0;
    for (; j + 64 <= k; j += 64) {
      s = _mm512_add_epi64(s, _mm512_sad_epu8(_mm512_loadu_si512(row + j), _mm512_setzero_si512()));
    }
    if (j < k) {
      const __mmask64 tail = (~0ULL) >> (64 - (k - j));
      s = _mm512_add_epi64(
          s, _mm512_sad_epu8(_mm512_maskz_loadu_epi8(tail, row + j), _mm512_setzero_si512()));
    }
    out[i] = static_cast<std::int32_t>(_mm512_reduce_add_epi64(s));
  }
}

// ---- pack_s8: the vectorized twin of gemm.cpp's generic packer (S8Quad layout) ------------
// Panel p, k-group g (4 k), block b of the panel's nb blocks: 64 bytes at
// p * panel_bytes + (g * nb + b) * 64, byte 4c + i = W[16(4p + b) + c][4g + i]; zero padding.

// Rows contiguous (stride_k == 1): each 64-byte sub-block is 16 dwords, one per channel, taken
// with a masked gather from the 16 channel rows.
void pack_rows(const std::int8_t* src, std::int64_t stride_n, int n, int k, std::int8_t* dst,
               std::int32_t* colsum, std::int64_t panel_bytes, int n_panels) {
  const int full = k / 4, rest = k - full * 4, n_groups = (k + 3) / 4;
  const int n_blocks = (n + kBlock - 1) / kBlock;
  const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                         _mm512_set1_epi32(static_cast<int>(stride_n)));
  const __m512i ones = _mm512_set1_epi8(1);
  for (int p = 0; p < n_panels; ++p) {
    const int nb = std::min(kMaxNB, n_blocks - p * kMaxNB);
    std::int8_t* pb = dst + p * panel_bytes;
    for (int b = 0; b < nb; ++b) {
      const int n0 = (p * kMaxNB + b) * kBlock;
      const int valid = std::min(kBlock, n - n0);
      const __mmask16 m = valid >= kBlock ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << valid) - 1u);
      const std::int8_t* rows = src + n0 * stride_n;
      __m512i sum = _mm512_setzero_si512();
      for (int g = 0; g < full; ++g) {
        const __m512i v = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, idx, rows + 4 * g, 1);
        _mm512_store_si512(pb + (static_cast<std::int64_t>(g) * nb + b) * 64, v);
        sum = _mm512_dpbusd_epi32(sum, ones, v);
      }
      if (rest > 0) {
        alignas(64) std::int8_t t[64] = {};
        for (int c = 0; c < valid; ++c)
          for (int i = 0; i < rest; ++i) t[4 * c + i] = rows[c * stride_n + 4 * full + i];
        const __m512i v = _mm512_load_si512(t);
        _mm512_store_si512(pb + (static_cast<std::int64_t>(full) * nb + b) * 64, v);
        sum = _mm512_dpbusd_epi32(sum, ones, v);
      }
      _mm512_mask_storeu_epi32(colsum + n0, m, sum);
    }
    // The unused tail of a partial last panel, zeroed so that the bytes equal pack_weights'.
    const std::int64_t used = static_cast<std::int64_t>(n_groups) * nb * 64;
    if (used < panel_bytes) std::memset(pb + used, 0, static_cast<std::size_t>(panel_bytes - used));
  }
}

// Transposed source (stride_n == 1: W[i][j] = src[j * stride_k + i]): per group of 4 k, four
// source rows of 64 channels are interleaved bytewise (unpack 8 then 16 within 128-bit lanes),
// then a 4 x 4 transpose of 128-bit lanes puts each block's 16 channels x 4 k together.
void pack_cols(const std::int8_t* src, std::int64_t stride_k, int n, int k, std::int8_t* dst,
               std::int32_t* colsum, std::int64_t panel_bytes, int n_panels) {
  const int n_groups = (k + 3) / 4;
  const int n_blocks = (n + kBlock - 1) / kBlock;
  const __m512i ones = _mm512_set1_epi8(1);
  for (int p = 0; p < n_panels; ++p) {
    const int nb = std::min(kMaxNB, n_blocks - p * kMaxNB);
    const int c0 = p * kMaxNB * kBlock;
    const int valid = std::min(kMaxNB * kBlock, n - c0);
    const __mmask64 m = valid >= 64 ? ~0ULL : ((1ULL << valid) - 1ULL);
    std::int8_t* pb = dst + p * panel_bytes;
    __m512i sum[kMaxNB];
    for (int j = 0; j < kMaxNB; ++j) sum[j] = _mm512_setzero_si512();
    for (int g = 0; g < n_groups; ++g) {
      __m512i r[4];
      for (int i = 0; i < 4; ++i) {
        const int kk = 4 * g + i;
        r[i] = kk < k ? _mm512_maskz_loadu_epi8(m, src + kk * stride_k + c0) : _mm512_setzero_si512();
      }
      const __m512i t0 = _mm512_unpacklo_epi8(r[0], r[1]), t1 = _mm512_unpackhi_epi8(r[0], r[1]);
      const __m512i t2 = _mm512_unpacklo_epi8(r[2], r[3]), t3 = _mm512_unpackhi_epi8(r[2], r[3]);
      const __m512i u0 = _mm512_unpacklo_epi16(t0, t2), u1 = _mm512_unpackhi_epi16(t0, t2);
      const __m512i u2 = _mm512_unpacklo_epi16(t1, t3), u3 = _mm512_unpackhi_epi16(t1, t3);
      // u0..u3 lane L: channels 16L + 0..3, 4..7, 8..11, 12..15 (4 k each).
      const __m512i x0 = _mm512_shuffle_i64x2(u0, u1, 0x44), x1 = _mm512_shuffle_i64x2(u2, u3, 0x44);
      const __m512i x2 = _mm512_shuffle_i64x2(u0, u1, 0xEE), x3 = _mm512_shuffle_i64x2(u2, u3, 0xEE);
      __m512i blk[kMaxNB];
      blk[0] = _mm512_shuffle_i64x2(x0, x1, 0x88);
      blk[1] = _mm512_shuffle_i64x2(x0, x1, 0xDD);
      blk[2] = _mm512_shuffle_i64x2(x2, x3, 0x88);
      blk[3] = _mm512_shuffle_i64x2(x2, x3, 0xDD);
      std::int8_t* gb = pb + static_cast<std::int64_t>(g) * nb * 64;
      for (int j = 0; j < nb; ++j) {
        _mm512_store_si512(gb + j * 64, blk[j]);
        sum[j] = _mm512_dpbusd_epi32(sum[j], ones, blk[j]);
      }
    }
    for (int j = 0; j < nb; ++j) {
      const int cj = c0 + j * kBlock;
      const int vj = std::min(kBlock, n - cj);
      const __mmask16 mj = vj >= kBlock ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << vj) - 1u);
      _mm512_mask_storeu_epi32(colsum + cj, mj, sum[j]);
    }
    const std::int64_t used = static_cast<std::int64_t>(n_groups) * nb * 64;
    if (used < panel_bytes) std::memset(pb + used, 0, static_cast<std::size_t>(panel_bytes - used));
  }
}

bool pack_s8(const std::int8_t* src, std::int64_t stride_n, std::int64_t stride_k, int n, int k,
             std::int8_t* dst, std::int32_t* colsum) {
  const int n_groups = (k + 3) / 4;
  const int n_panels = (n + kMaxNB * kBlock - 1) / (kMaxNB * kBlock);
  const std::int64_t panel_bytes = static_cast<std::int64_t>(n_groups) * kMaxNB * 64;
  if (stride_k == 1 && stride_n >= 0 && stride_n * kBlock <= 0x7FFFFFFF) {
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

GemmIsaKernels gemm_kernels_avx512vnni() {
  GemmIsaKernels k;
  k.pack_s8 = pack_s8;
  k.panel_int8 = panel<false>;
  k.panel_int4 = panel<true>;
  k.rowsum = rowsum;
  k.name_int8 = "gemm_u8s8s32_6x64c4__avx512vnni";
  k.name_int4 = "gemm_u8s4s32_6x64c8__avx512vnni";
  return k;
}

}  // namespace detail
}  // namespace reparq
