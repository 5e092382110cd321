// safetensors.h: strict reader and atomic writer of the safetensors format
// (8-byte little-endian header length, JSON header, one contiguous data section).
// Used for float checkpoints (timm names) and for reparq's quantized profile (docs/FORMAT.md).
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace reparq {

enum class DType { F32, F16, BF16, I8, U8, I32, I64 };

const char* dtype_name(DType t);          // "F32", "I8", ...
size_t dtype_size(DType t);               // bytes per element
bool dtype_from_name(const std::string& s, DType* out);

struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // points into the file's buffer, valid while the file lives
  size_t nbytes = 0;
  int64_t numel() const;
  template <class T> const T* as() const { return reinterpret_cast<const T*>(data); }
};

// A whole file read into memory and validated. Throws reparq::InputError naming the file and
// the problem: header length bounded (<= 100 MB) and inside the file, valid JSON object,
// known dtypes, shapes non-negative, dtype x shape == byte range, offsets inside the data
// section, no overlaps, no holes (the byte buffer is entirely indexed).
// Also rejected: duplicate keys, fields other than dtype/shape/data_offsets in an entry,
// a "__metadata__" that is not an object of strings, JSON nested deeper than a header can be.
// tensors() lists tensors in data-offset order; "__pad.*" tensors are validated but neither
// listed nor found. The data section starts 64-byte aligned in memory, so a tensor whose
// offset is a multiple of 64 (all tensors reparq writes) is 64-byte aligned.
class SafeTensorsFile {
 public:
  static SafeTensorsFile open(const std::string& path);
  static SafeTensorsFile from_bytes(std::vector<uint8_t> bytes, const std::string& label);

  const std::string& path() const { return path_; }
  const std::vector<TensorView>& tensors() const { return tensors_; }
  const TensorView* find(const std::string& name) const;   // nullptr if absent
  // Throws InputError "<file>: missing tensor 'name'" when absent; when `shape` is non-empty,
  // also checks it: "<file>: tensor 'name' has shape [a, b], expected [c, d]".
  const TensorView& get(const std::string& name, const std::vector<int64_t>& shape = {}) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Metadata helpers: throw InputError naming the key when missing or unparsable.
  std::string meta_str(const std::string& key) const;
  std::string meta_str(const std::string& key, const std::string& fallback) const;
  int64_t meta_int(const std::string& key) const;
  int64_t meta_int(const std::string& key, int64_t fallback) const;
  double meta_double(const std::string& key, double fallback) const;

 private:
  std::string path_;
  std::shared_ptr<std::vector<uint8_t>> bytes_;
  std::vector<TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Collects tensors (copies their bytes) and writes them in insertion order. Each tensor's data
// starts on a 64-byte boundary: the JSON header is padded with spaces so the data section starts
// aligned, and an explicit "__pad.N" U8 tensor fills the gap after a tensor whose size is not a
// multiple of 64 (safetensors forbids holes). write() is write_file_atomic() below.
// add() and set_metadata() throw reparq::Error (kExitInternal) on misuse: reserved or duplicate
// name, negative dimension, nbytes != dtype x shape, text that is not valid UTF-8.
class SafeTensorsWriter {
 public:
  void add(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
           const void* data, size_t nbytes);
  void set_metadata(const std::string& key, const std::string& value);
  void write(const std::string& path) const;
  std::vector<uint8_t> to_bytes() const;

 private:
  struct Entry { std::string name; DType dtype; std::vector<int64_t> shape; std::vector<uint8_t> bytes; };
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

// Writes `bytes` to a temporary file in the same directory, fsyncs, names it "<path>.tmp.<pid>"
// and renames it over `path`. On Linux the temporary file has no name while it is written
// (O_TMPFILE), so a run killed meanwhile leaves nothing; elsewhere it is "<path>.tmp.<pid>"
// from the start (docs/RELIABILITY.md). Throws InputError naming the path when the directory
// is not writable.
void write_file_atomic(const std::string& path, const void* data, size_t n);

}  // namespace reparq
