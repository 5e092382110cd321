// bench_gemm.cpp: reparq's integer GEMM per ISA (int8 and int4 weights, float epilogue) against
// oneDNN's int8 matmul in the same process, single thread, on transformer shapes (M x K -> N).
// Reports GOPS = 2*M*N*K / time as a counter and, at the end, a table of GOPS and ratios to
// oneDNN per shape (best run of each benchmark, so background load biases both sides alike).
//
//   build-gemm/tests/bench_gemm [--benchmark_repetitions=3] [--benchmark_filter=...]
#include <benchmark/benchmark.h>
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu.h"
#include "kernels/gemm.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace {

using reparq::Isa;

struct Shape {
  int m, k, n;
};

std::string shape_name(const Shape& s) {
  return std::to_string(s.m) + "x" + std::to_string(s.k) + "->" + std::to_string(s.n);
}

struct Inputs {
  std::vector<std::uint8_t> a;
  std::vector<std::int8_t> w8, w4;  // N x K
  std::vector<float> sw, bias;
};

Inputs make_inputs(const Shape& s) {
  std::mt19937 rng(1234);
  Inputs in;
  in.a.resize(static_cast<size_t>(s.m) * s.k);
  for (auto& v : in.a) v = static_cast<std::uint8_t>(rng());
  in.w8.resize(static_cast<size_t>(s.n) * s.k);
  in.w4.resize(in.w8.size());
  for (size_t i = 0; i < in.w8.size(); ++i) {
    in.w8[i] = static_cast<std::int8_t>(rng());
    in.w4[i] = static_cast<std::int8_t>(static_cast<int>(rng() % 16) - 8);
  }
  in.sw.assign(s.n, 0.01f);
  in.bias.assign(s.n, 0.5f);
  return in;
}

double ops(const Shape& s) { return 2.0 * s.m * s.n * s.k; }

// cold = true: cycle through enough copies of the weights (>= 96 MB of int8) that every call
// streams its weights from DRAM, as a layer does in a whole-model run; else weights stay cached.
void bm_reparq(benchmark::State& state, Shape s, Isa isa, int bits, bool cold) {
  const Inputs in = make_inputs(s);
  const double w8_bytes = static_cast<double>(s.n) * s.k;
  const int copies = cold ? std::max(1, static_cast<int>(96e6 / w8_bytes + 0.999)) : 1;
  std::vector<reparq::PackedWeights> ws;
  for (int i = 0; i < copies; ++i) {
    ws.push_back(reparq::pack_weights(bits == 8 ? in.w8.data() : in.w4.data(), s.n, s.k, bits,
                                      nullptr, isa));
  }
  std::vector<float> y(static_cast<size_t>(s.m) * s.n);
  reparq::GemmArgs g;
  g.m = s.m;
  g.a = in.a.data();
  g.lda = s.k;
  g.za = 128;
  g.epilogue = reparq::Epilogue::Float;
  g.out = y.data();
  g.ldo = s.n;
  g.sa = 0.02f;
  g.sw = in.sw.data();
  g.bias = in.bias.data();
  size_t next = 0;
  for (auto _ : state) {
    reparq::gemm(ws[next], g);
    next = next + 1 == ws.size() ? 0 : next + 1;
    benchmark::ClobberMemory();
  }
  state.counters["GOPS"] = benchmark::Counter(ops(s) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(reparq::gemm_kernel_name(ws[0]) + std::string(cold ? " cold" : ""));
}

// oneDNN matmul u8 x s8: dst s32 (plain) or f32 with per-output-channel scales.
void bm_onednn(benchmark::State& state, Shape s, bool f32_scaled) {
  using namespace dnnl;
  using dt = memory::data_type;
  using tag = memory::format_tag;
  const Inputs in = make_inputs(s);
  engine eng(engine::kind::cpu, 0);
  stream strm(eng);
  const memory::desc a_md({s.m, s.k}, dt::u8, tag::ab);
  const memory::desc w_any({s.k, s.n}, dt::s8, tag::any);
  const memory::desc w_plain({s.k, s.n}, dt::s8, tag::ab);
  const memory::desc c_md({s.m, s.n}, f32_scaled ? dt::f32 : dt::s32, tag::ab);
  primitive_attr attr;
  if (f32_scaled) {
    std::vector<float> scales(s.n);
    for (int i = 0; i < s.n; ++i) scales[i] = 0.02f * in.sw[i];
    attr.set_output_scales(1 << 1, scales);
  }
  const matmul::primitive_desc pd(matmul::desc(a_md, w_any, c_md), attr, eng);
  // K x N plain weights from our N x K.
  std::vector<std::int8_t> wt(static_cast<size_t>(s.k) * s.n);
  for (int n = 0; n < s.n; ++n)
    for (int k = 0; k < s.k; ++k) wt[static_cast<size_t>(k) * s.n + n] = in.w8[static_cast<size_t>(n) * s.k + k];
  memory w_src(w_plain, eng, wt.data());
  memory w_mem(pd.weights_desc(), eng);
  reorder(w_src, w_mem).execute(strm, w_src, w_mem);
  memory a_mem(a_md, eng, const_cast<std::uint8_t*>(in.a.data()));
  memory c_mem(c_md, eng);
  const matmul prim(pd);
  const std::unordered_map<int, memory> args = {
      {DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, w_mem}, {DNNL_ARG_DST, c_mem}};
  for (auto _ : state) {
    prim.execute(strm, args);
    strm.wait();
  }
  state.counters["GOPS"] = benchmark::Counter(ops(s) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  const char* impl = nullptr;
  dnnl_primitive_desc_query(pd.get(), dnnl_query_impl_info_str, 0, &impl);
  state.SetLabel(impl != nullptr ? impl : "");
}

// Collects the best GOPS of each benchmark and prints the per-shape table at the end.
class TableReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs) {
      if (r.run_type != Run::RT_Iteration || r.error_occurred) continue;
      const auto it = r.counters.find("GOPS");
      if (it == r.counters.end()) continue;
      double& best = best_[r.run_name.function_name];
      best = std::max(best, static_cast<double>(it->second));
    }
    ConsoleReporter::ReportRuns(runs);
  }

  void Finalize() override {
    ConsoleReporter::Finalize();
    std::printf("\nGOPS (best run), single thread; ratios are to oneDNN u8s8->f32 with per-channel scales\n");
    std::printf("%-18s %9s %9s | %9s %9s %9s %9s %9s | %7s %7s %7s\n", "shape MxK->N", "dnnl_s32",
                "dnnl_f32", "vnni_i8", "vnni_i4", "avx2_i8", "avx2_i4", "scalar", "i8/dnnl", "i4/dnnl",
                "i4/i8");
    for (const std::string& shape : shapes_) {
      auto get = [&](const std::string& what) {
        const auto it = best_.find(what + "/" + shape);
        return it == best_.end() ? 0.0 : it->second;
      };
      const double s32 = get("onednn_s32"), f32 = get("onednn_f32"), v8 = get("reparq/avx512vnni/int8"),
                   v4 = get("reparq/avx512vnni/int4"), a8 = get("reparq/avx2/int8"),
                   a4 = get("reparq/avx2/int4"), sc = get("reparq/scalar/int8");
      auto ratio = [](double x, double y) { return (x > 0 && y > 0) ? x / y : 0.0; };
      std::printf("%-18s %9.1f %9.1f | %9.1f %9.1f %9.1f %9.1f %9.1f | %7.3f %7.3f %7.3f\n", shape.c_str(),
                  s32, f32, v8, v4, a8, a4, sc, ratio(v8, f32), ratio(v4, f32), ratio(v4, v8));
    }
    std::printf("\nSmall M, int4 vs int8 weights: hot = weights stay in cache between calls, cold = "
                "each call streams its weights from DRAM (copies cycled)\n");
    std::printf("%-18s %-11s %9s %9s %7s | %9s %9s %7s\n", "shape MxK->N", "isa", "hot_i8", "hot_i4",
                "i4/i8", "cold_i8", "cold_i4", "i4/i8");
    for (const std::string& shape : shapes_) {
      for (const char* isa : {"avx512vnni", "avx2"}) {
        const double hot8 = best_or_zero("reparq/" + std::string(isa) + "/int8/" + shape);
        const double hot4 = best_or_zero("reparq/" + std::string(isa) + "/int4/" + shape);
        const double cold8 = best_or_zero("reparq_cold/" + std::string(isa) + "/int8/" + shape);
        const double cold4 = best_or_zero("reparq_cold/" + std::string(isa) + "/int4/" + shape);
        if (cold8 == 0.0 && cold4 == 0.0) continue;
        std::printf("%-18s %-11s %9.1f %9.1f %7.3f | %9.1f %9.1f %7.3f\n", shape.c_str(), isa, hot8,
                    hot4, hot8 > 0 ? hot4 / hot8 : 0.0, cold8, cold4, cold8 > 0 ? cold4 / cold8 : 0.0);
      }
    }
  }

  double best_or_zero(const std::string& name) const {
    const auto it = best_.find(name);
    return it == best_.end() ? 0.0 : it->second;
  }

  std::vector<std::string> shapes_;

 private:
  std::map<std::string, double> best_;
};

}  // namespace

