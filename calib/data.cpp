// data.cpp: IDX reader (gzip-compressed or plain) for Fashion-MNIST, and the seeded
// calibration subset. No LibTorch here.
//
// IDX layout: a big-endian u32 magic 0x0000TTNN (TT = element type, 0x08 = unsigned byte;
// NN = number of dimensions), NN big-endian u32 dimensions, then the elements, row-major.
#include "calib/data.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <unordered_map>

#include "kernels/error.h"

namespace reparq {

const char* const kClassNames[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                     "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

namespace {

namespace fs = std::filesystem;

constexpr uint32_t kIdxUnsignedByte = 0x08;
// Largest payload read_idx accepts: far above any IDX data set, small enough that a corrupt
// header cannot make us allocate the machine's memory.
constexpr uint64_t kMaxIdxBytes = uint64_t{1} << 32;
constexpr const char* kDefaultDataDir = "/usr/share/datasets/fashion-mnist";

[[noreturn]] void fail(const std::string& label, const std::string& what) {
  throw InputError(label + ": " + what);
}

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", static_cast<unsigned>(v));
  return buf;
}

std::string dims_str(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

struct GzClose {
  void operator()(gzFile f) const { gzclose(f); }
};
using GzHandle = std::unique_ptr<gzFile_s, GzClose>;

// Turns zlib's sticky error state into an InputError. A stream cut short reports Z_BUF_ERROR
// ("unexpected end of file") while still returning the bytes decoded so far, so this must be
// checked after every read, not only when gzread() returns -1.
void check_gz(gzFile f, const std::string& path) {
  int err = Z_OK;
  const char* msg = gzerror(f, &err);
  if (err == Z_OK) return;
  if (err == Z_ERRNO) fail(path, std::string("read error: ") + std::strerror(errno));
  std::string why = msg ? msg : "unknown zlib error";
  if (why.compare(0, path.size() + 2, path + ": ") == 0) why.erase(0, path.size() + 2);  // zlib prefixes the path
  if (err == Z_BUF_ERROR) fail(path, "truncated gzip stream (" + why + ")");
  fail(path, "corrupt gzip data (" + why + ")");
}

// Reads up to `n` bytes; returns fewer only at the end of the stream.
size_t read_some(gzFile f, uint8_t* dst, size_t n, const std::string& path) {
  size_t got = 0;
  while (got < n) {
    const unsigned chunk = static_cast<unsigned>(std::min<size_t>(n - got, size_t{1} << 30));
    const int r = gzread(f, dst + got, chunk);
    if (r < 0) check_gz(f, path);  // always throws when r < 0
    if (r <= 0) break;
    got += static_cast<size_t>(r);
  }
  check_gz(f, path);
  return got;
}

uint32_t load_u32_be(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// "<dir>/<name>.gz" if present, else the uncompressed "<dir>/<name>"; the .gz name in the
// error when neither exists (that is what the Debian package installs).
std::string find_idx(const std::string& dir, const std::string& name) {
  const fs::path gz = fs::path(dir) / (name + ".gz");
  const fs::path plain = fs::path(dir) / name;
  std::error_code ec;
  if (fs::exists(gz, ec)) return gz.string();
  if (fs::exists(plain, ec)) return plain.string();
  fail(gz.string(), "file not found");
}

}  // namespace

std::string data_dir(const std::string& explicit_dir) {
  if (!explicit_dir.empty()) return explicit_dir;
  const char* env = std::getenv("REPARQ_DATA_DIR");
  if (env && *env) return env;
  return kDefaultDataDir;
}

std::vector<int64_t> read_idx(const std::string& path, int expected_magic, std::vector<uint8_t>* out) {
  const auto magic_expected = static_cast<uint32_t>(expected_magic);
  const uint32_t ndims = magic_expected & 0xffu;
  if ((magic_expected >> 8) != kIdxUnsignedByte || ndims == 0)
    throw Error(kExitInternal, "read_idx: unsupported expected magic " + hex32(magic_expected) +
                                   " (only unsigned-byte IDX files)");

  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) fail(path, "file not found");
  if (fs::is_directory(st)) fail(path, "is a directory, not an IDX file");

  // gzopen reads plain files transparently, so one code path serves both.
  errno = 0;
  GzHandle f(gzopen(path.c_str(), "rb"));
  if (!f) fail(path, std::string("cannot open: ") + std::strerror(errno ? errno : ENOMEM));
  gzbuffer(f.get(), 1u << 17);

  uint8_t word[4];
  const size_t got_magic = read_some(f.get(), word, 4, path);
  if (got_magic == 0) fail(path, "empty file");
  if (got_magic < 4) fail(path, "truncated: file ends inside the 4-byte IDX magic number");
  const uint32_t magic = load_u32_be(word);
  if (magic != magic_expected)
    fail(path, "bad magic number " + hex32(magic) + ", expected " + hex32(magic_expected) +
                   " (IDX unsigned bytes, " + std::to_string(ndims) + " dimension" +
                   (ndims == 1 ? "" : "s") + ")");

  std::vector<int64_t> dims;
  uint64_t total = 1;
  for (uint32_t i = 0; i < ndims; ++i) {
    if (read_some(f.get(), word, 4, path) < 4)
      fail(path, "truncated: file ends inside the list of " + std::to_string(ndims) + " dimensions");
    const uint32_t d = load_u32_be(word);
    if (d == 0) fail(path, "dimension " + std::to_string(i) + " is 0");
    dims.push_back(d);
    total *= d;  // cannot overflow before the check below trips: each factor < 2^32
    if (total > kMaxIdxBytes)
      fail(path, "dimensions promise more than " + std::to_string(kMaxIdxBytes) + " bytes");
  }

  // Grow the buffer as the data arrives, never by more than what has arrived so far (between
  // 1 MB and 64 MB at a time): a 20-byte file whose dimensions promise 4 GB fails at its end
  // after allocating and zeroing 1 MB, not 4 GB (found by fuzz/fuzz_idx) or 64 MB (which made
  // every such input cost milliseconds).
  constexpr size_t kMinChunk = size_t{1} << 20, kMaxChunk = size_t{64} << 20;
  out->clear();
  size_t got = 0;
  while (got < total) {
    const size_t chunk = std::min(std::max(got, kMinChunk), kMaxChunk);
    const size_t want = static_cast<size_t>(std::min<uint64_t>(total - got, chunk));
    out->resize(got + want);
    const size_t r = read_some(f.get(), out->data() + got, want, path);
    got += r;
    if (r < want) break;
  }
  out->resize(got);
  if (got < total)
    fail(path, "truncated: dimensions " + dims_str(dims) + " promise " + std::to_string(total) +
                   " data bytes but the file holds only " + std::to_string(got));
  uint8_t extra;
  if (read_some(f.get(), &extra, 1, path) != 0)  // also reaches the gzip trailer (CRC check)
    fail(path, "trailing bytes after the " + std::to_string(total) + " data bytes that dimensions " +
                   dims_str(dims) + " promise");
  return dims;
}

ImageSet load_fashion_mnist(const std::string& dir, bool train) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    fail(dir, "data directory not found (install dataset-fashion-mnist or pass --data-dir)");
  const std::string stem = train ? "train" : "t10k";
  const std::string images_path = find_idx(dir, stem + "-images-idx3-ubyte");
  const std::string labels_path = find_idx(dir, stem + "-labels-idx1-ubyte");

  ImageSet set;
  const std::vector<int64_t> idims = read_idx(images_path, 0x00000803, &set.pixels);
  const std::vector<int64_t> ldims = read_idx(labels_path, 0x00000801, &set.labels);
  if (idims[0] != ldims[0])
    fail(labels_path, "holds " + std::to_string(ldims[0]) + " labels but " + images_path + " holds " +
                          std::to_string(idims[0]) + " images");
  for (size_t i = 0; i < set.labels.size(); ++i)
    if (set.labels[i] > 9)
      fail(labels_path, "label " + std::to_string(set.labels[i]) + " at index " + std::to_string(i) +
                            " is outside 0..9");
  set.count = idims[0];
  set.rows = idims[1];
  set.cols = idims[2];
  return set;
}

void check_calib_count(int64_t n, int64_t total) {
  if (n <= 0) throw UsageError("--calib must be positive");
  if (n > total)
    throw UsageError("--calib " + std::to_string(n) + " is larger than the training set (" + std::to_string(total) + " images)");
}

std::vector<int64_t> calibration_indices(int64_t total, int64_t n, uint64_t seed) {
  if (n <= 0 || n > total)
    throw UsageError("calibration size " + std::to_string(n) + " must be in 1.." +
                     std::to_string(std::max<int64_t>(total, 0)));
  // Partial Fisher-Yates over a virtual identity array: only swapped slots are stored, so
  // memory is O(n) whatever `total` is. The bounded draw uses rejection sampling on the raw
  // engine output (std::mt19937_64 is fully specified by the standard; the standard
  // distributions are not), so the subset is the same with every compiler and library.
  std::mt19937_64 rng(seed);
  std::unordered_map<int64_t, int64_t> swapped;
  auto slot = [&](int64_t i) {
    const auto it = swapped.find(i);
    return it == swapped.end() ? i : it->second;
  };
  std::vector<int64_t> picked;
  picked.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const auto range = static_cast<uint64_t>(total - i);
    const uint64_t reject_below = (0 - range) % range;  // 2^64 mod range: keeps the draw unbiased
    uint64_t r;
    do r = rng();
    while (r < reject_below);
    const int64_t j = i + static_cast<int64_t>(r % range);
    const int64_t vi = slot(i), vj = slot(j);
    swapped[j] = vi;
    picked.push_back(vj);
  }
  std::sort(picked.begin(), picked.end());
  return picked;
}

}  // namespace reparq
