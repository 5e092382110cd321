// bench_gemm.cpp: reparq's integer GEMM per ISA (int8 and int4 weights, float epilogue) against
// oneDNN's int8 matmul in the same process, single thread, on transformer shapes (M x K -> N).
//
// Two modes:
//   bench_gemm [Google Benchmark flags]
//       one benchmark per (shape, implementation); GOPS = 2*M*N*K / CPU time as a counter; at the
//       end a table of the best GOPS per shape with ratios to oneDNN, and a small-M table of int4
//       vs int8 weights, hot (weights cached) and cold (every call streams weights from DRAM).
//   bench_gemm --interleaved[=SECONDS_PER_SHAPE] [--only=SUBSTRING_OF_SHAPE_NAME]
//       for each shape, alternates single calls of oneDNN and of each of our kernels and
//       compares median per-call thread CPU times: background load hits both sides alike, which
//       is the robust ratio on a shared, noisy machine.
// Rates use CPU time: on a shared machine the process is descheduled, which wall time would count.
#include <benchmark/benchmark.h>
#include <omp.h>
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
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

double ops(const Shape& s) { return 2.0 * s.m * s.n * s.k; }

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

// Ours: u8 A (za = 128) x int8 or int4 weights (zw = 0) -> float with per-channel scales + bias.
// cold = true: cycles through enough copies of the weights (>= 96 MB of int8) that every call
// streams its weights from DRAM, as a layer does in a whole-model run.
class ReparqRunner {
 public:
  ReparqRunner(const Shape& s, Isa isa, int bits, bool cold) : in_(make_inputs(s)) {
    const double w8_bytes = static_cast<double>(s.n) * s.k;
    const int copies = cold ? std::max(1, static_cast<int>(96e6 / w8_bytes + 0.999)) : 1;
    for (int i = 0; i < copies; ++i) {
      ws_.push_back(reparq::pack_weights(bits == 8 ? in_.w8.data() : in_.w4.data(), s.n, s.k,
                                         bits, nullptr, isa));
    }
    y_.resize(static_cast<size_t>(s.m) * s.n);
    g_.m = s.m;
    g_.a = in_.a.data();
    g_.lda = s.k;
    g_.za = 128;
    g_.epilogue = reparq::Epilogue::Float;
    g_.out = y_.data();
    g_.ldo = s.n;
    g_.sa = 0.02f;
    g_.sw = in_.sw.data();
    g_.bias = in_.bias.data();
  }
  void run() {
    reparq::gemm(ws_[next_], g_);
    next_ = next_ + 1 == ws_.size() ? 0 : next_ + 1;
  }
  const char* kernel() const { return reparq::gemm_kernel_name(ws_[0]); }

 private:
  Inputs in_;
  std::vector<reparq::PackedWeights> ws_;
  std::vector<float> y_;
  reparq::GemmArgs g_;
  size_t next_ = 0;
};

// oneDNN matmul u8 x s8 (weights in oneDNN's preferred blocked layout, reordered once):
// dst s32, or f32 with per-output-channel scales.
class OnednnRunner {
 public:
  OnednnRunner(const Shape& s, bool f32_scaled)
      : in_(make_inputs(s)), eng_(dnnl::engine::kind::cpu, 0), strm_(eng_) {
    using dt = dnnl::memory::data_type;
    using tag = dnnl::memory::format_tag;
    const dnnl::memory::desc a_md({s.m, s.k}, dt::u8, tag::ab);
    const dnnl::memory::desc w_any({s.k, s.n}, dt::s8, tag::any);
    const dnnl::memory::desc w_plain({s.k, s.n}, dt::s8, tag::ab);
    const dnnl::memory::desc c_md({s.m, s.n}, f32_scaled ? dt::f32 : dt::s32, tag::ab);
    dnnl::primitive_attr attr;
    if (f32_scaled) {
      std::vector<float> scales(s.n);
      for (int i = 0; i < s.n; ++i) scales[i] = 0.02f * in_.sw[i];
      attr.set_output_scales(1 << 1, scales);
    }
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, w_any, c_md), attr, eng_);
    std::vector<std::int8_t> wt(static_cast<size_t>(s.k) * s.n);  // K x N from our N x K
    for (int n = 0; n < s.n; ++n)
      for (int k = 0; k < s.k; ++k)
        wt[static_cast<size_t>(k) * s.n + n] = in_.w8[static_cast<size_t>(n) * s.k + k];
    dnnl::memory w_src(w_plain, eng_, wt.data());
    dnnl::memory w_mem(pd.weights_desc(), eng_);
    dnnl::reorder(w_src, w_mem).execute(strm_, w_src, w_mem);
    strm_.wait();
    dnnl::memory a_mem(a_md, eng_, in_.a.data());
    dnnl::memory c_mem(c_md, eng_);
    prim_ = dnnl::matmul(pd);
    args_ = {{DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, w_mem}, {DNNL_ARG_DST, c_mem}};
    const char* impl = nullptr;
    dnnl_primitive_desc_query(pd.get(), dnnl_query_impl_info_str, 0, &impl);
    impl_ = impl != nullptr ? impl : "";
  }
  void run() {
    prim_.execute(strm_, args_);
    strm_.wait();
  }
  const char* kernel() const { return impl_.c_str(); }

 private:
  Inputs in_;
  dnnl::engine eng_;
  dnnl::stream strm_;
  dnnl::matmul prim_;
  std::unordered_map<int, dnnl::memory> args_;
  std::string impl_;
};

