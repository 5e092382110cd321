// gemm.cpp: the GEMM driver: validation, weight packing per ISA, the kernel table (filled once),
// row sums, and the split into (row chunk, channel panel) tasks.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "kernels/error.h"
#include "kernels/gemm.h"
#include "kernels/gemm_kernel.h"
#include "kernels/threadpool.h"

namespace reparq {
namespace {

using detail::GemmCall;
using detail::GemmIsaKernels;

constexpr int kRowChunk = 192;  // rows per task: a multiple of every MR (6, 4), A chunk in L2

// The scalar "kernel": the reference on one panel of canonical weights.
void panel_scalar(const GemmCall& c, int m_begin, int m_end, int panel) {
  const PackedWeights& w = *c.w;
  const int n0 = panel * w.panel_n;
  const int nn = std::min(w.panel_n, w.n - n0);
  const std::int64_t row_bytes = w.bits == 8 ? w.k : (w.k + 1) / 2;
  GemmArgs sub = *c.args;
  sub.m = m_end - m_begin;
  sub.a = c.args->a + static_cast<std::int64_t>(m_begin) * c.args->lda;
  const std::int64_t out_off = static_cast<std::int64_t>(m_begin) * c.args->ldo + n0;
  switch (c.args->epilogue) {
    case Epilogue::Int32: sub.out = static_cast<std::int32_t*>(c.args->out) + out_off; break;
    case Epilogue::Float: sub.out = static_cast<float*>(c.args->out) + out_off; break;
    case Epilogue::Uint8: sub.out = static_cast<std::uint8_t*>(c.args->out) + out_off; break;
  }
  if (sub.sw != nullptr) sub.sw += n0;
  if (sub.bias != nullptr) sub.bias += n0;
  gemm_u8s8__ref(sub, w.data.get() + n0 * row_bytes, nn, w.k, w.bits, w.zw_orig.data() + n0);
}

GemmIsaKernels scalar_kernels() {
  GemmIsaKernels k;
  k.panel_int8 = panel_scalar;
  k.panel_int4 = panel_scalar;
  k.rowsum = nullptr;  // the reference does not need row sums
  k.name_int8 = "gemm_u8s8s32__ref";
  k.name_int4 = "gemm_u8s4s32__ref";
  return k;
}

const GemmIsaKernels& kernels_for(Isa isa) {
  static const GemmIsaKernels table[kIsaCount] = {
      scalar_kernels(),
#if defined(REPARQ_HAVE_X86_KERNELS)
      detail::gemm_kernels_avx2(),
      detail::gemm_kernels_avx512vnni(),
#else
      GemmIsaKernels{},
      GemmIsaKernels{},
#endif
#if defined(REPARQ_HAVE_ARM_KERNELS)  // Arm64 (kernels/arm/): Neon, NeonDot, NeonI8mm
      detail::gemm_kernels_neon(),
      detail::gemm_kernels_neondot(),
      detail::gemm_kernels_neoni8mm(),
#else
      GemmIsaKernels{},
      GemmIsaKernels{},
      GemmIsaKernels{},
#endif
  };
  return table[static_cast<int>(isa)];
}

// How one ISA lays out a block of channels x a group of k.
struct Layout {
  int block = 0;         // channels per block (one vector of int32 accumulators)
  int panel_blocks = 0;  // blocks per panel
  int k_group = 0;       // k per group
  int sub_bytes = 0;     // bytes of one block x group
  // S8Quad / I16Quad / Nib8: 4 k per channel and sub-element (Nib8: + 4 more in the high
  // nibbles); S8Oct / Nib16: 8 k per channel (Nib16: + 8 more in the high nibbles).
  enum Kind { S8Quad, I16Quad, Nib8, S8Oct, Nib16 } kind = S8Quad;
};

Layout layout_for(Isa isa, int bits) {
  Layout l;
#if defined(REPARQ_HAVE_ARM_KERNELS)
  // Arm64 NeonI8mm (USMMLA, kernels/arm/gemm_neoni8mm.cpp): 16 channels x 8 k per 128 bytes
  // (int4: x 16 k, two nibbles per byte), channel c's bytes at 8c.
  if (isa == Isa::NeonI8mm) {
    l.block = detail::kMmlaBlock;
    l.panel_blocks = detail::kMmlaPanelBlocks;
    l.k_group = bits == 8 ? 8 : 16;
    l.sub_bytes = 128;
    l.kind = bits == 8 ? Layout::S8Oct : Layout::Nib16;
    return l;
  }
  // Arm64 (kernels/arm/gemm_neon_impl.h): the Avx512Vnni layout, 16 channels x 4 k per 64 bytes.
  if (isa == Isa::Neon || isa == Isa::NeonDot) {
    l.block = detail::kNeonBlock;
    l.panel_blocks = detail::kNeonPanelBlocks;
    l.k_group = bits == 8 ? 4 : 8;
    l.sub_bytes = 64;
    l.kind = bits == 8 ? Layout::S8Quad : Layout::Nib8;
    return l;
  }
#endif
  if (isa == Isa::Avx512Vnni) {
    l.block = detail::kVnniBlock;
    l.panel_blocks = detail::kVnniPanelBlocks;
    l.k_group = bits == 8 ? 4 : 8;
    l.sub_bytes = 64;
    l.kind = bits == 8 ? Layout::S8Quad : Layout::Nib8;
  } else {  // Avx2
    l.block = detail::kAvx2Block;
    l.panel_blocks = detail::kAvx2PanelBlocks;
    l.k_group = bits == 8 ? 4 : 8;
    l.sub_bytes = bits == 8 ? 64 : 32;
    l.kind = bits == 8 ? Layout::I16Quad : Layout::Nib8;
  }
  return l;
}

// Shape, widths and the int32 bound: checked before any weight is read.
void validate_shape(int n, int k, int bits, int a_bits) {
  if (n < 1 || k < 1) {
    throw InputError("pack_weights: bad shape N=" + std::to_string(n) + " K=" + std::to_string(k));
  }
  if (bits != 8 && bits != 4) {
    throw InputError("pack_weights: weight bits must be 8 or 4, got " + std::to_string(bits));
  }
  if (a_bits < 1 || a_bits > 8) {
    throw InputError("pack_weights: activation bits must be 1..8, got " + std::to_string(a_bits));
  }
  const std::int64_t max_k = gemm_max_k(bits, a_bits);
  if (k > max_k) {
    throw InputError("pack_weights: K=" + std::to_string(k) + " too large for W" +
                     std::to_string(bits) + "A" + std::to_string(a_bits) +
                     ": int32 accumulators may overflow above K=" + std::to_string(max_k));
  }
}

// Checks the zero points (and the ISA) before any weight is read.
void validate_zw(int n, int bits, const std::int32_t* zw, Isa isa) {
  if (!isa_available(isa)) {
    throw UsageError(std::string("pack_weights: this CPU or build lacks ISA ") + isa_name(isa));
  }
  const int lo = -(1 << (bits - 1)), hi = (1 << (bits - 1)) - 1;
  for (int i = 0; i < n; ++i) {
    const std::int32_t z = zw != nullptr ? zw[i] : 0;
    if (z < lo || z > hi) {
      throw InputError("pack_weights: zero point " + std::to_string(z) + " of channel " +
                       std::to_string(i) + " outside [" + std::to_string(lo) + ", " +
                       std::to_string(hi) + "] for " + std::to_string(bits) + "-bit weights");
    }
  }
}

// Sets the header fields and zw_orig of `p` and makes `p.data` hold at least `bytes` bytes
// (rounded up to 64), reusing the current buffer when it is large enough. With `zero`, the
// first `bytes` (rounded) bytes are cleared.
void prepare(PackedWeights& p, int n, int k, int bits, int a_bits, const std::int32_t* zw,
             Isa isa, std::size_t bytes, bool zero) {
  p.isa = isa;
  p.n = n;
  p.k = k;
  p.bits = bits;
  p.a_bits = a_bits;
  p.needs_rowsum = false;
  p.zw_orig.assign(static_cast<size_t>(n), 0);
  if (zw != nullptr) std::copy(zw, zw + n, p.zw_orig.begin());
  const std::size_t rounded = (bytes + 63) / 64 * 64;
  if (p.data == nullptr || p.data_bytes < rounded) {
    void* mem = std::aligned_alloc(64, rounded);
    if (mem == nullptr) throw std::bad_alloc();
    p.data.reset(static_cast<std::int8_t*>(mem));
    p.data_bytes = rounded;
  }
  if (zero) std::memset(p.data.get(), 0, rounded);
}

// Geometry of the SIMD layouts: panel_n, n_panels, panel_bytes; returns the bytes to allocate.
std::size_t set_geometry(PackedWeights& p, const Layout& l, int n, int k) {
  p.panel_n = l.block * l.panel_blocks;
  p.n_panels = (n + p.panel_n - 1) / p.panel_n;
  const int n_groups = (k + l.k_group - 1) / l.k_group;
  p.panel_bytes = static_cast<std::int64_t>(n_groups) * l.panel_blocks * l.sub_bytes;
  return static_cast<std::size_t>(p.panel_bytes * p.n_panels);
}

// Per-channel zw (stored: + offset) and K*zw - colsum (stored values), padded to whole panels.
// colsum(i) = sum_j of the stored values of channel i.
template <class Colsum>
void set_channel_sums(PackedWeights& p, int offset, Colsum colsum) {
  const std::size_t n_pad = static_cast<std::size_t>(p.n_panels) * p.panel_n;
  p.zw.assign(n_pad, 0);
  p.kzw_csum.assign(n_pad, 0);
  for (int i = 0; i < p.n; ++i) {
    const std::int64_t z = p.zw_orig[i] + offset;
    p.zw[i] = static_cast<std::int32_t>(z);
    // K*zw - colsum fits in int64; keep it modulo 2^32 (the kernels compute in wrapping int32).
    p.kzw_csum[i] = static_cast<std::int32_t>(static_cast<std::uint32_t>(
        static_cast<std::uint64_t>(static_cast<std::int64_t>(p.k) * z - colsum(i))));
    if (z != 0) p.needs_rowsum = true;
  }
}

// value(n, k) -> W[n][k] as int (canonical, not offset), for n < N, k < K. Packs into `p`,
// reusing its memory when large enough.
template <class Value>
void pack_into(PackedWeights& p, Value value, int n, int k, int bits, const std::int32_t* zw,
               Isa isa, int a_bits) {
  validate_shape(n, k, bits, a_bits);
  validate_zw(n, bits, zw, isa);

  if (isa == Isa::Scalar) {
    const std::int64_t row_bytes = bits == 8 ? k : (k + 1) / 2;
    prepare(p, n, k, bits, a_bits, zw, isa, static_cast<std::size_t>(row_bytes * n), true);
    p.panel_n = detail::kScalarPanel;
    p.n_panels = (n + p.panel_n - 1) / p.panel_n;
    p.panel_bytes = 0;
    p.zw.clear();
    p.kzw_csum.clear();
    std::uint8_t* d = reinterpret_cast<std::uint8_t*>(p.data.get());
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < k; ++j) {
        const int v = value(i, j);
        if (bits == 8) {
          d[i * row_bytes + j] = static_cast<std::uint8_t>(static_cast<std::int8_t>(v));
        } else {
          d[i * row_bytes + j / 2] |= static_cast<std::uint8_t>((v & 0x0F) << (4 * (j % 2)));
        }
      }
    }
    return;
  }

