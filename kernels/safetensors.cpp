// safetensors.cpp: strict reader and atomic writer of the safetensors format.
//
// File layout: [u64 little-endian N][N bytes of JSON header][data section]. The header maps
// tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the
// start of the data section) plus an optional "__metadata__" object of strings.
//
// The reader trusts nothing: every length and offset is checked before it is used, shape
// products are computed with overflow checks, and the tensors' byte ranges must tile the data
// section exactly (no overlaps, no holes, no trailing bytes).
#include "kernels/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <system_error>
#include <tuple>
#include <utility>

#include <nlohmann/json.hpp>

#include "kernels/error.h"

namespace reparq {
namespace {

using nlohmann::json;

// Same bound as the reference implementation: a header this large is an attack, not a model.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr size_t kAlign = 64;             // alignment of the data section and of each tensor
constexpr int kMaxNesting = 3;            // root object -> tensor entry -> shape array
constexpr char kMetadataKey[] = "__metadata__";
constexpr char kPadPrefix[] = "__pad.";

struct DTypeInfo {
  DType type;
  const char* name;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::F32, "F32", 4}, {DType::F16, "F16", 2}, {DType::BF16, "BF16", 2},
    {DType::I8, "I8", 1},   {DType::U8, "U8", 1},   {DType::I32, "I32", 4},
    {DType::I64, "I64", 8},
};

[[noreturn]] void fail(const std::string& label, const std::string& what) {
  throw InputError(label + ": " + what);
}

// Misuse of the writer is a bug in the caller, not bad input.
[[noreturn]] void writer_fail(const std::string& what) {
  throw Error(kExitInternal, "safetensors writer: " + what);
}

bool is_pad_name(const std::string& name) {
  return name.compare(0, sizeof(kPadPrefix) - 1, kPadPrefix) == 0;
}

std::string squote(const std::string& s) { return "'" + s + "'"; }

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::string range_str(uint64_t begin, uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + ")";
}

// a * b, or false when it does not fit in 64 bits.
bool mul_u64(uint64_t a, uint64_t b, uint64_t* out) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return false;
  *out = a * b;
  return true;
}

// Byte size of a tensor of `dtype` and non-negative `shape`, or false on overflow. A zero
// dimension makes the tensor empty whatever the other dimensions are.
bool checked_nbytes(DType dtype, const std::vector<int64_t>& shape, uint64_t* out) {
  if (std::find(shape.begin(), shape.end(), 0) != shape.end()) {
    *out = 0;
    return true;
  }
  uint64_t n = 1;
  for (int64_t d : shape)
    if (!mul_u64(n, static_cast<uint64_t>(d), &n)) return false;
  if (n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;  // numel()
  return mul_u64(n, dtype_size(dtype), out);
}

uint64_t load_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void store_u64_le(uint64_t v, uint8_t* p) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

// Deepest bracket nesting of a JSON text, ignoring brackets inside strings. Run before parsing
// so that a hostile header ("[[[[...") cannot make the parser build a huge tree.
int json_nesting(const char* p, size_t n) {
  int depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < n; ++i) {
    const char c = p[i];
    if (in_string) {
      if (c == '\\') ++i;  // skip the escaped character
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      deepest = std::max(deepest, ++depth);
      if (deepest > kMaxNesting) break;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return deepest;
}

// Parses the header, rejecting duplicate keys in any object (the JSON library would silently
// keep the last one, which could hide a tensor).
json parse_header(const char* p, size_t n, const std::string& label) {
  if (json_nesting(p, n) > kMaxNesting)
    fail(label, "header JSON nests deeper than a safetensors header can (" +
                    std::to_string(kMaxNesting) + " levels)");
  std::vector<std::set<std::string>> keys;  // keys seen in each open object
  std::string duplicate;
  auto on_event = [&](int, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) {
      keys.emplace_back();
    } else if (event == json::parse_event_t::object_end) {
      keys.pop_back();
    } else if (event == json::parse_event_t::key && !keys.empty()) {
      const std::string& k = parsed.get_ref<const std::string&>();
      if (!keys.back().insert(k).second && duplicate.empty()) duplicate = k;
    }
    return true;
  };
  json header;
  try {
    header = json::parse(p, p + n, on_event);
  } catch (const json::exception& e) {
    // e.what() is "[json.exception.parse_error.101] parse error at ...": keep the readable part.
    std::string why = e.what();
    const size_t pos = why.find("] ");
    if (pos != std::string::npos) why = why.substr(pos + 2);
    fail(label, "header is not valid JSON: " + why);
  }
  if (!header.is_object())
    fail(label, std::string("header is not a JSON object (found a JSON ") + header.type_name() + ")");
  if (p[0] != '{') fail(label, "header must begin with '{' (whitespace may only trail it)");
  if (!duplicate.empty()) fail(label, "header has duplicate key " + squote(duplicate));
  return header;
}

// A JSON integer >= 0 (and <= INT64_MAX); `what` names it in messages.
uint64_t json_nonneg(const json& v, const std::string& label, const std::string& what) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      fail(label, what + " " + std::to_string(u) + " is too large");
    return u;
  }
  if (v.is_number_integer()) fail(label, what + " " + std::to_string(v.get<int64_t>()) + " is negative");
  fail(label, what + " is not an integer (found a JSON " + v.type_name() + ")");
}