int main(int argc, char** argv) {
  omp_set_num_threads(1);  // oneDNN (OpenMP runtime) on one thread, like our gemm(pool = nullptr)
  const std::vector<Shape> big = {
      {197, 384, 1152}, {197, 384, 384},  {197, 384, 1536},  {197, 1536, 384}, {1576, 384, 1152},
      {1576, 384, 384}, {1576, 384, 1536}, {1576, 1536, 384}, {197, 768, 3072},
  };
  std::vector<Shape> small;
  for (int m : {1, 4, 16}) {
    for (const Shape& kn : {Shape{0, 384, 1152}, Shape{0, 768, 3072}, Shape{0, 4096, 11008}}) {
      small.push_back({m, kn.k, kn.n});
    }
  }
  TableReporter reporter;
  std::vector<Shape> all = big;
  all.insert(all.end(), small.begin(), small.end());
  for (const Shape& s : all) {
    const std::string name = shape_name(s);
    reporter.shapes_.push_back(name);
    benchmark::RegisterBenchmark(("onednn_s32/" + name).c_str(), bm_onednn, s, false);
    benchmark::RegisterBenchmark(("onednn_f32/" + name).c_str(), bm_onednn, s, true);
    for (Isa isa : {Isa::Avx512Vnni, Isa::Avx2, Isa::Scalar}) {
      if (!reparq::isa_available(isa)) continue;
      for (int bits : {8, 4}) {
        if (isa == Isa::Scalar && (bits == 4 || s.m > 197)) continue;  // slow; one scalar point per shape
        const std::string bname = std::string("reparq/") + reparq::isa_name(isa) + "/int" +
                                  std::to_string(bits) + "/" + name;
        benchmark::RegisterBenchmark(bname.c_str(), bm_reparq, s, isa, bits, false);
        if (s.m <= 16 && isa != Isa::Scalar) {
          const std::string cname = std::string("reparq_cold/") + reparq::isa_name(isa) + "/int" +
                                    std::to_string(bits) + "/" + name;
          benchmark::RegisterBenchmark(cname.c_str(), bm_reparq, s, isa, bits, true);
        }
      }
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  std::printf("CPU best ISA: %s\n", reparq::isa_name(reparq::detected_isa()));
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
