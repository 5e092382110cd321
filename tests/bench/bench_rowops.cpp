// bench_rowops: the executor's float row operations per ISA, at DeiT-S row lengths
// (docs/PERF.md, "Session 6"): softmax + post-Softmax codes over 197 scores (8-bit uniform
// coder, as `reparq bench`'s random model; and a 4-bit log2 coder, as in W4A4 models), GELU + quantize over 1536 values, LayerNorm +
// quantize over 384 values one row at a time and two rows at a time (layernorm_quant2), and
// the level-table pass over 1536 codes (map_bytes), and the error-feedback gains a Linear
// needs at load (ef_gains, O(in^3); DeiT-S's qkv/fc1 in = 384 and fc2 in = 1536, vit6x128's 128),
// whole or in error-feedback blocks, and the error-feedback rounding of one image's rows (ef_rows).
// items_per_second gives elements per second. Usage: build/tests/bench_rowops [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu.h"
#include "kernels/qmodel.h"
#include "kernels/vit_ops.h"

namespace {

using reparq::Isa;

constexpr int kRows = 197;  // one image's tokens

std::vector<float> random_rows(int n, float sd, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, sd);
  std::vector<float> v(size_t(kRows) * n);
  for (float& x : v) x = nd(rng);
  return v;
}

// bits 8: the uniform coder of `reparq bench`'s random model (since session 8 the arithmetic
// path of AttnCoder::affine_k; before, per-key tables and gathers); bits 4: a log2 coder as
// W4A4 models have (the register-resident binary search). All 197 rows in one call.
void bm_softmax(benchmark::State& st, Isa isa, int bits) {
  const reparq::VitRowOps& ops = reparq::vit_row_ops(isa);
  reparq::AttnQuant at;
  at.bits = bits;
  if (bits == 8) {
    at.kind = "uniform";
    for (int c = 0; c < 255; ++c) at.thresholds.push_back(float((254.5 - c) / 255.0));
    for (int c = 0; c < 256; ++c) at.lut.push_back(uint8_t(255 - c));
  } else {
    at.kind = "log2";
    const int L = 1 << bits;
    for (int c = 0; c + 1 < L; ++c) at.thresholds.push_back(float(std::pow(2.0, -(c + 0.5))));
    for (int c = 0; c < L; ++c) at.lut.push_back(uint8_t(c + 1 < L ? std::lround(255.0 * std::pow(2.0, -c)) : 0));
  }
  const reparq::AttnCoder cd = reparq::make_attn_coder(at);
  const reparq::AttnCoder::View v = cd.view();
  const int n = 197;
  const std::vector<float> src = random_rows(n, 20.f, 1);
  std::vector<float> s(src.size());
  std::vector<uint8_t> out(src.size());
  for (auto _ : st) {
    st.PauseTiming();
    s = src;  // softmax_levels overwrites its scores
    st.ResumeTiming();
    ops.softmax_levels(s.data(), n, n, kRows, 0.125f, &v, out.data(), n);
    benchmark::DoNotOptimize(out.data());
  }
  st.SetItemsProcessed(st.iterations() * int64_t(kRows) * n);
}

void bm_gelu(benchmark::State& st, Isa isa) {
  const reparq::VitRowOps& ops = reparq::vit_row_ops(isa);
  const int n = 1536;
  const std::vector<float> y = random_rows(n, 1.5f, 2);
  std::vector<uint8_t> out(y.size());
  const reparq::QuantParams q{255.0f / 4, 10, 255};
  for (auto _ : st) {
    for (int r = 0; r < kRows; ++r) ops.gelu_quant(y.data() + size_t(r) * n, n, nullptr, q, out.data() + size_t(r) * n);
    benchmark::DoNotOptimize(out.data());
  }
  st.SetItemsProcessed(st.iterations() * int64_t(kRows) * n);
}

void bm_layernorm(benchmark::State& st, Isa isa, bool pairs) {
  const reparq::VitRowOps& ops = reparq::vit_row_ops(isa);
  const int n = 384;
  const std::vector<float> x = random_rows(n, 1.5f, 3);
  const std::vector<float> w(n, 1.1f), b(n, 0.1f);
  std::vector<uint8_t> out(x.size());
  const reparq::QuantParams q{255.0f / 6, 128, 255};
  for (auto _ : st) {
    int r = 0;
    if (pairs)
      for (; r + 1 < kRows; r += 2)
        ops.layernorm_quant2(x.data() + size_t(r) * n, x.data() + size_t(r + 1) * n, n, w.data(), b.data(), 1e-6f, q,
                             out.data() + size_t(r) * n, out.data() + size_t(r + 1) * n);
    for (; r < kRows; ++r)
      ops.layernorm_quant(x.data() + size_t(r) * n, n, w.data(), b.data(), 1e-6f, q, out.data() + size_t(r) * n);
    benchmark::DoNotOptimize(out.data());
  }
  st.SetItemsProcessed(st.iterations() * int64_t(kRows) * n);
}

// The level-table pass (ActQuant::lut) over a GELU output row of 1536 codes: a 4-bit
// site's table (a monotone step function of the 8-bit grid code with 16 values).
void bm_map_bytes(benchmark::State& st, Isa isa) {
  const reparq::VitRowOps& ops = reparq::vit_row_ops(isa);
  const int n = 1536;
  std::vector<uint8_t> table(256), codes(size_t(kRows) * n);
  for (int c = 0; c < 256; ++c) table[size_t(c)] = uint8_t(c / 16 * 17);
  std::mt19937 rng(4);
  for (uint8_t& c : codes) c = uint8_t(rng());
  for (auto _ : st) {
    for (int r = 0; r < kRows; ++r) ops.map_bytes(codes.data() + size_t(r) * n, n, table.data());
    benchmark::DoNotOptimize(codes.data());
  }
  st.SetItemsProcessed(st.iterations() * int64_t(kRows) * n);
}

