// test_gemm.cpp: the integer GEMM. Every ISA path against gemm_u8s8__ref bit for bit (memcmp of
// whole output buffers, float outputs and the untouched gaps of strided rows included), the
// reference against an int64 triple loop, the int32 overflow bound, and the ISA cap.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu.h"
#include "kernels/error.h"
#include "kernels/gemm.h"
#include "kernels/threadpool.h"

namespace reparq {
namespace {

enum class ZwMode { Zero, Random, Extreme };

struct Problem {
  int m = 1, n = 1, k = 1;
  int w_bits = 8;
  int a_bits = 8;   // declared; codes drawn from [0, 2^a_bits - 1]
  std::int32_t za = 0;
  ZwMode zw_mode = ZwMode::Zero;
  std::int64_t lda = 0, ldo = 0;  // 0: dense
  bool bias = true;
  int out_bits = 8;
  std::uint32_t seed = 1;
};

std::string describe(const Problem& p, Epilogue e, int threads) {
  static const char* zw_names[] = {"zero", "random", "extreme"};
  static const char* ep_names[] = {"int32", "float", "uint8"};
  return "M=" + std::to_string(p.m) + " N=" + std::to_string(p.n) + " K=" + std::to_string(p.k) +
         " W" + std::to_string(p.w_bits) + "A" + std::to_string(p.a_bits) +
         " za=" + std::to_string(p.za) + " zw=" + zw_names[static_cast<int>(p.zw_mode)] +
         " lda=" + std::to_string(p.lda) + " ldo=" + std::to_string(p.ldo) +
         " epilogue=" + ep_names[static_cast<int>(e)] + " threads=" + std::to_string(threads);
}

// Inputs of one problem, in canonical form.
struct Data {
  std::vector<std::uint8_t> a;     // exactly (M-1)*lda + K bytes: reading past A shows in ASan
  std::vector<std::int8_t> w;      // N x K values (unpacked, also for int4)
  std::vector<std::uint8_t> w4;    // canonical nibble rows for int4
  std::vector<std::int32_t> zw;
  std::vector<float> sw, bias;
  float sa = 0.0f, inv_so = 1.0f;
  std::int32_t zo = 0;
};

Data make_data(Problem& p) {
  if (p.lda == 0) p.lda = p.k;
  if (p.ldo == 0) p.ldo = p.n;
  std::mt19937 rng(p.seed);
  Data d;
  const int amax = (1 << p.a_bits) - 1;
  d.a.resize(static_cast<size_t>((p.m - 1) * p.lda + p.k));
  std::uniform_int_distribution<int> ua(0, amax);
  for (auto& v : d.a) v = static_cast<std::uint8_t>(ua(rng));
  const int wlo = -(1 << (p.w_bits - 1)), whi = (1 << (p.w_bits - 1)) - 1;
  std::uniform_int_distribution<int> uw(wlo, whi);
  d.w.resize(static_cast<size_t>(p.n) * p.k);
  for (auto& v : d.w) v = static_cast<std::int8_t>(uw(rng));
  // Some rows at the extremes, to reach the largest products.
  for (int i = 0; i < p.n; i += 5) {
    for (int j = 0; j < p.k; ++j) d.w[static_cast<size_t>(i) * p.k + j] = static_cast<std::int8_t>((j % 2) ? wlo : whi);
  }
  if (p.w_bits == 4) d.w4 = pack_int4_rows(d.w.data(), p.n, p.k);
  d.zw.resize(p.n);
  for (int i = 0; i < p.n; ++i) {
    switch (p.zw_mode) {
      case ZwMode::Zero: d.zw[i] = 0; break;
      case ZwMode::Random: d.zw[i] = uw(rng); break;
      case ZwMode::Extreme: d.zw[i] = (i % 2) ? wlo : whi; break;
    }
  }
  std::uniform_real_distribution<float> us(1e-3f, 5e-2f), ub(-4.0f, 4.0f);
  d.sa = 0.0173f;
  d.sw.resize(p.n);
  d.bias.resize(p.n);
  for (int i = 0; i < p.n; ++i) {
    d.sw[i] = us(rng);
    d.bias[i] = ub(rng);
  }
  // Spread requantized values over the whole range and past it, to exercise both clamps.
  const double typical = std::sqrt(static_cast<double>(p.k)) * amax * whi * 0.6 * d.sa * 0.025 + 1.0;
  d.inv_so = static_cast<float>(150.0 / typical);
  d.zo = static_cast<std::int32_t>(rng() % ((1u << p.out_bits)));
  return d;
}

GemmArgs make_args(const Problem& p, const Data& d, Epilogue e, void* out) {
  GemmArgs g;
  g.m = p.m;
  g.a = d.a.data();
  g.lda = p.lda;
  g.za = p.za;
  g.epilogue = e;
  g.out = out;
  g.ldo = p.ldo;
  g.sa = d.sa;
  g.sw = d.sw.data();
  g.bias = p.bias ? d.bias.data() : nullptr;
  g.inv_so = d.inv_so;
  g.zo = d.zo;
  g.out_bits = p.out_bits;
  return g;
}

size_t elem_size(Epilogue e) { return e == Epilogue::Uint8 ? 1 : 4; }

const std::int8_t* canonical(const Problem& p, const Data& d) {
  return p.w_bits == 8 ? d.w.data() : reinterpret_cast<const std::int8_t*>(d.w4.data());
}

// Output buffer: M x ldo elements prefilled with a pattern, so writes into the gaps show.
std::vector<std::uint8_t> out_buffer(const Problem& p, Epilogue e) {
  std::vector<std::uint8_t> buf(static_cast<size_t>(p.m) * p.ldo * elem_size(e));
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<std::uint8_t>(0xA5 ^ (i * 7));
  return buf;
}

ThreadPool& pool2() {
  static ThreadPool pool(2);
  return pool;
}

// Runs one problem through `isa` for every epilogue and thread count, comparing with the ref.
void check(Isa isa, Problem p, const std::vector<Epilogue>& epilogues = {Epilogue::Int32, Epilogue::Float, Epilogue::Uint8},
           const std::vector<int>& thread_counts = {1, 2}) {
  const Data d = make_data(p);
  const PackedWeights packed =
      p.w_bits == 8 ? pack_weights(d.w.data(), p.n, p.k, 8, d.zw.data(), isa, p.a_bits)
                    : pack_weights_int4_rows(d.w4.data(), p.n, p.k, d.zw.data(), isa, p.a_bits);
  for (Epilogue e : epilogues) {
    std::vector<std::uint8_t> expect = out_buffer(p, e);
    gemm_u8s8__ref(make_args(p, d, e, expect.data()), canonical(p, d), p.n, p.k, p.w_bits,
                   d.zw.data());
    for (int threads : thread_counts) {
      std::vector<std::uint8_t> got = out_buffer(p, e);
      gemm(packed, make_args(p, d, e, got.data()), threads == 1 ? nullptr : &pool2());
      if (std::memcmp(got.data(), expect.data(), got.size()) != 0) {
        size_t first = 0;
        while (got[first] == expect[first]) ++first;
        const size_t elem = first / elem_size(e);
        ADD_FAILURE() << isa_name(isa) << " (" << gemm_kernel_name(packed) << ") differs from the reference: "
                      << describe(p, e, threads) << ", first at m=" << elem / p.ldo
                      << " n=" << elem % p.ldo;
        return;
      }
    }
  }
}

class GemmIsa : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!isa_available(GetParam())) {
      GTEST_SKIP() << "this CPU lacks " << isa_name(GetParam());
    }
    if (static_cast<int>(GetParam()) > static_cast<int>(best_isa())) {
      GTEST_SKIP() << isa_name(GetParam()) << " is above the cap REPARQ_MAX_ISA";
    }
  }
};