  const Layout l = layout_for(isa, bits);
  const std::size_t bytes = set_geometry(p, l, n, k);
  prepare(p, n, k, bits, a_bits, zw, isa, bytes, true);
  const int n_groups = (k + l.k_group - 1) / l.k_group;

  // Stored value: W, or W + 8 (offset binary) for int4.
  const int offset = bits == 4 ? 8 : 0;
  auto stored = [&](int i, int j) -> int {
    if (i >= n || j >= k) return 0;
    return value(i, j) + offset;
  };
  const int n_blocks_total = (n + l.block - 1) / l.block;
  for (int panel = 0; panel < p.n_panels; ++panel) {
    const int first_block = panel * l.panel_blocks;
    const int nb = std::min(l.panel_blocks, n_blocks_total - first_block);
    std::int8_t* panel_base = p.data.get() + panel * p.panel_bytes;
    for (int g = 0; g < n_groups; ++g) {
      for (int b = 0; b < nb; ++b) {
        std::int8_t* sub = panel_base + (static_cast<std::int64_t>(g) * nb + b) * l.sub_bytes;
        const int n0 = (first_block + b) * l.block;
        const int k0 = g * l.k_group;
        if (l.kind == Layout::S8Oct || l.kind == Layout::Nib16) {
          for (int c = 0; c < l.block; ++c) {
            for (int i = 0; i < 8; ++i) {
              const int v = l.kind == Layout::S8Oct
                                ? stored(n0 + c, k0 + i)
                                : stored(n0 + c, k0 + i) | (stored(n0 + c, k0 + 8 + i) << 4);
              sub[c * 8 + i] = static_cast<std::int8_t>(v);
            }
          }
          continue;
        }
        for (int c = 0; c < l.block; ++c) {
          for (int i = 0; i < 4; ++i) {
            switch (l.kind) {
              case Layout::S8Quad:
                sub[c * 4 + i] = static_cast<std::int8_t>(stored(n0 + c, k0 + i));
                break;
              case Layout::I16Quad: {
                std::int16_t* s16 = reinterpret_cast<std::int16_t*>(sub);
                s16[(i / 2) * 16 + c * 2 + i % 2] = static_cast<std::int16_t>(stored(n0 + c, k0 + i));
                break;
              }
              case Layout::Nib8: {
                const int lo4 = stored(n0 + c, k0 + i), hi4 = stored(n0 + c, k0 + 4 + i);
                sub[c * 4 + i] = static_cast<std::int8_t>(lo4 | (hi4 << 4));
                break;
              }
              default:
                break;  // S8Oct, Nib16: handled above
            }
          }
        }
      }
    }
  }
  set_channel_sums(p, offset, [&](int i) {
    std::int64_t colsum = 0;
    for (int j = 0; j < k; ++j) colsum += stored(i, j);
    return colsum;
  });
}

