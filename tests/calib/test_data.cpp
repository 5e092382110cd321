// Tests of the Fashion-MNIST loader, the IDX reader (on the real Debian data set and on small
// synthetic files, gzip-compressed with zlib here) and the seeded calibration subset.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "calib/data.h"
#include "kernels/error.h"

namespace fs = std::filesystem;
using namespace reparq;

namespace {

class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = fs::temp_directory_path() /
            ("reparq_data_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string str() const { return path_.string(); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

// An IDX file: big-endian magic, big-endian dimensions, payload.
std::vector<uint8_t> idx_bytes(uint32_t magic, const std::vector<uint32_t>& dims,
                               const std::vector<uint8_t>& payload) {
  std::vector<uint8_t> b;
  auto put = [&](uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(v >> s));
  };
  put(magic);
  for (uint32_t d : dims) put(d);
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

void write_plain(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

void write_gz(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path;
  if (!bytes.empty()) {
    ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
  }
  ASSERT_EQ(gzclose(f), Z_OK);
}

std::vector<uint8_t> read_raw(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::vector<uint8_t> pixels(size_t n) {
  std::vector<uint8_t> p(n);
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(i * 37 + 11);
  return p;
}

// A small valid data set in `dir`: 3 images of 2 x 4 pixels, labels 0, 9, 4.
void write_small_set(const std::string& dir, const std::string& stem, bool gz = true) {
  const auto images = idx_bytes(0x803, {3, 2, 4}, pixels(24));
  const auto labels = idx_bytes(0x801, {3}, {0, 9, 4});
  const std::string ext = gz ? ".gz" : "";
  if (gz) {
    write_gz(dir + "/" + stem + "-images-idx3-ubyte" + ext, images);
    write_gz(dir + "/" + stem + "-labels-idx1-ubyte" + ext, labels);
  } else {
    write_plain(dir + "/" + stem + "-images-idx3-ubyte", images);
    write_plain(dir + "/" + stem + "-labels-idx1-ubyte", labels);
  }
}

template <class F>
void expect_input_error(F&& f, const std::string& label, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected an InputError containing: " << needle;
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind(label + ": ", 0), 0u) << "message does not start with the file: " << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << "message: " << msg << "\nexpected to contain: " << needle;
  }
}

// Sets or clears an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) {
      old_ = old;
      had_ = true;
    }
    if (value) ::setenv(name, value, 1);
    else ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (had_) ::setenv(name_.c_str(), old_.c_str(), 1);
    else ::unsetenv(name_.c_str());
  }

 private:
  std::string name_, old_;
  bool had_ = false;
};