// One parsed header entry, padding included.
struct HeaderEntry {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;
};

HeaderEntry parse_entry(const std::string& name, const json& v, uint64_t data_size,
                  const std::string& label) {
  const std::string t = "tensor " + squote(name);
  if (name.empty()) fail(label, "header has a tensor with an empty name");
  if (!v.is_object()) fail(label, t + ": entry is not a JSON object");
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!v.contains(key)) fail(label, t + ": missing " + squote(key));
  for (auto it = v.begin(); it != v.end(); ++it)
    if (it.key() != "dtype" && it.key() != "shape" && it.key() != "data_offsets")
      fail(label, t + ": unexpected field " + squote(it.key()));

  HeaderEntry e;
  e.name = name;
  const json& dtype = v["dtype"];
  if (!dtype.is_string()) fail(label, t + ": dtype is not a string");
  if (!dtype_from_name(dtype.get<std::string>(), &e.dtype))
    fail(label, t + ": unknown dtype " + squote(dtype.get<std::string>()) +
                    " (known: F32 F16 BF16 I8 U8 I32 I64)");

  const json& shape = v["shape"];
  if (!shape.is_array()) fail(label, t + ": shape is not a JSON array");
  for (const json& d : shape)
    e.shape.push_back(static_cast<int64_t>(json_nonneg(d, label, t + ": shape dimension")));

  const json& offsets = v["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2)
    fail(label, t + ": data_offsets is not an array of two integers");
  e.begin = json_nonneg(offsets[0], label, t + ": data_offsets begin");
  e.end = json_nonneg(offsets[1], label, t + ": data_offsets end");
  const std::string offs = "data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "]";
  if (e.begin > e.end) fail(label, t + ": " + offs + " has begin > end");
  if (e.end > data_size)
    fail(label, t + ": " + offs + " reach beyond the data section of " + std::to_string(data_size) + " bytes");

  uint64_t nbytes = 0;
  if (!checked_nbytes(e.dtype, e.shape, &nbytes))
    fail(label, t + ": shape " + shape_str(e.shape) + " is too large (element count overflows)");
  if (nbytes != e.end - e.begin)
    fail(label, t + ": " + dtype_name(e.dtype) + " x shape " + shape_str(e.shape) + " is " +
                    std::to_string(nbytes) + " bytes but " + offs + " cover " +
                    std::to_string(e.end - e.begin));
  return e;
}

