// cmd_exec.cpp: `reparq run` (classify images with the integer executor) and `reparq bench`
// (executor latency against LibTorch FP32 and PyTorch dynamic int8, measured in the same run).
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_NO_STDIO_WARNINGS
#include <stb/stb_image.h>

#include "apps/commands.h"
#include "calib/data.h"
#include "calib/sysinfo.h"
#include "calib/vit.h"
#include "kernels/cpu.h"
#include "kernels/error.h"
#include "kernels/executor.h"
#include "kernels/qmodel.h"

#ifndef REPARQ_SOURCE_DIR
#define REPARQ_SOURCE_DIR "."
#endif

namespace reparq {
namespace {

using Clock = std::chrono::steady_clock;

// ---- inputs -------------------------------------------------------------------------------

std::vector<uint8_t> read_file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw InputError(path + ": cannot open file");
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

// Binary PGM (P5), 8-bit. Header: "P5" ws width ws height ws maxval, one whitespace, data;
// '#' comments allowed between header fields.
std::vector<uint8_t> read_pgm(const std::string& path, const std::vector<uint8_t>& b, int64_t* w, int64_t* h) {
  size_t pos = 2;
  auto field = [&](const char* what) -> int64_t {
    for (;;) {
      while (pos < b.size() && std::isspace(b[pos])) ++pos;
      if (pos < b.size() && b[pos] == '#') {
        while (pos < b.size() && b[pos] != '\n') ++pos;
        continue;
      }
      break;
    }
    int64_t v = 0;
    size_t start = pos;
    while (pos < b.size() && std::isdigit(b[pos]) && pos - start < 9) v = v * 10 + (b[pos++] - '0');
    if (pos == start) throw InputError(path + ": PGM header: bad or missing " + what);
    return v;
  };
  *w = field("width");
  *h = field("height");
  const int64_t maxval = field("maxval");
  if (maxval < 1 || maxval > 255) throw InputError(path + ": PGM maxval " + std::to_string(maxval) + " is not supported (8-bit only)");
  if (pos >= b.size() || !std::isspace(b[pos])) throw InputError(path + ": PGM header is not followed by whitespace");
  ++pos;
  const size_t need = size_t(*w) * size_t(*h);
  if (*w <= 0 || *h <= 0 || b.size() - pos < need)
    throw InputError(path + ": PGM data truncated (" + std::to_string(b.size() - pos) + " bytes, expected " + std::to_string(need) + ")");
  std::vector<uint8_t> px(b.begin() + pos, b.begin() + pos + need);
  if (maxval != 255)
    for (uint8_t& p : px) p = uint8_t(std::min<int64_t>(255, (int64_t(p) * 255 + maxval / 2) / maxval));
  return px;
}

std::vector<uint8_t> read_image(const std::string& path, int64_t size) {
  const std::vector<uint8_t> b = read_file_bytes(path);
  int64_t w = 0, h = 0;
  std::vector<uint8_t> px;
  static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (b.size() >= 2 && b[0] == 'P' && b[1] == '5') {
    px = read_pgm(path, b, &w, &h);
  } else if (b.size() >= 8 && std::memcmp(b.data(), kPng, 8) == 0) {
    int iw = 0, ih = 0, comp = 0;
    unsigned char* d = stbi_load_from_memory(b.data(), int(b.size()), &iw, &ih, &comp, 1);
    if (d == nullptr) throw InputError(path + ": cannot decode PNG (" + stbi_failure_reason() + ")");
    w = iw;
    h = ih;
    px.assign(d, d + size_t(iw) * size_t(ih));
    stbi_image_free(d);
  } else {
    throw InputError(path + ": not a binary PGM (P5) or PNG file");
  }
  if (w != size || h != size)
    throw InputError(path + ": image is " + std::to_string(w) + "x" + std::to_string(h) + ", the model expects " +
                     std::to_string(size) + "x" + std::to_string(size) + " (resize it first)");
  return px;
}

struct Input {
  std::string name;
  int label = -1;
};

// ---- run ----------------------------------------------------------------------------------

struct RunArgs {
  CommonOptions c;
  std::string model;
  std::vector<std::string> inputs;
  int topk = 5;
  std::string isa;
};

Isa choose_isa(const std::string& flag) {
  if (!flag.empty()) set_isa_cap(parse_isa(flag, "--isa"));
  return best_isa();
}

int run_run(RunArgs& a) {
  if (a.c.threads < 1) throw UsageError("--threads must be positive");
  if (a.topk < 1) throw UsageError("--topk must be >= 1");
  const Isa isa = choose_isa(a.isa);
  const QuantModel m = load_quant_model(a.model);
  const int64_t S = m.image_size, classes = m.num_classes;
  std::vector<uint8_t> pixels;
  std::vector<Input> inputs;
  std::unique_ptr<ImageSet> test;
  for (const std::string& in : a.inputs) {
    if (in.rfind("test:", 0) == 0) {
      const std::string spec = in.substr(5);
      int64_t lo = 0, hi = 0;
      char dash = 0;
      std::istringstream is(spec);
      if (!(is >> lo) || (is >> dash && (dash != '-' || !(is >> hi)))) throw UsageError("'" + in + "': expected test:N or test:N-M");
      if (!dash) hi = lo;
      if (!test) test.reset(new ImageSet(load_fashion_mnist(data_dir(a.c.data_dir), false)));
      if (lo < 0 || hi < lo || hi >= test->count)
        throw UsageError("'" + in + "': test-set indices must satisfy 0 <= N <= M < " + std::to_string(test->count));
      if (test->rows != S || test->cols != S)
        throw InputError("test set images are " + std::to_string(test->rows) + "x" + std::to_string(test->cols) +
                         ", the model expects " + std::to_string(S) + "x" + std::to_string(S));
      for (int64_t i = lo; i <= hi; ++i) {
        pixels.insert(pixels.end(), test->image(i), test->image(i) + S * S);
        inputs.push_back({"test:" + std::to_string(i), test->labels[i]});
      }
    } else {
      std::vector<uint8_t> px = read_image(in, S);
      pixels.insert(pixels.end(), px.begin(), px.end());
      inputs.push_back({in, -1});
    }
  }
  Executor ex(m, isa, a.c.threads);
  const int64_t n = int64_t(inputs.size());
  std::vector<float> logits(n * classes);
  const auto t0 = Clock::now();
  for (int64_t i = 0; i < n; i += 32) ex.run(pixels.data() + i * S * S, std::min<int64_t>(32, n - i), logits.data() + i * classes);
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  const int k = int(std::min<int64_t>(a.topk, classes));
  auto class_name = [&](int c) { return classes == 10 ? std::string(kClassNames[c]) : "class " + std::to_string(c); };
  nlohmann::json jres = nlohmann::json::array();
  int correct = 0, labelled = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float* l = logits.data() + i * classes;
    const float mx = *std::max_element(l, l + classes);
    std::vector<double> p(classes);
    double sum = 0;
    for (int64_t c = 0; c < classes; ++c) sum += (p[c] = std::exp(double(l[c]) - mx));
    std::vector<int> order(classes);
    for (int c = 0; c < int(classes); ++c) order[c] = c;
    std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return l[x] > l[y]; });
    if (inputs[i].label >= 0) {
      ++labelled;
      correct += order[0] == inputs[i].label;
    }
    if (a.c.json) {
      nlohmann::json top = nlohmann::json::array();
      for (int j = 0; j < k; ++j)
        top.push_back({{"class", order[j]}, {"name", class_name(order[j])}, {"prob", p[order[j]] / sum}, {"logit", l[order[j]]}});
      nlohmann::json r = {{"input", inputs[i].name}, {"top", top}};
      if (inputs[i].label >= 0) r["label"] = inputs[i].label;
      jres.push_back(r);
    } else {
      std::printf("%s", inputs[i].name.c_str());
      if (inputs[i].label >= 0) std::printf(" (label: %s)", class_name(inputs[i].label).c_str());
      std::printf("\n");
      for (int j = 0; j < k; ++j) std::printf("  %2d. %-12s %6.2f %%\n", j + 1, class_name(order[j]).c_str(), 100.0 * p[order[j]] / sum);
    }
  }
  if (a.c.json) {
    nlohmann::json j = {{"model", a.model}, {"isa", isa_name(isa)}, {"threads", a.c.threads}, {"results", jres},
                        {"seconds", secs}};
    if (labelled) j["top1_correct"] = correct, j["labelled"] = labelled;
    std::printf("%s\n", j.dump(2).c_str());
  } else if (labelled > 1) {
    std::printf("top-1 correct: %d / %d\n", correct, labelled);
  }
  return 0;
}