void check_real_set(const ImageSet& s, int64_t count, const std::array<int, 10>& first_labels,
                    int64_t sum_first, int64_t sum_last) {
  ASSERT_EQ(s.count, count);
  EXPECT_EQ(s.rows, 28);
  EXPECT_EQ(s.cols, 28);
  ASSERT_EQ(s.pixels.size(), static_cast<size_t>(count * 28 * 28));
  ASSERT_EQ(s.labels.size(), static_cast<size_t>(count));
  std::array<int64_t, 10> hist{};
  for (uint8_t l : s.labels) {
    ASSERT_LE(l, 9);
    ++hist[l];
  }
  for (int c = 0; c < 10; ++c) EXPECT_EQ(hist[c], count / 10) << "class " << c << " (" << kClassNames[c] << ")";
  for (int i = 0; i < 10; ++i) EXPECT_EQ(s.labels[i], first_labels[i]) << "label " << i;
  // Pixel sums of the first and last image, computed independently with Python's gzip module.
  EXPECT_EQ(std::accumulate(s.image(0), s.image(0) + 784, int64_t{0}), sum_first);
  EXPECT_EQ(std::accumulate(s.image(count - 1), s.image(count - 1) + 784, int64_t{0}), sum_last);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The real data set (Debian package dataset-fashion-mnist, or REPARQ_DATA_DIR)

TEST(FashionMnist, TrainSet) {
  const ImageSet s = load_fashion_mnist(data_dir(), true);
  check_real_set(s, 60000, {9, 0, 0, 3, 0, 2, 7, 2, 5, 5}, 76247, 16684);
}

TEST(FashionMnist, TestSet) {
  const ImageSet s = load_fashion_mnist(data_dir(), false);
  check_real_set(s, 10000, {9, 2, 1, 1, 6, 1, 4, 6, 5, 7}, 33456, 24390);
}

TEST(FashionMnist, ClassNames) {
  EXPECT_STREQ(kClassNames[0], "T-shirt/top");
  EXPECT_STREQ(kClassNames[5], "Sandal");
  EXPECT_STREQ(kClassNames[9], "Ankle boot");
  std::set<std::string> distinct;
  for (const char* n : kClassNames) {
    ASSERT_NE(n, nullptr);
    distinct.insert(n);
  }
  EXPECT_EQ(distinct.size(), 10u);
}

TEST(FashionMnist, DataDirLookupOrder) {
  {
    ScopedEnv env("REPARQ_DATA_DIR", "/from/env");
    EXPECT_EQ(data_dir("/explicit"), "/explicit");
    EXPECT_EQ(data_dir(), "/from/env");
  }
  {
    ScopedEnv env("REPARQ_DATA_DIR", nullptr);
    EXPECT_EQ(data_dir(), "/usr/share/datasets/fashion-mnist");
  }
  {
    ScopedEnv env("REPARQ_DATA_DIR", "");
    EXPECT_EQ(data_dir(), "/usr/share/datasets/fashion-mnist") << "an empty variable is ignored";
  }
}

TEST(FashionMnist, MissingDirectory) {
  TempDir tmp;
  const std::string dir = tmp.file("nowhere");
  try {
    load_fashion_mnist(dir, true);
    ADD_FAILURE() << "no exception";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()),
              dir + ": data directory not found (install dataset-fashion-mnist or pass --data-dir)");
    EXPECT_EQ(e.code(), kExitInput);
  }
}

TEST(FashionMnist, MissingFile) {
  TempDir tmp;
  write_small_set(tmp.str(), "train");
  fs::remove(tmp.file("train-labels-idx1-ubyte.gz"));
  expect_input_error([&] { load_fashion_mnist(tmp.str(), true); }, tmp.file("train-labels-idx1-ubyte.gz"),
                     "file not found");
  expect_input_error([&] { load_fashion_mnist(tmp.str(), false); }, tmp.file("t10k-images-idx3-ubyte.gz"),
                     "file not found");
}

// ---------------------------------------------------------------------------------------------
// Synthetic files

TEST(IdxReader, GzipAndPlainGiveTheSameSet) {
  TempDir gz, plain;
  write_small_set(gz.str(), "train", true);
  write_small_set(plain.str(), "train", false);
  const ImageSet a = load_fashion_mnist(gz.str(), true);
  const ImageSet b = load_fashion_mnist(plain.str(), true);
  EXPECT_EQ(a.count, 3);
  EXPECT_EQ(a.rows, 2);
  EXPECT_EQ(a.cols, 4);
  EXPECT_EQ(a.pixels, pixels(24));
  EXPECT_EQ(a.labels, (std::vector<uint8_t>{0, 9, 4}));
  EXPECT_EQ(a.image(2)[0], pixels(24)[16]);
  EXPECT_EQ(b.pixels, a.pixels);
  EXPECT_EQ(b.labels, a.labels);

  std::vector<uint8_t> out;
  EXPECT_EQ(read_idx(gz.file("train-images-idx3-ubyte.gz"), 2051, &out), (std::vector<int64_t>{3, 2, 4}));
  EXPECT_EQ(out, pixels(24));
}

TEST(IdxReader, TruncatedGzip) {
  TempDir tmp;
  const std::string path = tmp.file("x-images.gz");
  write_gz(path, idx_bytes(0x803, {40, 28, 28}, pixels(40 * 784)));
  const std::vector<uint8_t> whole = read_raw(path);
  std::vector<uint8_t> out;

  // Cut inside the deflate stream.
  write_plain(path, std::vector<uint8_t>(whole.begin(), whole.begin() + static_cast<long>(whole.size() / 2)));
  expect_input_error([&] { read_idx(path, 2051, &out); }, path, "truncated");
  // Cut inside the 8-byte trailer: every data byte decodes, the end of the stream is missing.
  write_plain(path, std::vector<uint8_t>(whole.begin(), whole.end() - 3));
  expect_input_error([&] { read_idx(path, 2051, &out); }, path, "truncated gzip stream");
}