// Every edge shape (M x K x N), with za / zero-point mode / bit widths / strides / bias varied
// from shape to shape by a seeded draw, every epilogue, 1 and 2 threads.
TEST_P(GemmIsa, EdgeShapesMatchReference) {
  const int ms[] = {1, 2, 3, 7, 17, 197};
  const int ks[] = {1, 3, 4, 5, 63, 64, 65, 383, 384, 1536};
  const int ns[] = {1, 15, 16, 17, 33, 384};
  const std::int32_t zas8[] = {0, 128, 255}, zas4[] = {0, 8, 15};
  std::mt19937 pick(42);
  int count = 0;
  for (int m : ms) {
    for (int k : ks) {
      for (int n : ns) {
        Problem p;
        p.m = m;
        p.n = n;
        p.k = k;
        p.w_bits = (pick() % 2) ? 8 : 4;
        p.a_bits = (pick() % 3 == 0) ? 4 : 8;
        p.za = p.a_bits == 8 ? zas8[pick() % 3] : zas4[pick() % 3];
        p.zw_mode = static_cast<ZwMode>(pick() % 3);
        p.lda = k + ((pick() % 2) ? 0 : 3);
        p.ldo = n + ((pick() % 2) ? 0 : 5);
        p.bias = pick() % 4 != 0;
        p.out_bits = (pick() % 4 == 0) ? 4 : 8;
        p.seed = static_cast<std::uint32_t>(pick());
        check(GetParam(), p);
        ++count;
        if (HasFailure()) return;
      }
    }
  }
  EXPECT_EQ(count, 360);
}