// ---- bench --------------------------------------------------------------------------------

struct BenchArgs {
  CommonOptions c;
  std::string model;
  std::string isa;
  std::vector<int> threads = {1, 2};
  std::vector<int> batches = {1, 32};
  int repeats = 9;
  bool no_deit = false;
  bool deit_ef = false;
  bool no_python = false;
  bool profile = false;
  bool omp_active = false;
};

// A DeiT-S-shaped quantized model with random weights and plausible quantizers. abits 4: the
// activations 4-bit, and ef_block >= 0: error-feedback rounding (damping 0.1) at every block
// Linear's input, in blocks of ef_block columns (0 = whole rows).
QuantModel random_quant_model(const VitConfig& cfg, int wbits, uint32_t seed, int abits = 8, int ef_block = -1) {
  std::mt19937 rng(seed);
  QuantModel m;
  m.arch = cfg.arch;
  m.image_size = cfg.image_size;
  m.patch = cfg.patch;
  m.in_chans = cfg.in_chans;
  m.dim = cfg.dim;
  m.depth = cfg.depth;
  m.heads = cfg.heads;
  m.mlp_hidden = cfg.mlp_hidden;
  m.num_classes = cfg.num_classes;
  m.ln_eps = cfg.ln_eps;
  const int64_t D = cfg.dim, T = m.tokens();
  std::normal_distribution<float> nd(0.f, 1.f);
  auto lin = [&](int64_t out, int64_t in, ActQuant input) {
    QLinear l;
    l.out = out;
    l.in = in;
    l.wbits = wbits;
    const int lo = -(1 << (wbits - 1)), hi = (1 << (wbits - 1)) - 1;
    std::uniform_int_distribution<int> wd(lo, hi);
    l.w.resize(out * in);
    for (int8_t& w : l.w) w = int8_t(wd(rng));
    const float sc = float(1.0 / std::sqrt(double(in)) / ((1 << wbits) / std::sqrt(12.0)));
    l.w_zero.assign(out, 0);
    l.w_scale.assign(out, sc);
    l.bias.assign(out, 0.0f);
    for (float& b : l.bias) b = 0.05f * nd(rng);
    l.input = input;
    return l;
  };
  const bool a4 = abits == 4;
  const ActQuant ln_q = a4 ? ActQuant{4, 6.0f / 15, 8, {}} : ActQuant{8, 6.0f / 255, 128, {}};
  const ActQuant v_q = a4 ? ActQuant{4, 8.0f / 15, 8, {}} : ActQuant{8, 8.0f / 255, 128, {}};
  const ActQuant gelu_q = a4 ? ActQuant{4, 4.0f / 15, 1, {}} : ActQuant{8, 4.0f / 255, 10, {}};
  m.patch_embed = lin(D, cfg.in_chans * cfg.patch * cfg.patch, ActQuant{8, 1.0f, 0, {}});
  for (float& s : m.patch_embed.w_scale) s /= 128.0f;
  m.cls_token.resize(D);
  for (float& v : m.cls_token) v = 0.02f * nd(rng);
  m.pos_embed.resize(T * D);
  for (float& v : m.pos_embed) v = 0.02f * nd(rng);
  for (int64_t i = 0; i < cfg.depth; ++i) {
    QBlock b;
    b.ln1_w.assign(D, 1.0f);
    b.ln1_b.assign(D, 0.0f);
    b.ln2_w.assign(D, 1.0f);
    b.ln2_b.assign(D, 0.0f);
    b.qkv = lin(3 * D, D, ln_q);
    b.q = b.k = b.v = v_q;
    // 8-bit uniform post-Softmax quantizer, clip scale 1.
    AttnQuant& at = b.attn;
    at.kind = "uniform";
    at.bits = 8;
    at.scale = 1.0f;
    at.lut_scale = 1.0f / 255.0f;
    for (int c = 0; c < 255; ++c) at.thresholds.push_back(float((254.5 - c) / 255.0));
    for (int c = 0; c < 256; ++c) at.lut.push_back(uint8_t(255 - c));
    b.proj = lin(D, D, v_q);
    b.fc1 = lin(cfg.mlp_hidden, D, ln_q);
    b.fc2 = lin(D, cfg.mlp_hidden, gelu_q);
    if (ef_block >= 0)
      for (QLinear* l : {&b.qkv, &b.proj, &b.fc1, &b.fc2}) l->ef_damp = 0.1f, l->ef_block = ef_block;
    m.blocks.push_back(std::move(b));
  }
  m.norm_w.assign(D, 1.0f);
  m.norm_b.assign(D, 0.0f);
  m.head = lin(cfg.num_classes, D, ln_q);
  return m;
}