TEST(IdxReader, CorruptGzip) {
  TempDir tmp;
  const std::string path = tmp.file("x.gz");
  write_gz(path, idx_bytes(0x801, {100}, std::vector<uint8_t>(100, 3)));
  const std::vector<uint8_t> whole = read_raw(path);
  std::vector<uint8_t> out;

  std::vector<uint8_t> bad = whole;
  bad[10] = 0xff;  // first byte after the 10-byte gzip header: a reserved deflate block type
  write_plain(path, bad);
  expect_input_error([&] { read_idx(path, 2049, &out); }, path, "corrupt gzip data");

  bad = whole;
  bad[bad.size() - 8] ^= 0x5a;  // the CRC-32 in the trailer
  write_plain(path, bad);
  expect_input_error([&] { read_idx(path, 2049, &out); }, path, "corrupt gzip data (incorrect data check)");
}

TEST(IdxReader, BadMagic) {
  TempDir tmp;
  write_small_set(tmp.str(), "train");
  const std::string images = tmp.file("train-images-idx3-ubyte.gz");
  write_gz(images, idx_bytes(0x801, {3}, {1, 2, 3}));  // a labels file where images belong
  expect_input_error([&] { load_fashion_mnist(tmp.str(), true); }, images,
                     "bad magic number 0x00000801, expected 0x00000803");
  std::vector<uint8_t> out;
  write_gz(images, {'G', 'I', 'F', '8', '9', 'a'});
  expect_input_error([&] { read_idx(images, 2051, &out); }, images, "bad magic number 0x47494638");
}

TEST(IdxReader, CountMismatch) {
  TempDir tmp;
  write_small_set(tmp.str(), "t10k");
  const std::string labels = tmp.file("t10k-labels-idx1-ubyte.gz");
  write_gz(labels, idx_bytes(0x801, {4}, {0, 1, 2, 3}));
  expect_input_error([&] { load_fashion_mnist(tmp.str(), false); }, labels,
                     "holds 4 labels but " + tmp.file("t10k-images-idx3-ubyte.gz") + " holds 3 images");
}

TEST(IdxReader, LabelOutOfRange) {
  TempDir tmp;
  write_small_set(tmp.str(), "train");
  const std::string labels = tmp.file("train-labels-idx1-ubyte.gz");
  write_gz(labels, idx_bytes(0x801, {3}, {0, 10, 4}));
  expect_input_error([&] { load_fashion_mnist(tmp.str(), true); }, labels, "label 10 at index 1 is outside 0..9");
}

TEST(IdxReader, SizeMustMatchDimensionsExactly) {
  TempDir tmp;
  std::vector<uint8_t> out;
  const std::string plain = tmp.file("plain");
  const std::string gz = tmp.file("plain.gz");

  write_plain(plain, idx_bytes(0x803, {3, 2, 2}, pixels(10)));
  expect_input_error([&] { read_idx(plain, 2051, &out); }, plain,
                     "truncated: dimensions [3, 2, 2] promise 12 data bytes but the file holds only 10");
  write_gz(gz, idx_bytes(0x803, {3, 2, 2}, pixels(10)));
  expect_input_error([&] { read_idx(gz, 2051, &out); }, gz, "promise 12 data bytes but the file holds only 10");

  write_plain(plain, idx_bytes(0x803, {3, 2, 2}, pixels(13)));
  expect_input_error([&] { read_idx(plain, 2051, &out); }, plain, "trailing bytes after the 12 data bytes");
  write_gz(gz, idx_bytes(0x803, {3, 2, 2}, pixels(13)));
  expect_input_error([&] { read_idx(gz, 2051, &out); }, gz, "trailing bytes");
}

TEST(IdxReader, MalformedHeaders) {
  TempDir tmp;
  std::vector<uint8_t> out;
  const std::string p = tmp.file("f.gz");

  write_gz(p, {});
  expect_input_error([&] { read_idx(p, 2049, &out); }, p, "empty file");
  write_gz(p, {0, 0});
  expect_input_error([&] { read_idx(p, 2049, &out); }, p, "inside the 4-byte IDX magic number");
  write_gz(p, idx_bytes(0x803, {3, 2}, {}));
  expect_input_error([&] { read_idx(p, 2051, &out); }, p, "inside the list of 3 dimensions");
  write_gz(p, idx_bytes(0x803, {3, 0, 2}, {}));
  expect_input_error([&] { read_idx(p, 2051, &out); }, p, "dimension 1 is 0");
  write_gz(p, idx_bytes(0x803, {0xffffffff, 0xffffffff, 28}, {}));
  expect_input_error([&] { read_idx(p, 2051, &out); }, p, "promise more than");

  expect_input_error([&] { read_idx(tmp.str(), 2051, &out); }, tmp.str(), "is a directory");
  expect_input_error([&] { read_idx(tmp.file("absent"), 2051, &out); }, tmp.file("absent"), "file not found");
}