template <class Value>
PackedWeights pack_impl(Value value, int n, int k, int bits, const std::int32_t* zw, Isa isa,
                        int a_bits) {
  PackedWeights p;
  pack_into(p, value, n, k, bits, zw, isa, a_bits);
  return p;
}

}  // namespace

void PackedWeights::AlignedFree::operator()(void* ptr) const { std::free(ptr); }

std::int64_t gemm_max_k(int w_bits, int a_bits) {
  const std::int64_t wmax = (std::int64_t{1} << w_bits) - 1;
  const std::int64_t amax = (std::int64_t{1} << a_bits) - 1;
  return std::int64_t{2147483647} / (wmax * amax);
}

std::vector<std::uint8_t> pack_int4_rows(const std::int8_t* w, int n, int k) {
  const std::int64_t row_bytes = (static_cast<std::int64_t>(k) + 1) / 2;
  std::vector<std::uint8_t> out(static_cast<std::size_t>(row_bytes * n), 0);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < k; ++j) {
      const int v = w[static_cast<std::int64_t>(i) * k + j];
      if (v < -8 || v > 7) {
        throw InputError("pack_int4_rows: value " + std::to_string(v) + " at [" +
                         std::to_string(i) + "][" + std::to_string(j) + "] outside [-8, 7]");
      }
      out[i * row_bytes + j / 2] |= static_cast<std::uint8_t>((v & 0x0F) << (4 * (j % 2)));
    }
  }
  return out;
}