// The non-empty ranges must tile [0, data_size) exactly.
void check_coverage(std::vector<const HeaderEntry*> entries, uint64_t data_size, const std::string& label) {
  entries.erase(std::remove_if(entries.begin(), entries.end(),
                               [](const HeaderEntry* e) { return e->begin == e->end; }),
                entries.end());
  std::sort(entries.begin(), entries.end(), [](const HeaderEntry* a, const HeaderEntry* b) {
    return std::tie(a->begin, a->end, a->name) < std::tie(b->begin, b->end, b->name);
  });
  uint64_t covered = 0;
  const HeaderEntry* prev = nullptr;
  for (const HeaderEntry* e : entries) {
    if (e->begin < covered)
      fail(label, "tensors " + squote(prev->name) + " " + range_str(prev->begin, prev->end) + " and " +
                      squote(e->name) + " " + range_str(e->begin, e->end) + " overlap");
    if (e->begin > covered)
      fail(label, "hole in the data section: bytes " + range_str(covered, e->begin) +
                      " belong to no tensor");
    covered = e->end;
    prev = e;
  }
  if (covered != data_size)
    fail(label, "trailing bytes: the data section has " + std::to_string(data_size) +
                    " bytes but the tensors cover only the first " + std::to_string(covered));
}

bool valid_utf8(const std::string& s) {
  try {
    (void)json(s).dump();
    return true;
  } catch (const json::type_error&) {
    return false;
  }
}

}  // namespace

const char* dtype_name(DType t) {
  for (const DTypeInfo& d : kDTypes)
    if (d.type == t) return d.name;
  return "?";
}

size_t dtype_size(DType t) {
  for (const DTypeInfo& d : kDTypes)
    if (d.type == t) return d.size;
  return 0;
}

bool dtype_from_name(const std::string& s, DType* out) {
  for (const DTypeInfo& d : kDTypes)
    if (s == d.name) {
      *out = d.type;
      return true;
    }
  return false;
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // validated by the reader not to overflow
  return n;
}

// ---------------------------------------------------------------------------------------------
// Reader

SafeTensorsFile SafeTensorsFile::open(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) {
    const std::string why = ec ? ec.message() : std::strerror(ENOENT);
    fail(path, "cannot open: " + why);
  }
  if (fs::is_directory(st)) fail(path, "is a directory, not a safetensors file");
  if (!fs::is_regular_file(st)) fail(path, "is not a regular file");

  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) fail(path, std::string("cannot open: ") + std::strerror(errno));
  const uintmax_t size = fs::file_size(path, ec);
  if (ec) fail(path, "cannot read size: " + ec.message());

  std::vector<uint8_t> bytes;
  bytes.reserve(static_cast<size_t>(size) + kAlign);  // room for from_bytes() to align in place
  bytes.resize(static_cast<size_t>(size));
  const size_t got = bytes.empty() ? 0 : std::fread(bytes.data(), 1, bytes.size(), f.get());
  if (got != bytes.size()) {
    if (std::ferror(f.get())) fail(path, std::string("read error: ") + std::strerror(errno));
    fail(path, "file shrank while being read");
  }
  return from_bytes(std::move(bytes), path);
}