VitConfig config_of(const QuantModel& m) {
  VitConfig c;
  c.arch = m.arch;
  c.image_size = m.image_size;
  c.patch = m.patch;
  c.in_chans = m.in_chans;
  c.dim = m.dim;
  c.depth = m.depth;
  c.heads = m.heads;
  c.mlp_hidden = m.mlp_hidden;
  c.num_classes = m.num_classes;
  c.ln_eps = m.ln_eps;
  return c;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : (v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]));
}

int64_t proc_status_kb(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const size_t n = std::strlen(key);
  while (std::getline(f, line))
    if (line.compare(0, n, key) == 0 && line.size() > n && line[n] == ':') return std::atoll(line.c_str() + n + 1);
  return -1;
}

void reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  if (f) f << "5";
}

struct PyResult {
  bool ok = false;
  double ms = 0;
  std::string note;
};

PyResult run_python_dynamic_int8(int repeats) {
  PyResult r;
  const std::string script = std::string(REPARQ_SOURCE_DIR) + "/tests/bench/pytorch_dynamic_int8.py";
  if (std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0) {
    r.note = "skipped: /usr/bin/python3 with torch is not available";
    return r;
  }
  if (!std::ifstream(script)) {
    r.note = "skipped: " + script + " not found";
    return r;
  }
  const std::string cmd = "/usr/bin/python3 " + script + " --json --batch 1 --threads 1 --repeats " +
                          std::to_string(std::max(5, repeats)) + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) {
    r.note = "skipped: cannot start /usr/bin/python3";
    return r;
  }
  std::string out;
  char buf[4096];
  while (std::fgets(buf, sizeof buf, p)) out += buf;
  const int rc = pclose(p);
  const size_t brace = out.rfind('{');
  if (rc != 0 || brace == std::string::npos) {
    r.note = "failed: " + out.substr(0, 300);
    return r;
  }
  try {
    nlohmann::json j = nlohmann::json::parse(out.substr(brace));
    r.ms = j.at("dynamic_int8_ms_per_image").get<double>();
    r.ok = true;
    r.note = "PyTorch " + j.value("torch", std::string("?")) + " quantize_dynamic (onednn)";
  } catch (const std::exception& e) {
    r.note = std::string("failed to parse its output: ") + e.what();
  }
  return r;
}