// The full parameter cross product on a few shapes that have K and N tails.
TEST_P(GemmIsa, ParameterSweepMatchesReference) {
  struct Shape { int m, k, n; } shapes[] = {{7, 65, 33}, {17, 383, 17}, {3, 5, 16}, {197, 64, 15}};
  for (const Shape& s : shapes) {
    for (int w_bits : {8, 4}) {
      for (int a_bits : {8, 4}) {
        for (int zai = 0; zai < 3; ++zai) {
          for (ZwMode zw : {ZwMode::Zero, ZwMode::Random, ZwMode::Extreme}) {
            Problem p;
            p.m = s.m;
            p.n = s.n;
            p.k = s.k;
            p.w_bits = w_bits;
            p.a_bits = a_bits;
            p.za = a_bits == 8 ? std::int32_t{0} + zai * 127 + (zai == 2 ? 1 : 0) : zai * 7 + (zai == 2 ? 1 : 0);
            p.zw_mode = zw;
            p.seed = static_cast<std::uint32_t>(s.m * 1000 + s.k + w_bits + a_bits + zai);
            check(GetParam(), p);
            if (HasFailure()) return;
          }
        }
      }
    }
  }
}

// Requantization ties: y = acc + 0.5 exactly, so t lands on halves; half-to-even must agree.
TEST_P(GemmIsa, RequantizeRoundsHalfToEvenLikeReference) {
  Problem p;
  p.m = 5;
  p.n = 37;
  p.k = 3;
  p.a_bits = 4;
  p.w_bits = 4;
  Data d = make_data(p);
  std::fill(d.sw.begin(), d.sw.end(), 1.0f);
  std::fill(d.bias.begin(), d.bias.end(), 0.5f);
  d.sa = 1.0f;
  d.inv_so = 1.0f;
  d.zo = 100;
  const PackedWeights packed = pack_weights(d.w.data(), p.n, p.k, 4, nullptr, GetParam(), 4);
  std::vector<std::uint8_t> expect(static_cast<size_t>(p.m) * p.n), got(expect.size());
  std::vector<std::int32_t> acc(expect.size());
  gemm_u8s8__ref(make_args(p, d, Epilogue::Uint8, expect.data()), canonical(p, d), p.n, p.k, 4, nullptr);
  gemm_u8s8__ref(make_args(p, d, Epilogue::Int32, acc.data()), canonical(p, d), p.n, p.k, 4, nullptr);
  gemm(packed, make_args(p, d, Epilogue::Uint8, got.data()));
  EXPECT_EQ(0, std::memcmp(got.data(), expect.data(), got.size()));
  for (size_t i = 0; i < acc.size(); ++i) {
    // nearbyint(acc + 0.5) rounds to the even neighbour.
    std::int64_t r = acc[i] + ((acc[i] % 2 == 0) ? 0 : 1);
    std::int64_t q = std::min<std::int64_t>(255, std::max<std::int64_t>(0, r + 100));
    ASSERT_EQ(expect[i], q) << "acc=" << acc[i];
  }
}