SafeTensorsFile SafeTensorsFile::from_bytes(std::vector<uint8_t> bytes, const std::string& label) {
  const size_t n = bytes.size();
  if (n == 0) fail(label, "empty file");
  if (n < 8)
    fail(label, "truncated: file has " + std::to_string(n) + " bytes, fewer than the 8-byte header length");
  const uint64_t header_len = load_u64_le(bytes.data());
  if (header_len > kMaxHeaderBytes)
    fail(label, "header length " + std::to_string(header_len) + " exceeds the limit of " +
                    std::to_string(kMaxHeaderBytes) + " bytes (not a safetensors file?)");
  if (header_len > n - 8)
    fail(label, "truncated: header says " + std::to_string(header_len) + " bytes but file has " +
                    std::to_string(n - 8) + " bytes after the 8-byte length");
  const size_t data_start = 8 + static_cast<size_t>(header_len);
  const uint64_t data_size = n - data_start;

  // Shift the bytes so that the data section starts on a 64-byte boundary in memory: then
  // every tensor at a 64-aligned offset (all of those reparq writes) is 64-aligned for SIMD
  // loads, and as<T>() is aligned for any T. No reallocation happens: the capacity is reserved
  // first (open() already did), so the pointer read after reserve() stays valid.
  bytes.reserve(n + kAlign);
  const auto addr = reinterpret_cast<uintptr_t>(bytes.data() + data_start);
  const size_t shift = (kAlign - addr % kAlign) % kAlign;
  if (shift) bytes.insert(bytes.begin(), shift, uint8_t{0});

  SafeTensorsFile file;
  file.path_ = label;
  file.bytes_ = std::make_shared<std::vector<uint8_t>>(std::move(bytes));
  const uint8_t* base = file.bytes_->data() + shift;
  const uint8_t* data = base + data_start;

  const json header = parse_header(reinterpret_cast<const char*>(base + 8), header_len, label);

  std::vector<HeaderEntry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == kMetadataKey) {
      if (!it->is_object()) fail(label, "__metadata__ is not a JSON object of strings");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string())
          fail(label, "__metadata__ value of " + squote(m.key()) + " is not a string (found a JSON " +
                          m->type_name() + ")");
        file.metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(it.key(), *it, data_size, label));
  }

  std::vector<const HeaderEntry*> all;
  for (const HeaderEntry& e : entries) all.push_back(&e);
  check_coverage(all, data_size, label);

  // Listed in data order (the order they were written), padding left out.
  std::sort(all.begin(), all.end(), [](const HeaderEntry* a, const HeaderEntry* b) {
    return std::tie(a->begin, a->end, a->name) < std::tie(b->begin, b->end, b->name);
  });
  for (const HeaderEntry* e : all) {
    if (is_pad_name(e->name)) continue;
    TensorView v;
    v.name = e->name;
    v.dtype = e->dtype;
    v.shape = e->shape;
    v.data = data + e->begin;
    v.nbytes = static_cast<size_t>(e->end - e->begin);
    file.tensors_.push_back(std::move(v));
  }
  return file;
}