template <class Runner>
void bm_run(benchmark::State& state, std::shared_ptr<std::function<Runner*()>> make, Shape s) {
  std::unique_ptr<Runner> r((*make)());
  for (auto _ : state) {
    r->run();
    benchmark::ClobberMemory();
  }
  state.counters["GOPS"] = benchmark::Counter(ops(s) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(r->kernel());
}

// Collects the best GOPS of each benchmark and prints the per-shape tables at the end.
class TableReporter : public benchmark::ConsoleReporter {
 public:
  std::vector<std::string> shapes;

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
    std::printf("\nGOPS (best run, CPU time), single thread; ratios to oneDNN u8s8->f32 with per-channel scales\n");
    std::printf("%-16s %8s %8s | %8s %8s %8s %8s %7s | %7s %7s %7s\n", "shape MxK->N", "dnnl_s32",
                "dnnl_f32", "vnni_i8", "vnni_i4", "avx2_i8", "avx2_i4", "scalar", "i8/dnnl", "i4/dnnl", "i4/i8");
    for (const std::string& shape : shapes) {
      const double s32 = get("onednn_s32/" + shape), f32 = get("onednn_f32/" + shape),
                   v8 = get("reparq/avx512vnni/int8/" + shape), v4 = get("reparq/avx512vnni/int4/" + shape),
                   a8 = get("reparq/avx2/int8/" + shape), a4 = get("reparq/avx2/int4/" + shape),
                   sc = get("reparq/scalar/int8/" + shape);
      if (s32 + f32 + v8 + v4 + a8 + a4 + sc == 0.0) continue;
      std::printf("%-16s %8.1f %8.1f | %8.1f %8.1f %8.1f %8.1f %7.1f | %7.3f %7.3f %7.3f\n", shape.c_str(),
                  s32, f32, v8, v4, a8, a4, sc, ratio(v8, f32), ratio(v4, f32), ratio(v4, v8));
    }
    std::printf("\nSmall M, int4 vs int8 weights: hot = weights stay cached between calls, cold = each "
                "call streams its weights from DRAM\n");
    std::printf("%-16s %-11s %8s %8s %7s | %8s %8s %7s\n", "shape MxK->N", "isa", "hot_i8", "hot_i4",
                "i4/i8", "cold_i8", "cold_i4", "i4/i8");
    for (const std::string& shape : shapes) {
      for (const std::string isa : {"avx512vnni", "avx2"}) {
        const double h8 = get("reparq/" + isa + "/int8/" + shape), h4 = get("reparq/" + isa + "/int4/" + shape),
                     c8 = get("reparq_cold/" + isa + "/int8/" + shape),
                     c4 = get("reparq_cold/" + isa + "/int4/" + shape);
        if (c8 + c4 == 0.0) continue;
        std::printf("%-16s %-11s %8.1f %8.1f %7.3f | %8.1f %8.1f %7.3f\n", shape.c_str(), isa.c_str(), h8,
                    h4, ratio(h4, h8), c8, c4, ratio(c4, c8));
      }
    }
  }

 private:
  static double ratio(double x, double y) { return (x > 0 && y > 0) ? x / y : 0.0; }
  double get(const std::string& name) const {
    const auto it = best_.find(name);
    return it == best_.end() ? 0.0 : it->second;
  }
  std::map<std::string, double> best_;
};

double thread_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