PackedWeights pack_weights(const std::int8_t* w, int n, int k, int bits, const std::int32_t* zw,
                           Isa isa, int a_bits) {
  validate_shape(n, k, bits, a_bits);
  if (bits == 4) {
    const std::vector<std::uint8_t> rows = pack_int4_rows(w, n, k);  // validates the range
    return pack_weights_int4_rows(rows.data(), n, k, zw, isa, a_bits);
  }
  auto value = [w, k](int i, int j) { return static_cast<int>(w[static_cast<std::int64_t>(i) * k + j]); };
  return pack_impl(value, n, k, bits, zw, isa, a_bits);
}

PackedWeights pack_weights_int4_rows(const std::uint8_t* rows, int n, int k,
                                     const std::int32_t* zw, Isa isa, int a_bits) {
  const std::int64_t row_bytes = (static_cast<std::int64_t>(k) + 1) / 2;
  auto value = [rows, row_bytes](int i, int j) {
    const int nib = (rows[i * row_bytes + j / 2] >> (4 * (j % 2))) & 0x0F;
    return nib >= 8 ? nib - 16 : nib;
  };
  return pack_impl(value, n, k, 4, zw, isa, a_bits);
}

void repack_weights_s8(PackedWeights& w, const std::int8_t* src, std::int64_t stride_n,
                       std::int64_t stride_k, int n, int k, const std::int32_t* zw, Isa isa,
                       int a_bits) {
  if (src == nullptr) throw UsageError("repack_weights_s8: null source");
  const detail::PackS8Fn fast = isa_available(isa) ? kernels_for(isa).pack_s8 : nullptr;
  if (fast != nullptr) {
    validate_shape(n, k, 8, a_bits);
    validate_zw(n, 8, zw, isa);
    const std::size_t bytes = set_geometry(w, layout_for(isa, 8), n, k);
    prepare(w, n, k, 8, a_bits, zw, isa, bytes, false);
    const std::size_t n_pad = static_cast<std::size_t>(w.n_panels) * w.panel_n;
    w.kzw_csum.resize(n_pad);  // colsum scratch first, then K*zw - colsum in place
    if (fast(src, stride_n, stride_k, n, k, w.data.get(), w.kzw_csum.data())) {
      // In place: colsum[i] -> K*zw - colsum (mod 2^32), as set_channel_sums does.
      std::int32_t* kc = w.kzw_csum.data();
      for (int i = 0; i < n; ++i) {
        const std::int64_t z = w.zw_orig[i];
        kc[i] = static_cast<std::int32_t>(static_cast<std::uint32_t>(
            static_cast<std::uint64_t>(static_cast<std::int64_t>(k) * z - kc[i])));
        if (z != 0) w.needs_rowsum = true;
      }
      std::fill(w.kzw_csum.begin() + n, w.kzw_csum.end(), 0);
      w.zw.assign(n_pad, 0);
      std::copy(w.zw_orig.begin(), w.zw_orig.end(), w.zw.begin());
      return;
    }
  }
  auto value = [src, stride_n, stride_k](int i, int j) {
    return static_cast<int>(src[i * stride_n + j * stride_k]);
  };
  pack_into(w, value, n, k, 8, zw, isa, a_bits);
}