// Largest K the int32 bound allows, with every term at its extreme: exact, and K+1 rejected.
TEST_P(GemmIsa, MaximalKIsExactAndBeyondIsRejected) {
  for (int w_bits : {8, 4}) {
    const int k = static_cast<int>(gemm_max_k(w_bits, 8));
    const int n = 17, m = 3;
    const int wlo = -(1 << (w_bits - 1)), whi = (1 << (w_bits - 1)) - 1;
    std::vector<std::uint8_t> a(static_cast<size_t>(m) * k);
    std::vector<std::int8_t> w(static_cast<size_t>(n) * k);
    std::vector<std::int32_t> zw(n);
    for (int j = 0; j < k; ++j) {
      a[j] = 255;          // row 0: A - za = 255 with za = 0
      a[k + j] = 0;        // row 1: A - za = -255 ... with za = 255 (set below per case)
      a[2 * k + j] = 255;
    }
    for (int i = 0; i < n; ++i) {
      zw[i] = (i % 2) ? wlo : whi;
      for (int j = 0; j < k; ++j) w[static_cast<size_t>(i) * k + j] = static_cast<std::int8_t>((i % 2) ? whi : wlo);
    }
    const PackedWeights packed = pack_weights(w.data(), n, k, w_bits, zw.data(), GetParam());
    for (std::int32_t za : {0, 255}) {
      GemmArgs g;
      g.m = m;
      g.a = a.data();
      g.lda = k;
      g.za = za;
      std::vector<std::int32_t> got(static_cast<size_t>(m) * n), expect(got.size());
      g.out = expect.data();
      g.ldo = n;
      if (w_bits == 8) {
        gemm_u8s8__ref(g, w.data(), n, k, 8, zw.data());
      } else {
        const std::vector<std::uint8_t> w4 = pack_int4_rows(w.data(), n, k);
        gemm_u8s8__ref(g, reinterpret_cast<const std::int8_t*>(w4.data()), n, k, 4, zw.data());
      }
      g.out = got.data();
      gemm(packed, g);
      ASSERT_EQ(got, expect) << isa_name(GetParam()) << " W" << w_bits << " za=" << za;
      for (int r = 0; r < m; ++r) {
        for (int i = 0; i < n; ++i) {
          const std::int64_t av = (r == 1 ? 0 : 255) - za;
          const std::int64_t wv = ((i % 2) ? whi : wlo) - zw[i];
          ASSERT_EQ(expect[static_cast<size_t>(r) * n + i], av * wv * k);
        }
      }
    }
    std::vector<std::int8_t> w_big(static_cast<size_t>(n) * (k + 1), 0);
    EXPECT_THROW(pack_weights(w_big.data(), n, k + 1, w_bits, zw.data(), GetParam()), InputError);
  }
}

