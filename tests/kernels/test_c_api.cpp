// test_c_api.cpp: include/reparq.h, the standalone runtime's C API: status codes and messages
// for null pointers, bad batch and thread counts, missing and corrupt files, a bad ISA cap;
// and logits equal to the C++ executor's, for every thread count.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "kernels/cpu.h"
#include "kernels/executor.h"
#include "kernels/qmodel.h"
#include "reparq.h"

namespace {

const std::string kModel = std::string(REPARQ_SOURCE_DIR) + "/tests/data/golden_vit_w8a8.safetensors";

std::string tmp_path(const std::string& name) {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir != nullptr ? dir : "/tmp") + "/reparq_c_api_" + name;
}

std::vector<char> read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

void write_all(const std::string& path, const char* data, size_t n) {
  std::ofstream f(path, std::ios::binary);
  f.write(data, static_cast<std::streamsize>(n));
}

bool contains(const char* haystack, const std::string& needle) {
  return std::string(haystack).find(needle) != std::string::npos;
}

// Opens the golden model; fails the test if it cannot.
reparq_model* open_good() {
  reparq_model* m = nullptr;
  EXPECT_EQ(reparq_open(kModel.c_str(), &m), REPARQ_OK) << reparq_last_error(nullptr);
  return m;
}

}  // namespace

TEST(CApi, OpenRejectsNullPointers) {
  reparq_model* m = reinterpret_cast<reparq_model*>(&m);  // must be reset to NULL
  EXPECT_EQ(reparq_open(nullptr, &m), REPARQ_ERROR_USAGE);
  EXPECT_EQ(m, nullptr);
  EXPECT_TRUE(contains(reparq_last_error(nullptr), "null path")) << reparq_last_error(nullptr);
  EXPECT_EQ(reparq_open(kModel.c_str(), nullptr), REPARQ_ERROR_USAGE);
  EXPECT_TRUE(contains(reparq_last_error(nullptr), "reparq_open"));
}

TEST(CApi, OpenMissingFileNamesIt) {
  reparq_model* m = nullptr;
  const std::string path = tmp_path("does_not_exist.safetensors");
  EXPECT_EQ(reparq_open(path.c_str(), &m), REPARQ_ERROR_INPUT);
  EXPECT_EQ(m, nullptr);
  EXPECT_TRUE(contains(reparq_last_error(nullptr), path)) << reparq_last_error(nullptr);
}

TEST(CApi, OpenCorruptFilesReturnsInputError) {
  const std::vector<char> good = read_all(kModel);
  ASSERT_GT(good.size(), 1000u);
  const std::string path = tmp_path("corrupt.safetensors");
  struct Case {
    const char* what;
    std::vector<char> bytes;
  };
  std::vector<Case> cases;
  cases.push_back({"empty", {}});
  cases.push_back({"7 bytes", std::vector<char>(good.begin(), good.begin() + 7)});
  cases.push_back({"truncated data", std::vector<char>(good.begin(), good.end() - 100)});
  cases.push_back({"truncated header", std::vector<char>(good.begin(), good.begin() + 200)});
  std::vector<char> huge_header = good;
  huge_header[6] = 0x7F;  // header length ~ 2^55
  cases.push_back({"header length beyond the file", huge_header});
  std::vector<char> garbage_header(8, 0);  // length 32 (little endian), then 32 bytes of '}'
  garbage_header[0] = 32;
  garbage_header.insert(garbage_header.end(), 32 + 64, '}');
  cases.push_back({"garbage JSON", garbage_header});
  std::vector<char> text(5000, 'x');
  cases.push_back({"not safetensors", text});
  for (const Case& c : cases) {
    write_all(path, c.bytes.data(), c.bytes.size());
    reparq_model* m = nullptr;
    const int status = reparq_open(path.c_str(), &m);
    EXPECT_EQ(status, REPARQ_ERROR_INPUT) << c.what << ": " << reparq_last_error(nullptr);
    EXPECT_EQ(m, nullptr) << c.what;
    EXPECT_TRUE(contains(reparq_last_error(nullptr), path)) << c.what << ": " << reparq_last_error(nullptr);
    reparq_close(m);
  }
  std::remove(path.c_str());
}

TEST(CApi, BadIsaCapIsAUsageError) {
  const char* old = std::getenv("REPARQ_MAX_ISA");
  const std::string saved = old != nullptr ? old : "";
  setenv("REPARQ_MAX_ISA", "avx9000", 1);
  reparq_model* m = nullptr;
  EXPECT_EQ(reparq_open(kModel.c_str(), &m), REPARQ_ERROR_USAGE);
  EXPECT_EQ(m, nullptr);
  EXPECT_TRUE(contains(reparq_last_error(nullptr), "REPARQ_MAX_ISA")) << reparq_last_error(nullptr);
  if (old != nullptr) setenv("REPARQ_MAX_ISA", saved.c_str(), 1); else unsetenv("REPARQ_MAX_ISA");
}

TEST(CApi, NullHandleIsAUsageErrorEverywhere) {
  int a = 0, b = 0;
  uint8_t px[1] = {0};
  float out[1] = {0};
  EXPECT_EQ(reparq_input_shape(nullptr, &a, &b), REPARQ_ERROR_USAGE);
  EXPECT_EQ(reparq_num_classes(nullptr, &a), REPARQ_ERROR_USAGE);
  EXPECT_EQ(reparq_run(nullptr, px, 1, out), REPARQ_ERROR_USAGE);
  EXPECT_EQ(reparq_set_threads(nullptr, 1), REPARQ_ERROR_USAGE);
  EXPECT_TRUE(contains(reparq_last_error(nullptr), "null model handle"));
  EXPECT_STREQ(reparq_isa(nullptr), "");
  reparq_close(nullptr);
}