// libgomp reads OMP_WAIT_POLICY once, when it loads: to change it the bench must restart itself.
// Returns only if it did not (already set, not wanted, or exec failed).
void reexec_with_passive_omp_wait(const BenchArgs& a) {
  const bool multi = std::any_of(a.threads.begin(), a.threads.end(), [](int t) { return t > 1; });
  if (!multi || a.omp_active || std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  std::ifstream f("/proc/self/cmdline", std::ios::binary);
  const std::string all((std::istreambuf_iterator<char>(f)), {});
  std::vector<std::string> args;
  for (size_t i = 0; i < all.size();) {
    const size_t end = all.find('\0', i);
    args.push_back(all.substr(i, end == std::string::npos ? std::string::npos : end - i));
    if (end == std::string::npos) break;
    i = end + 1;
  }
  if (args.empty()) return;
  std::vector<char*> argv;
  for (std::string& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);
  setenv("OMP_WAIT_POLICY", "passive", 1);
  std::fflush(stdout);
  execv("/proc/self/exe", argv.data());
  unsetenv("OMP_WAIT_POLICY");  // exec failed: carry on with libgomp's default
}

int run_bench(BenchArgs& a) {
  reexec_with_passive_omp_wait(a);
  for (int t : a.threads)
    if (t < 1) throw UsageError("--threads values must be >= 1");
  for (int b : a.batches)
    if (b < 1) throw UsageError("--batches values must be >= 1");
  if (a.repeats < 1) throw UsageError("--repeats must be >= 1");
  const Isa isa = choose_isa(a.isa);
  torch::NoGradGuard no_grad;

  struct Entry {
    std::string name;
    QuantModel m;
  };
  std::vector<Entry> models;
  if (!a.model.empty()) models.push_back({a.model, load_quant_model(a.model)});
  if (!a.no_deit) {
    VitConfig deit;
    deit.arch = "deit-s-random";
    deit.image_size = 224;
    deit.patch = 16;
    deit.in_chans = 3;
    deit.dim = 384;
    deit.depth = 12;
    deit.heads = 6;
    deit.mlp_hidden = 1536;
    deit.num_classes = 1000;
    models.push_back({"DeiT-S-shaped W8A8 (random)", random_quant_model(deit, 8, 1)});
    models.push_back({"DeiT-S-shaped W4A8 (random)", random_quant_model(deit, 4, 2)});
    if (a.deit_ef) {
      models.push_back({"DeiT-S-shaped W4A4, error feedback (random)", random_quant_model(deit, 4, 3, 4, 0)});
      models.push_back({"DeiT-S-shaped W4A4, error feedback in blocks of 128 (random)", random_quant_model(deit, 4, 3, 4, 128)});
    }
  }
  if (models.empty()) throw UsageError("nothing to benchmark: give --model FILE or drop --no-deit");

  // Peak memory of the executor alone (before any LibTorch model exists), largest batch.
  nlohmann::json jmem = nlohmann::json::array();
  {
    const int bmax = *std::max_element(a.batches.begin(), a.batches.end());
    for (const Entry& e : models) {
      reset_peak_rss();
      const int64_t rss0 = proc_status_kb("VmRSS");
      Executor ex(e.m, isa, 1);
      std::vector<uint8_t> px(size_t(bmax) * e.m.image_size * e.m.image_size, 100);
      std::vector<float> lg(size_t(bmax) * e.m.num_classes);
      ex.run(px.data(), bmax, lg.data());
      const int64_t hwm = proc_status_kb("VmHWM");
      jmem.push_back({{"model", e.name}, {"batch", bmax}, {"vm_hwm_kb", hwm}, {"rss_before_kb", rss0},
                      {"packed_weight_bytes", ex.packed_weight_bytes()}, {"workspace_bytes", ex.workspace_bytes()}});
      if (!a.c.json)
        std::printf("memory  %-30s batch %2d: VmHWM %.1f MB (RSS before the executor %.1f MB; packed weights %.1f MB, workspace %.1f MB)\n",
                    e.name.c_str(), bmax, hwm / 1024.0, rss0 / 1024.0, ex.packed_weight_bytes() / 1048576.0,
                    ex.workspace_bytes() / 1048576.0);
    }
  }

  // File sizes: the quantized file against the FP32 safetensors of the same shape (the sizes
  // depend only on the shapes, so random weights measure them exactly).
  nlohmann::json jsize = nlohmann::json::array();
  {
    namespace fs = std::filesystem;
    const fs::path dir = fs::temp_directory_path();
    const std::string tag = std::to_string(::getpid());
    for (const Entry& e : models) {
      const std::string qp = (dir / ("reparq-bench-" + tag + ".q.safetensors")).string();
      const std::string fpth = (dir / ("reparq-bench-" + tag + ".f.safetensors")).string();
      save_quant_model(e.m, qp);
      torch::manual_seed(0);
      Vit(config_of(e.m)).save(fpth);
      const double qb = double(fs::file_size(qp)), fb = double(fs::file_size(fpth));
      fs::remove(qp);
      fs::remove(fpth);
      jsize.push_back({{"model", e.name}, {"quant_bytes", qb}, {"fp32_bytes", fb}, {"ratio_pct", 100.0 * qb / fb}});
      if (!a.c.json)
        std::printf("file    %-30s %.2f MB vs FP32 %.2f MB: %.1f %% of FP32\n", e.name.c_str(), qb / 1048576.0,
                    fb / 1048576.0, 100.0 * qb / fb);
    }
  }

  // Float models with the same shapes (random init), one per distinct shape.
  nlohmann::json jrows = nlohmann::json::array();
  nlohmann::json jload = nlohmann::json::array();
  std::string blas;
  std::string kernels;
  std::map<std::string, double> fp32_b1t1;
  for (const Entry& e : models) {
    const VitConfig cfg = config_of(e.m);
    torch::manual_seed(0);
    Vit fvit(cfg);
    for (int threads : a.threads) {
      torch::set_num_threads(threads);
      // Construction time: packing the weights and, for error-feedback Linears, their O(in^3)
      // gains (kernels/ef.cpp), on the executor's threads.
      const auto tb = std::chrono::steady_clock::now();
      Executor ex(e.m, isa, threads);
      const double build_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - tb).count();
      jload.push_back({{"model", e.name}, {"threads", threads}, {"executor_build_ms", build_ms}});
      if (!a.c.json) std::printf("load    %-30s threads %d: executor built in %.1f ms\n", e.name.c_str(), threads, build_ms);
      if (kernels.find(ex.kernel_summary()) == std::string::npos) {
        kernels += (kernels.empty() ? "" : " | ") + ex.kernel_summary();
        if (!a.c.json) std::printf("kernels %-30s %s\n", e.name.c_str(), ex.kernel_summary().c_str());
      }
      for (int batch : a.batches) {
        const int64_t S = cfg.image_size;
        std::vector<uint8_t> px(size_t(batch) * S * S);
        std::mt19937 rng(5);
        for (uint8_t& p : px) p = uint8_t(rng() & 255);
        std::vector<float> lg(size_t(batch) * cfg.num_classes);
        at::Tensor img = torch::randn({batch, cfg.in_chans, S, S});
        // One thread: warm-up, then alternate executor and LibTorch calls so background load hits
        // both alike. Several threads: one engine after the other (warm-up, then all its repeats).
        // Interleaving is unfair there: after each LibTorch call its OpenMP workers keep spinning
        // (libgomp's default active wait) while the executor's threads want the same cores.
        // With threads > 1 the bench also runs under OMP_WAIT_POLICY=passive (see
        // reexec_with_passive_omp_wait, --omp-active): on this project's shared 2-core machines
        // (other jobs running) spinning workers steal the time slices their own barriers wait for,
        // and LibTorch's 2-thread forward measured 1100-1400 ms active vs 170-250 ms passive in one
        // run; on an idle machine passive costs LibTorch only a futex wake-up per parallel region.
        // So passive favours LibTorch, never the executor, whose pool does not use OpenMP and
        // sleeps on a condition variable between calls.
        std::vector<double> te, tt;
        const int reps = batch >= 16 ? std::max(3, a.repeats / 3) : a.repeats;
        auto time_executor = [&] {
          auto t0 = Clock::now();
          ex.run(px.data(), batch, lg.data());
          te.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count() / batch);
        };
        auto time_libtorch = [&] {
          auto t0 = Clock::now();
          fvit.forward(img);
          tt.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count() / batch);
        };
        const bool interleave = threads == 1;
        if (interleave) {
          ex.run(px.data(), batch, lg.data());
          fvit.forward(img);
          ex.set_profile(a.profile);
          ex.reset_profile();
          for (int r = 0; r < reps; ++r) {
            time_executor();
            time_libtorch();
          }
          ex.set_profile(false);
        } else {
          ex.run(px.data(), batch, lg.data());
          ex.set_profile(a.profile);
          ex.reset_profile();
          for (int r = 0; r < reps; ++r) time_executor();
          ex.set_profile(false);
          fvit.forward(img);
          for (int r = 0; r < reps; ++r) time_libtorch();
        }
        if (blas.empty()) blas = blas_summary();
        const double me = median(te), mt = median(tt);
        if (threads == 1 && batch == 1) fp32_b1t1[e.name] = mt;
        nlohmann::json row = {{"model", e.name}, {"threads", threads}, {"batch", batch}, {"repeats", reps},
                              {"executor_ms_per_image", me}, {"libtorch_fp32_ms_per_image", mt},
                              {"timing", interleave ? "interleaved" : "sequential"},
                              {"speedup_vs_fp32", mt / me}};
        if (!a.c.json)
          std::printf("bench   %-30s threads %d batch %2d: executor %8.2f ms/img  LibTorch FP32 %8.2f ms/img  speed-up %5.2fx  (%d reps, %s)\n",
                      e.name.c_str(), threads, batch, me, mt, mt / me, reps, interleave ? "interleaved" : "sequential");
        if (a.profile) {
          nlohmann::json prof = nlohmann::json::object();
          double total = 0;
          for (auto& [k, v] : ex.profile()) total += v;
          if (!a.c.json) std::printf("        profile (ms/img, share):");
          for (auto& [k, v] : ex.profile()) {
            const double ms = 1000.0 * v / std::max<int64_t>(1, ex.profiled_images());
            prof[k] = ms;
            if (!a.c.json) std::printf(" %s %.2f (%.0f%%)", k.c_str(), ms, 100.0 * v / std::max(total, 1e-12));
          }
          if (!a.c.json) std::printf("\n");
          row["profile_ms_per_image"] = prof;
        }
        jrows.push_back(row);
        std::fflush(stdout);
      }
    }
  }

  // PyTorch dynamic int8, batch 1, one thread, as a subprocess (DeiT-S shape only). The executor
  // is timed again in the same time window (its repeats right before and right after the
  // subprocess, median of both): the rows above ran minutes earlier, and on a shared machine the
  // load changes in between (one run showed the executor at 102 ms there and at ~45 ms here).
  nlohmann::json jpy;
  if (!a.no_deit && !a.no_python) {
    std::vector<std::unique_ptr<Executor>> exs;
    std::vector<std::vector<double>> times;
    std::vector<std::string> names;
    std::vector<uint8_t> px;
    std::vector<float> lg;
    for (const Entry& e : models) {
      px.resize(std::max(px.size(), size_t(e.m.image_size * e.m.image_size)));
      lg.resize(std::max(lg.size(), size_t(e.m.num_classes)));
    }
    std::mt19937 rng(5);
    for (uint8_t& p : px) p = uint8_t(rng() & 255);
    for (const Entry& e : models)
      if (e.name.rfind("DeiT-S", 0) == 0) {
        exs.emplace_back(new Executor(e.m, isa, 1));
        times.emplace_back();
        names.push_back(e.name);
        exs.back()->run(px.data(), 1, lg.data());
      }
    auto time_all = [&] {
      for (size_t i = 0; i < exs.size(); ++i)
        for (int r = 0; r < a.repeats; ++r) {
          const auto t0 = Clock::now();
          exs[i]->run(px.data(), 1, lg.data());
          times[i].push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
        }
    };
    time_all();
    const PyResult py = run_python_dynamic_int8(a.repeats);
    time_all();
    jpy = {{"ok", py.ok}, {"note", py.note}};
    if (py.ok) {
      jpy["ms_per_image"] = py.ms;
      for (size_t i = 0; i < exs.size(); ++i) {
        const double me = median(times[i]);
        jpy["speedup_" + names[i].substr(14, 4)] = py.ms / me;
        jpy["executor_ms_" + names[i].substr(14, 4)] = me;
        if (!a.c.json)
          std::printf("pytorch %-30s threads 1 batch  1: executor %8.2f ms/img  PyTorch dynamic int8 %8.2f ms/img  speed-up %5.2fx  (executor timed around the subprocess)\n",
                      names[i].c_str(), me, py.ms, py.ms / me);
      }
    }
    if (!a.c.json) std::printf("pytorch dynamic int8: %s\n", py.note.c_str());
  } else if (!a.c.json) {
    std::printf("pytorch dynamic int8: skipped (%s)\n", a.no_python ? "--no-python" : "needs the DeiT-S-shaped model");
  }
  if (a.c.json) {
    nlohmann::json j = {{"isa", isa_name(isa)}, {"kernels", kernels}, {"blas", blas}, {"cpu", cpu_model_name()},
                        {"omp_wait_policy", std::getenv("OMP_WAIT_POLICY") ? std::getenv("OMP_WAIT_POLICY") : "default"},
                        {"memory", jmem}, {"file_sizes", jsize}, {"executor_build", jload}, {"results", jrows}, {"pytorch_dynamic_int8", jpy}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("isa: %s; kernels: %s\n%s\ncpu: %s\nOMP_WAIT_POLICY: %s\n", isa_name(isa), kernels.c_str(), blas.c_str(),
                cpu_model_name().c_str(), std::getenv("OMP_WAIT_POLICY") ? std::getenv("OMP_WAIT_POLICY") : "default (active spin)");
  }
  return 0;
}

}  // namespace