// repack_weights_s8 (strided source, reused memory, the Avx512Vnni vectorized packer) must give
// exactly what pack_weights gives for the same values: same bytes, sums and zero points, so
// the GEMM over it is the reference's. Shapes cover the attention's (197 x 64 and 64 x 197),
// partial panels, blocks and k-groups, and a buffer reused across larger and smaller shapes.
TEST_P(GemmIsa, RepackEqualsPackWeights) {
  const Isa isa = GetParam();
  std::mt19937 rng(21);
  std::uniform_int_distribution<int> uw(-128, 127);
  PackedWeights reused;  // one buffer through every case, in both orientations
  struct Shape { int n, k; };
  const Shape shapes[] = {{197, 64}, {64, 197}, {1, 1}, {5, 3}, {16, 4}, {17, 5}, {63, 64},
                          {65, 7}, {130, 33}, {3, 250}, {64, 1}, {256, 64}, {7, 2}};
  for (const Shape sh : shapes) {
    for (int transposed = 0; transposed < 2; ++transposed) {
      for (int zmode = 0; zmode < 3; ++zmode) {
        const int n = sh.n, k = sh.k;
        // Source with gaps: W[i][j] at src[i * sn + j * sk].
        const std::int64_t ld = (transposed ? n : k) + 3;
        const std::int64_t sn = transposed ? 1 : ld, sk = transposed ? ld : 1;
        std::vector<std::int8_t> src(static_cast<size_t>((transposed ? k : n) * ld), 0x55);
        std::vector<std::int8_t> w(static_cast<size_t>(n) * k);
        for (int i = 0; i < n; ++i)
          for (int j = 0; j < k; ++j) {
            const int v = (i % 7 == 3) ? ((j % 2) ? -128 : 127) : uw(rng);
            w[static_cast<size_t>(i) * k + j] = static_cast<std::int8_t>(v);
            src[static_cast<size_t>(i * sn + j * sk)] = static_cast<std::int8_t>(v);
          }
        std::vector<std::int32_t> zw(n, 0);
        for (int i = 0; i < n; ++i) zw[i] = zmode == 0 ? 0 : zmode == 1 ? -3 : uw(rng);
        const PackedWeights want = pack_weights(w.data(), n, k, 8, zw.data(), isa, 8);
        repack_weights_s8(reused, src.data(), sn, sk, n, k, zw.data(), isa, 8);
        const std::string what = std::string(isa_name(isa)) + " n=" + std::to_string(n) + " k=" +
                                 std::to_string(k) + (transposed ? " transposed" : " rows") +
                                 " zw mode " + std::to_string(zmode);
        ASSERT_EQ(want.isa, reused.isa) << what;
        ASSERT_EQ(want.n, reused.n) << what;
        ASSERT_EQ(want.k, reused.k) << what;
        ASSERT_EQ(want.bits, reused.bits) << what;
        ASSERT_EQ(want.panel_n, reused.panel_n) << what;
        ASSERT_EQ(want.n_panels, reused.n_panels) << what;
        ASSERT_EQ(want.panel_bytes, reused.panel_bytes) << what;
        ASSERT_EQ(want.needs_rowsum, reused.needs_rowsum) << what;
        ASSERT_EQ(want.zw, reused.zw) << what;
        ASSERT_EQ(want.kzw_csum, reused.kzw_csum) << what;
        ASSERT_EQ(want.zw_orig, reused.zw_orig) << what;
        ASSERT_GE(reused.data_bytes, want.data_bytes) << what;
        ASSERT_EQ(0, std::memcmp(want.data.get(), reused.data.get(), want.data_bytes)) << what;
        // And the GEMM over the repacked weights equals the reference.
        std::vector<std::uint8_t> a(static_cast<size_t>(7) * k);
        for (auto& v : a) v = static_cast<std::uint8_t>(rng());
        std::vector<float> sw(n, 0.01f);
        GemmArgs g;
        g.m = 7;
        g.a = a.data();
        g.lda = k;
        g.za = 17;
        g.epilogue = Epilogue::Int32;
        g.ldo = n;
        std::vector<std::int32_t> got(static_cast<size_t>(7) * n), ref(got.size());
        g.out = got.data();
        gemm(reused, g);
        g.out = ref.data();
        gemm_u8s8__ref(g, w.data(), n, k, 8, zw.data());
        ASSERT_EQ(ref, got) << what;
      }
    }
  }
  std::vector<std::int8_t> w(4, 0);
  const std::int32_t bad_zw[2] = {0, 200};
  EXPECT_THROW(repack_weights_s8(reused, w.data(), 2, 1, 2, 2, bad_zw, isa), InputError);
  EXPECT_THROW(repack_weights_s8(reused, w.data(), 2, 1, 0, 2, nullptr, isa), InputError);
  EXPECT_THROW(repack_weights_s8(reused, nullptr, 2, 1, 2, 2, nullptr, isa), UsageError);
}