const char* gemm_kernel_name(const PackedWeights& w) {
  const GemmIsaKernels& k = kernels_for(w.isa);
  return w.bits == 8 ? k.name_int8 : k.name_int4;
}

void gemm(const PackedWeights& w, const GemmArgs& args, ThreadPool* pool) {
  if (w.data == nullptr) throw UsageError("gemm: weights were not packed");
  if (args.m < 0) throw UsageError("gemm: M=" + std::to_string(args.m) + " is negative");
  if (args.m == 0) return;
  if (args.a == nullptr || args.out == nullptr) throw UsageError("gemm: null A or output");
  if (args.lda < w.k) {
    throw UsageError("gemm: lda=" + std::to_string(args.lda) + " < K=" + std::to_string(w.k));
  }
  if (args.ldo < w.n) {
    throw UsageError("gemm: ldo=" + std::to_string(args.ldo) + " < N=" + std::to_string(w.n));
  }
  if (args.za < 0 || args.za > (1 << w.a_bits) - 1) {
    throw UsageError("gemm: za=" + std::to_string(args.za) + " outside [0, " +
                     std::to_string((1 << w.a_bits) - 1) + "] for " + std::to_string(w.a_bits) +
                     "-bit activations");
  }
  if (args.epilogue != Epilogue::Int32 && args.sw == nullptr) {
    throw UsageError("gemm: float and uint8 epilogues need weight scales sw");
  }
  if (args.epilogue == Epilogue::Uint8 && (args.out_bits < 1 || args.out_bits > 8)) {
    throw UsageError("gemm: out_bits=" + std::to_string(args.out_bits) + " outside 1..8");
  }

  const GemmIsaKernels& kernels = kernels_for(w.isa);
  const detail::GemmPanelFn panel_fn = w.bits == 8 ? kernels.panel_int8 : kernels.panel_int4;

  GemmCall call;
  call.w = &w;
  call.args = &args;
  thread_local std::vector<std::int32_t> rowsum;  // grows once, reused: no steady-state malloc
  if (w.needs_rowsum) {
    std::int32_t* rs = args.rowsum_scratch;
    if (rs == nullptr) {
      if (rowsum.size() < static_cast<std::size_t>(args.m)) rowsum.resize(args.m);
      rs = rowsum.data();
    }
    kernels.rowsum(args.a, args.lda, args.m, w.k, rs);
    call.rowsum = rs;
  }

  const int n_chunks = (args.m + kRowChunk - 1) / kRowChunk;
  const int n_tasks = n_chunks * w.n_panels;
  auto task = [&](int t) {
    const int chunk = t / w.n_panels, panel = t % w.n_panels;
    const int m_begin = chunk * kRowChunk;
    panel_fn(call, m_begin, std::min(args.m, m_begin + kRowChunk), panel);
  };
  if (pool != nullptr && pool->size() > 1) {
    pool->parallel_for(n_tasks, task);
  } else {
    for (int t = 0; t < n_tasks; ++t) task(t);
  }
}

}  // namespace reparq