void add_exec_commands(CLI::App& app, CommandList& cmds) {
  static RunArgs ra;
  CLI::App* run = app.add_subcommand("run", "Classify images with the integer executor");
  run->add_option("model", ra.model, "Quantized model (.safetensors from `reparq quantize`)")->required();
  run->add_option("inputs", ra.inputs, "PGM (P5) or PNG files of image_size x image_size, or test:N / test:N-M")->required();
  run->add_option("--topk", ra.topk, "Classes to print per image")->capture_default_str();
  run->add_option("--isa", ra.isa, "Cap the instruction set: scalar | avx2 | avx512vnni");
  run->footer("Examples:\n  reparq run out/vit.w8a8.safetensors test:0-9\n  reparq run out/vit.w8a8.safetensors shoe.pgm --topk 3 --json");
  add_common_options(run, ra.c);
  cmds.push_back({run, [] { return run_run(ra); }});

  static BenchArgs ba;
  CLI::App* bench = app.add_subcommand("bench", "Executor latency vs LibTorch FP32 and PyTorch dynamic int8, same run");
  bench->add_option("--model", ba.model, "Also benchmark this quantized model (against a random float model of its shape)");
  bench->add_option("--isa", ba.isa, "Cap the instruction set: scalar | avx2 | avx512vnni");
  bench->add_option("--threads", ba.threads, "Thread counts to measure")->capture_default_str()->delimiter(',');
  bench->add_option("--batches", ba.batches, "Batch sizes to measure")->capture_default_str()->delimiter(',');
  bench->add_option("--repeats", ba.repeats, "Timed repeats at small batch (a third at batch >= 16); the median counts")->capture_default_str();
  bench->add_flag("--no-deit", ba.no_deit, "Skip the DeiT-S-shaped random models");
  bench->add_flag("--deit-ef", ba.deit_ef, "Also the DeiT-S-shaped W4A4 random model with error-feedback rounding, whole rows and in blocks of 128 (quantize --ef-block)");
  bench->add_flag("--no-python", ba.no_python, "Skip the PyTorch dynamic int8 subprocess");
  bench->add_flag("--profile", ba.profile, "Print the executor's per-stage time breakdown");
  bench->add_flag("--omp-active", ba.omp_active,
                  "Keep libgomp's default spin-waiting for LibTorch at >1 thread (by default the bench restarts "
                  "itself with OMP_WAIT_POLICY=passive unless that variable is set: on a shared machine, spinning "
                  "OpenMP workers made LibTorch's 2-thread forward 4-5x slower)");
  bench->add_flag("--json", ba.c.json, "Print a machine-readable JSON result on stdout");
  bench->add_flag("-q,--quiet", ba.c.quiet, "No progress lines");
  bench->footer("Example:\n  reparq bench --profile          # DeiT-S-shaped W8A8 and W4A8, batch 1 and 32, 1 and 2 threads");
  cmds.push_back({bench, [] { return run_bench(ba); }});
}

}  // namespace reparq