TEST(CApi, BadArgumentsOnAGoodHandle) {
  reparq_model* m = open_good();
  ASSERT_NE(m, nullptr);
  EXPECT_STREQ(reparq_last_error(m), "");
  int h = 0, w = 0, classes = 0;
  EXPECT_EQ(reparq_input_shape(m, nullptr, &w), REPARQ_ERROR_USAGE);
  EXPECT_EQ(reparq_input_shape(m, &h, nullptr), REPARQ_ERROR_USAGE);
  EXPECT_EQ(reparq_num_classes(m, nullptr), REPARQ_ERROR_USAGE);
  ASSERT_EQ(reparq_input_shape(m, &h, &w), REPARQ_OK);
  ASSERT_EQ(reparq_num_classes(m, &classes), REPARQ_OK);
  EXPECT_EQ(h, 16);
  EXPECT_EQ(w, 16);
  EXPECT_EQ(classes, 10);
  std::vector<uint8_t> px(size_t(h) * w, 100);
  std::vector<float> out(classes);
  EXPECT_EQ(reparq_run(m, nullptr, 1, out.data()), REPARQ_ERROR_USAGE);
  EXPECT_TRUE(contains(reparq_last_error(m), "null pixels")) << reparq_last_error(m);
  EXPECT_EQ(reparq_run(m, px.data(), 1, nullptr), REPARQ_ERROR_USAGE);
  EXPECT_TRUE(contains(reparq_last_error(m), "null logits")) << reparq_last_error(m);
  for (int batch : {0, -1, -2147483647 - 1, 65537, 2147483647}) {
    EXPECT_EQ(reparq_run(m, px.data(), batch, out.data()), REPARQ_ERROR_USAGE) << batch;
    EXPECT_TRUE(contains(reparq_last_error(m), "batch " + std::to_string(batch))) << reparq_last_error(m);
  }
  for (int threads : {0, -3, 257}) {
    EXPECT_EQ(reparq_set_threads(m, threads), REPARQ_ERROR_USAGE) << threads;
    EXPECT_TRUE(contains(reparq_last_error(m), "threads")) << reparq_last_error(m);
  }
  // Sized entry point: a buffer one byte short, one byte long, or logits one float short is
  // refused, and nothing is written.
  std::vector<float> sentinel(classes, -7.0f);
  EXPECT_EQ(reparq_run_checked(m, px.data(), px.size() - 1, 1, sentinel.data(), sentinel.size()), REPARQ_ERROR_USAGE);
  EXPECT_TRUE(contains(reparq_last_error(m), "pixel buffer holds " + std::to_string(px.size() - 1) + " bytes"))
      << reparq_last_error(m);
  EXPECT_EQ(reparq_run_checked(m, px.data(), px.size() + 1, 1, sentinel.data(), sentinel.size()), REPARQ_ERROR_USAGE);
  EXPECT_EQ(reparq_run_checked(m, px.data(), px.size(), 1, sentinel.data(), sentinel.size() - 1), REPARQ_ERROR_USAGE);
  EXPECT_TRUE(contains(reparq_last_error(m), "logits buffer holds")) << reparq_last_error(m);
  EXPECT_EQ(reparq_run_checked(m, px.data(), px.size() * 2, 2, sentinel.data(), sentinel.size()), REPARQ_ERROR_USAGE)
      << "two images need twice the logits";
  for (float v : sentinel) EXPECT_EQ(v, -7.0f);
  EXPECT_EQ(reparq_run_checked(nullptr, px.data(), px.size(), 1, out.data(), out.size()), REPARQ_ERROR_USAGE);
  EXPECT_EQ(reparq_run_checked(m, px.data(), px.size(), 0, out.data(), out.size()), REPARQ_ERROR_USAGE);
  // The handle still works after the errors, and the sized call equals the plain one.
  EXPECT_EQ(reparq_run(m, px.data(), 1, out.data()), REPARQ_OK) << reparq_last_error(m);
  ASSERT_EQ(reparq_run_checked(m, px.data(), px.size(), 1, sentinel.data(), sentinel.size()), REPARQ_OK);
  EXPECT_EQ(0, std::memcmp(out.data(), sentinel.data(), sizeof(float) * out.size()));
  reparq_close(m);
}

TEST(CApi, LogitsEqualTheExecutorsForEveryThreadCount) {
  const reparq::QuantModel q = reparq::load_quant_model(kModel);
  const int S = int(q.image_size), C = int(q.num_classes), n = 6;
  std::vector<uint8_t> px(size_t(n) * S * S);
  for (size_t i = 0; i < px.size(); ++i) px[i] = uint8_t((i * 37 + i / 7) & 255);
  std::vector<float> want(size_t(n) * C);
  reparq::Executor ex(q, reparq::Isa::Scalar, 1);
  ex.run(px.data(), n, want.data());

  reparq_model* m = open_good();
  ASSERT_NE(m, nullptr);
  EXPECT_STREQ(reparq_isa(m), reparq::isa_name(reparq::best_isa()));
  for (int threads : {1, 2, 3}) {
    ASSERT_EQ(reparq_set_threads(m, threads), REPARQ_OK) << reparq_last_error(m);
    std::vector<float> got(size_t(n) * C, -1.0f);
    ASSERT_EQ(reparq_run(m, px.data(), n, got.data()), REPARQ_OK) << reparq_last_error(m);
    EXPECT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * sizeof(float))) << threads << " threads";
    // One image at a time gives the same logits.
    for (int i = 0; i < n; ++i) {
      ASSERT_EQ(reparq_run(m, px.data() + size_t(i) * S * S, 1, got.data() + size_t(i) * C), REPARQ_OK);
    }
    EXPECT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * sizeof(float))) << threads << " threads, batch 1";
  }
  reparq_close(m);
}