// ef_gains (kernels/ef.cpp): computed once per Linear when the executor is built; one call.
// block: QLinear::ef_block (0 = one block).
reparq::QLinear ef_linear(int in, int out, int block) {
  reparq::QLinear l;
  l.in = in;
  l.out = out;
  l.wbits = 4;
  std::mt19937 rng(5);
  l.w.resize(size_t(in) * size_t(out));
  for (int8_t& w : l.w) w = int8_t(int(rng() % 16) - 8);
  l.w_zero.assign(size_t(out), 0);
  l.w_scale.assign(size_t(out), 0.01f);
  l.ef_damp = 0.1f;
  l.ef_block = block;
  return l;
}

void bm_ef_gains(benchmark::State& st, int in, int out, int block) {
  const reparq::QLinear l = ef_linear(in, out, block);
  for (auto _ : st) {
    std::vector<float> g = reparq::ef_gains(l);
    benchmark::DoNotOptimize(g.data());
  }
}

// Error-feedback rounding of one image's 197 input rows of a Linear (in columns, 4-bit codes),
// 16 rows per call as the executor does, block by block as it does with ef_block.
void bm_ef_rows(benchmark::State& st, Isa isa, int in, int block) {
  const reparq::VitRowOps& ops = reparq::vit_row_ops(isa);
  const reparq::QLinear l = ef_linear(in, 64, block);
  const std::vector<float> g = reparq::ef_gains(l);
  const int64_t K = reparq::ef_block_size(l);
  const std::vector<float> src = random_rows(in, 1.0f, 6);
  std::vector<float> t(src.size());
  std::vector<uint8_t> codes(src.size());
  reparq::QuantParams q{};
  q.inv_scale = 4.0f;
  q.zero = 8;
  q.qmax = 15;
  for (auto _ : st) {
    t = src;
    for (int r0 = 0; r0 < kRows; r0 += 16)
      for (int64_t s = 0; s < in; s += K)
        ops.ef_quant_rows(t.data() + int64_t(r0) * in + s, in, std::min(16, kRows - r0), int(std::min<int64_t>(K, in - s)),
                          g.data() + s * K, q, nullptr, codes.data() + int64_t(r0) * in + s, in);
    benchmark::DoNotOptimize(codes.data());
  }
  st.SetItemsProcessed(st.iterations() * int64_t(kRows) * in);
}

}  // namespace

int main(int argc, char** argv) {
  for (Isa isa : {Isa::Avx512Vnni, Isa::Avx2, Isa::Scalar}) {
    if (!reparq::isa_available(isa)) continue;
    const std::string i = reparq::isa_name(isa);
    benchmark::RegisterBenchmark(("softmax_levels_197/" + i).c_str(), bm_softmax, isa, 8);
    benchmark::RegisterBenchmark(("softmax_levels_197_log2_4bit/" + i).c_str(), bm_softmax, isa, 4);
    benchmark::RegisterBenchmark(("gelu_quant_1536/" + i).c_str(), bm_gelu, isa);
    benchmark::RegisterBenchmark(("layernorm_quant_384/" + i).c_str(), bm_layernorm, isa, false);
    benchmark::RegisterBenchmark(("layernorm_quant2_384/" + i).c_str(), bm_layernorm, isa, true);
    benchmark::RegisterBenchmark(("map_bytes_1536/" + i).c_str(), bm_map_bytes, isa);
  }
  benchmark::RegisterBenchmark("ef_gains/in128_out384", bm_ef_gains, 128, 384, 0)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("ef_gains/in512_out128", bm_ef_gains, 512, 128, 0)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("ef_gains/in384_out1152", bm_ef_gains, 384, 1152, 0)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("ef_gains/in1536_out384", bm_ef_gains, 1536, 384, 0)->Unit(benchmark::kMillisecond);
  // Error-feedback blocks (QLinear::ef_block): the DeiT-S fc2 in blocks of 384 and 128.
  benchmark::RegisterBenchmark("ef_gains/in1536_out384_block384", bm_ef_gains, 1536, 384, 384)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("ef_gains/in1536_out384_block128", bm_ef_gains, 1536, 384, 128)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("ef_gains/in384_out1152_block128", bm_ef_gains, 384, 1152, 128)->Unit(benchmark::kMillisecond);
  // The best ISA, and AVX2 too where the best is AVX-512 (AVX2-only CPUs run that build).
  std::vector<Isa> ef_isas = {reparq::best_isa()};
  if (ef_isas[0] != Isa::Avx2 && reparq::isa_available(Isa::Avx2)) ef_isas.push_back(Isa::Avx2);
  for (Isa isa : ef_isas) {
    for (int block : {0, 384, 128}) {
      const std::string name = "ef_rows_197/in1536_block" + std::to_string(block) + "/" + reparq::isa_name(isa);
      benchmark::RegisterBenchmark(name.c_str(), bm_ef_rows, isa, 1536, block)->Unit(benchmark::kMicrosecond);
    }
    for (int block : {0, 128}) {
      const std::string name = "ef_rows_197/in384_block" + std::to_string(block) + "/" + reparq::isa_name(isa);
      benchmark::RegisterBenchmark(name.c_str(), bm_ef_rows, isa, 384, block)->Unit(benchmark::kMicrosecond);
    }
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