INSTANTIATE_TEST_SUITE_P(AllIsas, GemmIsa,
                         ::testing::Values(Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni, Isa::Neon,
                                           Isa::NeonDot, Isa::NeonI8mm),
                         [](const ::testing::TestParamInfo<Isa>& info) {
                           return std::string(isa_name(info.param));
                         });

// The reference against a trivially correct int64 triple loop.
TEST(GemmRef, MatchesInt64TripleLoop) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 60; ++trial) {
    Problem p;
    p.m = 1 + static_cast<int>(rng() % 9);
    p.n = 1 + static_cast<int>(rng() % 40);
    p.k = 1 + static_cast<int>(rng() % 300);
    p.w_bits = (trial % 2) ? 4 : 8;
    p.za = static_cast<std::int32_t>(rng() % 256);
    p.zw_mode = static_cast<ZwMode>(trial % 3);
    p.lda = p.k + trial % 3;
    p.seed = static_cast<std::uint32_t>(rng());
    const Data d = make_data(p);
    std::vector<std::int32_t> got(static_cast<size_t>(p.m) * p.ldo);
    gemm_u8s8__ref(make_args(p, d, Epilogue::Int32, got.data()), canonical(p, d), p.n, p.k,
                   p.w_bits, d.zw.data());
    std::vector<float> got_f(got.size());
    gemm_u8s8__ref(make_args(p, d, Epilogue::Float, got_f.data()), canonical(p, d), p.n, p.k,
                   p.w_bits, d.zw.data());
    for (int m = 0; m < p.m; ++m) {
      for (int n = 0; n < p.n; ++n) {
        std::int64_t acc = 0;
        for (int k = 0; k < p.k; ++k) {
          acc += (static_cast<std::int64_t>(d.a[m * p.lda + k]) - p.za) *
                 (static_cast<std::int64_t>(d.w[static_cast<size_t>(n) * p.k + k]) - d.zw[n]);
        }
        ASSERT_EQ(got[m * p.ldo + n], acc) << "m=" << m << " n=" << n;
        volatile float s = d.sa * d.sw[n];
        volatile float prod = static_cast<float>(acc) * s;
        const float y = prod + d.bias[n];
        ASSERT_EQ(got_f[m * p.ldo + n], y);
      }
    }
  }
}

TEST(GemmPack, Int4NibbleOrderIsLowFirst) {
  const std::int8_t w[] = {1, -1, 7, -8, 0};  // one row, K = 5
  const std::vector<std::uint8_t> rows = pack_int4_rows(w, 1, 5);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0], 0xF1);
  EXPECT_EQ(rows[1], 0x87);
  EXPECT_EQ(rows[2], 0x00);
}