// ---------------------------------------------------------------------------------------------
// Calibration subset

TEST(CalibrationIndices, PinnedValues) {
  // Reference values from an independent Python implementation of mt19937_64 and of the same
  // partial Fisher-Yates. A change here changes every calibration result: do it on purpose.
  EXPECT_EQ(calibration_indices(60000, 8, 0),
            (std::vector<int64_t>{3319, 5694, 5700, 8872, 36900, 38291, 40313, 44557}));
  EXPECT_EQ(calibration_indices(60000, 32, 42),
            (std::vector<int64_t>{1455,  4859,  4930,  7202,  7308,  9685,  10138, 10309,
                                  11509, 14707, 18459, 19063, 20406, 20502, 22798, 22845,
                                  23229, 27024, 27719, 28122, 29495, 33184, 34249, 34262,
                                  36251, 36385, 38339, 43035, 44506, 49510, 50932, 51272}));
}

TEST(CalibrationIndices, DeterministicDistinctSortedInRange) {
  for (int64_t total : {1, 2, 10, 1000, 60000}) {
    for (int64_t n : {int64_t{1}, std::min<int64_t>(total, 7), std::min<int64_t>(total, 32), total}) {
      for (uint64_t seed : {0ull, 1ull, 0xdeadbeefull}) {
        const std::vector<int64_t> a = calibration_indices(total, n, seed);
        ASSERT_EQ(a.size(), static_cast<size_t>(n));
        EXPECT_EQ(a, calibration_indices(total, n, seed)) << "same seed, same subset";
        EXPECT_TRUE(std::is_sorted(a.begin(), a.end()));
        EXPECT_EQ(std::adjacent_find(a.begin(), a.end()), a.end()) << "distinct";
        EXPECT_GE(a.front(), 0);
        EXPECT_LT(a.back(), total);
      }
    }
  }
  std::vector<int64_t> all(10);
  std::iota(all.begin(), all.end(), 0);
  EXPECT_EQ(calibration_indices(10, 10, 7), all);
  EXPECT_NE(calibration_indices(60000, 32, 1), calibration_indices(60000, 32, 2));
}

TEST(CalibrationIndices, HugeTotalNeedsNoHugeMemory) {
  const int64_t total = int64_t{1} << 50;
  const std::vector<int64_t> a = calibration_indices(total, 5, 3);
  ASSERT_EQ(a.size(), 5u);
  EXPECT_EQ(std::adjacent_find(a.begin(), a.end()), a.end());
  EXPECT_LT(a.back(), total);
}

TEST(CalibrationIndices, EveryIndexEquallyLikely) {
  // 3 of 10 over 20000 seeds: each index expected 6000 times (std. dev. ~65).
  std::array<int, 10> hits{};
  for (uint64_t seed = 0; seed < 20000; ++seed)
    for (int64_t i : calibration_indices(10, 3, seed)) ++hits[static_cast<size_t>(i)];
  for (int i = 0; i < 10; ++i) EXPECT_NEAR(hits[i], 6000, 400) << "index " << i;
}

TEST(CalibrationIndices, RejectsImpossibleSizes) {
  auto expect_usage = [](int64_t total, int64_t n, const std::string& needle) {
    try {
      calibration_indices(total, n, 0);
      ADD_FAILURE() << "no exception for total=" << total << " n=" << n;
    } catch (const UsageError& e) {
      EXPECT_EQ(e.code(), kExitUsage);
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_usage(100, 0, "calibration size 0 must be in 1..100");
  expect_usage(100, -3, "calibration size -3 must be in 1..100");
  expect_usage(100, 101, "calibration size 101 must be in 1..100");
  expect_usage(0, 1, "must be in 1..0");
}
