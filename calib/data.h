// data.h: Fashion-MNIST from Debian's dataset-fashion-mnist (IDX files, gzip-compressed),
// and the seeded calibration subset. No LibTorch here: the integer executor's tools use it too.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace reparq {

struct ImageSet {
  int64_t count = 0, rows = 0, cols = 0;
  std::vector<uint8_t> pixels;   // count * rows * cols, row-major
  std::vector<uint8_t> labels;   // count, values 0..9
  const uint8_t* image(int64_t i) const { return pixels.data() + i * rows * cols; }
};

// Directory lookup order: explicit argument if non-empty, env REPARQ_DATA_DIR, then
// /usr/share/datasets/fashion-mnist.
std::string data_dir(const std::string& explicit_dir = "");

// Reads "<dir>/{train,t10k}-images-idx3-ubyte.gz" and the matching labels. Validates magic
// numbers (2051 images, 2049 labels), dimensions, that the image and label counts agree and
// that the decompressed size equals what the header promises. Throws InputError naming the
// file on any problem (missing directory, missing file, truncated, corrupt gzip, bad magic).
ImageSet load_fashion_mnist(const std::string& dir, bool train);

// Reads one IDX file (plain or .gz) into `out`; returns the dimension list. Exposed for tests.
std::vector<int64_t> read_idx(const std::string& path, int expected_magic, std::vector<uint8_t>* out);

// `n` distinct indices in [0, total), drawn by a seeded Fisher-Yates shuffle (std::mt19937_64),
// sorted ascending. Throws UsageError if n <= 0 or n > total.
std::vector<int64_t> calibration_indices(int64_t total, int64_t n, uint64_t seed);

// The `--calib` count against a training set of `total` images, as `quantize` and `calibrate`
// word it: UsageError "--calib must be positive" / "--calib N is larger than the training set".
void check_calib_count(int64_t n, int64_t total);

extern const char* const kClassNames[10];

}  // namespace reparq