const TensorView* SafeTensorsFile::find(const std::string& name) const {
  for (const TensorView& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

const TensorView& SafeTensorsFile::get(const std::string& name, const std::vector<int64_t>& shape) const {
  const TensorView* t = find(name);
  if (!t) fail(path_, "missing tensor " + squote(name));
  if (!shape.empty() && t->shape != shape)
    fail(path_, "tensor " + squote(name) + " has shape " + shape_str(t->shape) + ", expected " +
                    shape_str(shape));
  return *t;
}

std::string SafeTensorsFile::meta_str(const std::string& key) const {
  const auto it = metadata_.find(key);
  if (it == metadata_.end()) fail(path_, "missing metadata key " + squote(key));
  return it->second;
}

std::string SafeTensorsFile::meta_str(const std::string& key, const std::string& fallback) const {
  const auto it = metadata_.find(key);
  return it == metadata_.end() ? fallback : it->second;
}

int64_t SafeTensorsFile::meta_int(const std::string& key) const {
  const std::string s = meta_str(key);
  int64_t v = 0;
  const char* end = s.data() + s.size();
  const auto [ptr, ec] = std::from_chars(s.data(), end, v);
  if (ec == std::errc::result_out_of_range)
    fail(path_, "metadata key " + squote(key) + " = " + squote(s) + " is out of the int64 range");
  if (ec != std::errc() || ptr != end || s.empty())
    fail(path_, "metadata key " + squote(key) + " = " + squote(s) + " is not an integer");
  return v;
}

int64_t SafeTensorsFile::meta_int(const std::string& key, int64_t fallback) const {
  return metadata_.count(key) ? meta_int(key) : fallback;
}

double SafeTensorsFile::meta_double(const std::string& key, double fallback) const {
  const auto it = metadata_.find(key);
  if (it == metadata_.end()) return fallback;
  const std::string& s = it->second;
  double v = 0;
  const char* end = s.data() + s.size();
  const auto [ptr, ec] = std::from_chars(s.data(), end, v);  // locale-independent
  if (ec != std::errc() || ptr != end || s.empty())
    fail(path_, "metadata key " + squote(key) + " = " + squote(s) + " is not a number");
  return v;
}

// ---------------------------------------------------------------------------------------------
// Writer

void SafeTensorsWriter::add(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                            const void* data, size_t nbytes) {
  if (name.empty()) writer_fail("empty tensor name");
  if (name == kMetadataKey || is_pad_name(name)) writer_fail("tensor name " + squote(name) + " is reserved");
  if (!valid_utf8(name)) writer_fail("tensor name " + squote(name) + " is not valid UTF-8");
  for (const Entry& e : entries_)
    if (e.name == name) writer_fail("duplicate tensor " + squote(name));
  for (int64_t d : shape)
    if (d < 0) writer_fail("tensor " + squote(name) + ": negative dimension in shape " + shape_str(shape));
  uint64_t expected = 0;
  if (!checked_nbytes(dtype, shape, &expected))
    writer_fail("tensor " + squote(name) + ": shape " + shape_str(shape) + " is too large");
  if (expected != nbytes)
    writer_fail("tensor " + squote(name) + ": " + dtype_name(dtype) + " x " + shape_str(shape) + " needs " +
                std::to_string(expected) + " bytes, got " + std::to_string(nbytes));
  if (nbytes && !data) writer_fail("tensor " + squote(name) + ": null data");

  const auto* p = static_cast<const uint8_t*>(data);
  entries_.push_back(Entry{name, dtype, shape, nbytes ? std::vector<uint8_t>(p, p + nbytes)
                                                      : std::vector<uint8_t>()});
}

void SafeTensorsWriter::set_metadata(const std::string& key, const std::string& value) {
  if (!valid_utf8(key) || !valid_utf8(value))
    writer_fail("metadata key " + squote(key) + ": key or value is not valid UTF-8");
  metadata_[key] = value;
}

std::vector<uint8_t> SafeTensorsWriter::to_bytes() const {
  // Layout: each tensor starts at a multiple of 64 within the data section; the gap after a
  // tensor whose size is not a multiple of 64 becomes an explicit "__pad.N" U8 tensor.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata_.empty()) header[kMetadataKey] = metadata_;
  uint64_t offset = 0;
  int pads = 0;
  std::vector<std::pair<uint64_t, const Entry*>> placed;
  for (size_t i = 0; i < entries_.size(); ++i) {
    const Entry& e = entries_[i];
    const uint64_t end = offset + e.bytes.size();
    header[e.name] = {{"dtype", dtype_name(e.dtype)}, {"shape", e.shape}, {"data_offsets", nlohmann::ordered_json::array({offset, end})}};
    placed.emplace_back(offset, &e);
    offset = end;
    const uint64_t gap = (kAlign - offset % kAlign) % kAlign;
    if (gap && i + 1 < entries_.size()) {  // no padding needed after the last tensor
      header[kPadPrefix + std::to_string(pads++)] = {
          {"dtype", "U8"},
          {"shape", nlohmann::ordered_json::array({gap})},
          {"data_offsets", nlohmann::ordered_json::array({offset, offset + gap})}};
      offset += gap;
    }
  }

  std::string text = header.dump();
  const size_t unaligned = (8 + text.size()) % kAlign;
  if (unaligned) text.append(kAlign - unaligned, ' ');  // JSON allows trailing whitespace

  const size_t data_start = 8 + text.size();
  std::vector<uint8_t> out(data_start + static_cast<size_t>(offset), 0);  // padding bytes stay 0
  store_u64_le(text.size(), out.data());
  std::memcpy(out.data() + 8, text.data(), text.size());
  for (const auto& [at, e] : placed)
    if (!e->bytes.empty()) std::memcpy(out.data() + data_start + at, e->bytes.data(), e->bytes.size());
  return out;
}

void SafeTensorsWriter::write(const std::string& path) const {
  const std::vector<uint8_t> bytes = to_bytes();
  write_file_atomic(path, bytes.data(), bytes.size());
}

// ---------------------------------------------------------------------------------------------
// Atomic write (POSIX): temporary file in the same directory, fsync, rename over the target,
// fsync the directory so that the rename itself survives a crash.
//
// On Linux the temporary file is first an unnamed O_TMPFILE inode: a process killed while
// writing (the long part) leaves nothing in the directory. Once the bytes are on disk it gets
// the name "<path>.tmp.<pid>" (linkat) and is renamed over <path> at once, so only a kill in
// the microseconds between linkat and rename leaves a "<path>.tmp.<pid>" file behind. Where
// O_TMPFILE is unsupported (not Linux, some file systems) the file is created under
// "<path>.tmp.<pid>" directly, and a killed run leaves that clearly named partial file.

namespace {

// Writes all `n` bytes to `fd`; returns 0 or the errno of the failed write.
int write_all(int fd, const uint8_t* p, size_t n) {
  size_t done = 0;
  while (done < n) {
    const ssize_t w = ::write(fd, p + done, n - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    done += static_cast<size_t>(w);
  }
  return 0;
}

}  // namespace

void write_file_atomic(const std::string& path, const void* data, size_t n) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  const auto* p = static_cast<const uint8_t*>(data);
  bool named = false;  // does `tmp` exist in the directory (and need removing on failure)?
  int fd = -1;
#ifdef O_TMPFILE
  fd = ::open(dir.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0 && errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)
    fail(path, "cannot write: cannot create a temporary file in " + squote(dir) + ": " + std::strerror(errno));
#endif
  if (fd < 0) {
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) fail(path, "cannot write: cannot create " + squote(tmp) + ": " + std::strerror(errno));
    named = true;
  }

  // On any failure: close, remove the temporary file, report the step that failed.
  auto give_up = [&](const std::string& step, int err, bool close_fd) {
    if (close_fd) ::close(fd);
    if (named) ::unlink(tmp.c_str());
    fail(path, "cannot write: " + step + ": " + std::strerror(err));
  };

  if (const int err = write_all(fd, p, n)) give_up("write to " + squote(tmp) + " failed", err, true);
  if (::fsync(fd) != 0) give_up("fsync of " + squote(tmp) + " failed", errno, true);
  if (!named) {
    // Give the unnamed file its temporary name (/proc/self/fd needs no privilege, unlike
    // AT_EMPTY_PATH). A stale file of that name (a pid reused after a kill) is replaced.
    const std::string proc = "/proc/self/fd/" + std::to_string(fd);
    int rc = ::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, tmp.c_str(), AT_SYMLINK_FOLLOW);
    if (rc != 0 && errno == EEXIST && ::unlink(tmp.c_str()) == 0)
      rc = ::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, tmp.c_str(), AT_SYMLINK_FOLLOW);
    if (rc != 0) give_up("cannot name the temporary file " + squote(tmp), errno, true);
    named = true;
  }
  if (::close(fd) != 0) give_up("close of " + squote(tmp) + " failed", errno, false);
  if (::rename(tmp.c_str(), path.c_str()) != 0)
    give_up("rename of " + squote(tmp) + " failed", errno, false);

  // Best effort: some file systems refuse fsync on a directory; the data is already in place.
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace reparq