TEST(GemmPack, RejectsBadValues) {
  const std::int8_t w4_bad[] = {8, 0};
  EXPECT_THROW(pack_weights(w4_bad, 1, 2, 4, nullptr, Isa::Scalar), InputError);
  const std::int8_t w[] = {1, 2};
  const std::int32_t zw_bad8[] = {128};
  const std::int32_t zw_bad4[] = {-9};
  EXPECT_THROW(pack_weights(w, 1, 2, 8, zw_bad8, Isa::Scalar), InputError);
  EXPECT_THROW(pack_weights(w, 1, 2, 4, zw_bad4, Isa::Scalar), InputError);
  EXPECT_THROW(pack_weights(w, 1, 2, 5, nullptr, Isa::Scalar), InputError);
  EXPECT_THROW(pack_weights(w, 0, 2, 8, nullptr, Isa::Scalar), InputError);
  EXPECT_EQ(gemm_max_k(8, 8), 33025);
  EXPECT_EQ(gemm_max_k(4, 8), 561433);
  std::vector<std::int8_t> big(static_cast<size_t>(33026), 0);
  EXPECT_THROW(pack_weights(big.data(), 1, 33026, 8, nullptr, Isa::Scalar), InputError);
  EXPECT_NO_THROW(pack_weights(big.data(), 1, 33026, 8, nullptr, Isa::Scalar, 7));

  const PackedWeights p = pack_weights(w, 1, 2, 8, nullptr, Isa::Scalar, 4);
  const std::uint8_t a[] = {1, 2};
  std::int32_t out = 0;
  GemmArgs g;
  g.m = 1;
  g.a = a;
  g.lda = 2;
  g.za = 16;  // outside [0, 15] for 4-bit activations
  g.out = &out;
  g.ldo = 1;
  EXPECT_THROW(gemm(p, g), UsageError);
}

// Saves and restores REPARQ_MAX_ISA around a test.
class EnvGuard {
 public:
  EnvGuard() {
    const char* v = std::getenv("REPARQ_MAX_ISA");
    had_ = v != nullptr;
    if (had_) old_ = v;
  }
  ~EnvGuard() {
    if (had_) {
      setenv("REPARQ_MAX_ISA", old_.c_str(), 1);
    } else {
      unsetenv("REPARQ_MAX_ISA");
    }
    clear_isa_cap();
  }

 private:
  bool had_ = false;
  std::string old_;
};

TEST(IsaCap, EnvironmentCapsTheIsa) {
  EnvGuard guard;
  setenv("REPARQ_MAX_ISA", "scalar", 1);
  EXPECT_EQ(best_isa(), Isa::Scalar);
  if (isa_available(Isa::Avx2)) {
    setenv("REPARQ_MAX_ISA", "avx2", 1);
    EXPECT_EQ(best_isa(), Isa::Avx2);
  }
  if (isa_available(Isa::Neon)) {  // Arm64: every CPU has Advanced SIMD
    setenv("REPARQ_MAX_ISA", "neon", 1);
    EXPECT_EQ(best_isa(), Isa::Neon);
  }
  unsetenv("REPARQ_MAX_ISA");
  EXPECT_EQ(best_isa(), detected_isa());
}

TEST(IsaCap, BadValueThrowsUsageErrorNamingTheVariable) {
  EnvGuard guard;
  setenv("REPARQ_MAX_ISA", "avx9000", 1);
  try {
    best_isa();
    FAIL() << "expected UsageError";
  } catch (const UsageError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("REPARQ_MAX_ISA"), std::string::npos) << what;
    EXPECT_NE(what.find("scalar, avx2, avx512vnni"), std::string::npos) << what;
  }
}

TEST(IsaCap, CapAboveTheCpuThrows) {
  EnvGuard guard;
  for (Isa isa : {Isa::Avx2, Isa::Avx512Vnni, Isa::Neon, Isa::NeonDot, Isa::NeonI8mm}) {
    if (isa_available(isa)) continue;
    setenv("REPARQ_MAX_ISA", isa_name(isa), 1);
    EXPECT_THROW(best_isa(), UsageError);
    EXPECT_THROW(set_isa_cap(isa), UsageError);
  }
}

TEST(IsaCap, FlagOverridesEnvironment) {
  EnvGuard guard;
  setenv("REPARQ_MAX_ISA", "bogus", 1);
  set_isa_cap(Isa::Scalar);
  EXPECT_EQ(best_isa(), Isa::Scalar);
}

TEST(ThreadPool, RunsEveryTaskOnce) {
  ThreadPool pool(2);
  for (int round = 0; round < 50; ++round) {
    std::vector<int> hits(97, 0);
    pool.parallel_for(97, [&](int i) { hits[i] += 1; });
    for (int h : hits) ASSERT_EQ(h, 1);
  }
}

}  // namespace
}  // namespace reparq