// Alternates one call of each contender per round for `seconds` of CPU time per shape.
void run_interleaved(const std::vector<Shape>& shapes, double seconds) {
  std::printf("Interleaved comparison: median per-call thread CPU time, single thread, %.1f s per shape\n", seconds);
  std::printf("GOPS from the median; ratios to oneDNN u8s8->f32 with per-channel scales (same rounds)\n");
  std::printf("%-16s %8s %8s | %8s %8s %8s %8s | %7s %7s %7s %7s | %6s\n", "shape MxK->N", "dnnl_s32",
              "dnnl_f32", "vnni_i8", "vnni_i4", "avx2_i8", "avx2_i4", "v8/dnnl", "v4/dnnl", "v4/v8", "a8/dnnl",
              "rounds");
  for (const Shape& s : shapes) {
    std::vector<std::pair<std::string, std::function<void()>>> contenders;
    auto d32 = std::make_shared<OnednnRunner>(s, false);
    auto d32f = std::make_shared<OnednnRunner>(s, true);
    contenders.push_back({"dnnl_s32", [d32] { d32->run(); }});
    contenders.push_back({"dnnl_f32", [d32f] { d32f->run(); }});
    for (Isa isa : {Isa::Avx512Vnni, Isa::Avx2}) {
      for (int bits : {8, 4}) {
        const std::string name = std::string(isa == Isa::Avx512Vnni ? "vnni" : "avx2") + "_i" + std::to_string(bits);
        if (!reparq::isa_available(isa)) continue;
        auto r = std::make_shared<ReparqRunner>(s, isa, bits, false);
        contenders.push_back({name, [r] { r->run(); }});
      }
    }
    for (auto& c : contenders) c.second();  // warm up
    std::map<std::string, std::vector<double>> times;
    const double start = thread_cpu_seconds();
    int rounds = 0;
    while (thread_cpu_seconds() - start < seconds || rounds < 5) {
      for (auto& c : contenders) {
        const double t0 = thread_cpu_seconds();
        c.second();
        times[c.first].push_back(thread_cpu_seconds() - t0);
      }
      ++rounds;
    }
    auto gops = [&](const std::string& name) {
      const auto it = times.find(name);
      return it == times.end() ? 0.0 : ops(s) * 1e-9 / median(it->second);
    };
    const double s32 = gops("dnnl_s32"), f32 = gops("dnnl_f32"), v8 = gops("vnni_i8"), v4 = gops("vnni_i4"),
                 a8 = gops("avx2_i8"), a4 = gops("avx2_i4");
    auto ratio = [](double x, double y) { return (x > 0 && y > 0) ? x / y : 0.0; };
    std::printf("%-16s %8.1f %8.1f | %8.1f %8.1f %8.1f %8.1f | %7.3f %7.3f %7.3f %7.3f | %6d\n",
                shape_name(s).c_str(), s32, f32, v8, v4, a8, a4, ratio(v8, f32), ratio(v4, f32), ratio(v4, v8),
                ratio(a8, f32), rounds);
    std::fflush(stdout);
  }
}

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
  std::vector<Shape> all = big;
  all.insert(all.end(), small.begin(), small.end());
  std::printf("CPU best ISA: %s\n", reparq::isa_name(reparq::detected_isa()));

  // --interleaved[=SECONDS] [--only=SUBSTRING]: the interleaved comparison, on the shapes whose
  // name contains SUBSTRING (e.g. --only=x384- ).
  double interleaved = 0.0;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--interleaved", 13) == 0) {
      interleaved = argv[i][13] == '=' ? std::atof(argv[i] + 14) : 2.0;
    } else if (std::strncmp(argv[i], "--only=", 7) == 0) {
      only = argv[i] + 7;
    }
  }
  if (interleaved > 0.0) {
    std::vector<Shape> chosen;
    for (const Shape& s : all) {
      if (shape_name(s).find(only) != std::string::npos) chosen.push_back(s);
    }
    run_interleaved(chosen, interleaved);
    return 0;
  }

  TableReporter reporter;
  for (const Shape& s : all) {
    const std::string name = shape_name(s);
    reporter.shapes.push_back(name);
    for (bool f32 : {false, true}) {
      auto make = std::make_shared<std::function<OnednnRunner*()>>([s, f32] { return new OnednnRunner(s, f32); });
      benchmark::RegisterBenchmark(((f32 ? "onednn_f32/" : "onednn_s32/") + name).c_str(), bm_run<OnednnRunner>,
                                   make, s);
    }
    for (Isa isa : {Isa::Avx512Vnni, Isa::Avx2, Isa::Scalar}) {
      if (!reparq::isa_available(isa)) continue;
      for (int bits : {8, 4}) {
        if (isa == Isa::Scalar && (bits == 4 || s.m > 197)) continue;  // slow: one scalar point per shape
        for (bool cold : {false, true}) {
          if (cold && (s.m > 16 || isa == Isa::Scalar)) continue;
          const std::string bname = std::string(cold ? "reparq_cold/" : "reparq/") + reparq::isa_name(isa) +
                                    "/int" + std::to_string(bits) + "/" + name;
          auto make = std::make_shared<std::function<ReparqRunner*()>>(
              [s, isa, bits, cold] { return new ReparqRunner(s, isa, bits, cold); });
          benchmark::RegisterBenchmark(bname.c_str(), bm_run<ReparqRunner>, make, s);
        }
      }
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
