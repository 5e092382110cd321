// Tests of the safetensors reader and writer: round trips, the on-disk layout (64-byte
// alignment, padding tensors), atomic writes, and a catalogue of malformed files, each of
// which must fail with an InputError that names the file and the problem.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "kernels/error.h"
#include "kernels/safetensors.h"

namespace fs = std::filesystem;
using namespace reparq;

namespace {

// A fresh directory under the system temp dir, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = fs::temp_directory_path() /
            ("reparq_st_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(path_)) names.push_back(e.path().filename().string());
    return names;
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void write_raw(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::vector<uint8_t> read_raw(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A file built by hand: 8-byte little-endian length, the header text, `data_bytes` bytes.
std::vector<uint8_t> raw_file(const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> b(8 + header.size() + data_bytes);
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>(n >> (8 * i));
  std::copy(header.begin(), header.end(), b.begin() + 8);
  for (size_t i = 0; i < data_bytes; ++i) b[8 + header.size() + i] = static_cast<uint8_t>(i * 7 + 1);
  return b;
}

uint64_t header_len(const std::vector<uint8_t>& b) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | b[i];
  return n;
}

// Runs `f`, which must throw an InputError whose message starts with "<label>: " and
// contains `needle`.
template <class F>
void expect_input_error(F&& f, const std::string& label, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected an InputError containing: " << needle;
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind(label + ": ", 0), 0u) << "message does not start with the label: " << msg;
    EXPECT_NE(msg.find(needle), std::string::npos)
        << "message: " << msg << "\nexpected to contain: " << needle;
    EXPECT_EQ(e.code(), kExitInput);
  }
}

template <class T>
std::vector<T> iota_vec(size_t n, T start) {
  std::vector<T> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<T>(start + static_cast<T>(i));
  return v;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// dtypes

TEST(SafeTensorsDType, NamesSizesAndParsing) {
  const struct { DType t; const char* name; size_t size; } all[] = {
      {DType::F32, "F32", 4}, {DType::F16, "F16", 2}, {DType::BF16, "BF16", 2}, {DType::I8, "I8", 1},
      {DType::U8, "U8", 1},   {DType::I32, "I32", 4}, {DType::I64, "I64", 8}};
  for (const auto& d : all) {
    EXPECT_STREQ(dtype_name(d.t), d.name);
    EXPECT_EQ(dtype_size(d.t), d.size) << d.name;
    DType parsed = DType::F32;
    ASSERT_TRUE(dtype_from_name(d.name, &parsed)) << d.name;
    EXPECT_EQ(parsed, d.t);
  }
  DType unused;
  EXPECT_FALSE(dtype_from_name("F64", &unused));
  EXPECT_FALSE(dtype_from_name("f32", &unused));
  EXPECT_FALSE(dtype_from_name("", &unused));
}

// ---------------------------------------------------------------------------------------------
// Round trips

namespace {

// One tensor of every dtype, with shapes that leave gaps to pad, plus metadata.
SafeTensorsWriter writer_with_all_dtypes() {
  static const std::vector<float> f32 = {1.5f, -2.25f, 3.0f, 1e-30f, -0.0f, 65504.0f};
  static const std::vector<uint16_t> f16 = {0x3c00, 0xc000, 0x7bff};       // 1, -2, 65504
  static const std::vector<uint16_t> bf16 = {0x3f80, 0x4049, 0xbf80, 0x0000};  // 1, 3.14, -1, 0
  static const std::vector<int8_t> i8 = {-128, -1, 0, 1, 127};
  static const std::vector<uint8_t> u8 = iota_vec<uint8_t>(77, 3);
  static const std::vector<int32_t> i32 = {INT32_MIN, -7, 0, 9, INT32_MAX, 42};
  static const std::vector<int64_t> i64 = {INT64_MIN, -1, INT64_MAX};
  SafeTensorsWriter w;
  w.add("blocks.0.attn.qkv.weight", DType::F32, {2, 3}, f32.data(), f32.size() * 4);
  w.add("half", DType::F16, {3}, f16.data(), f16.size() * 2);
  w.add("brain", DType::BF16, {2, 2}, bf16.data(), bf16.size() * 2);
  w.add("codes", DType::I8, {5}, i8.data(), i8.size());
  w.add("bytes", DType::U8, {7, 11}, u8.data(), u8.size());
  w.add("acc", DType::I32, {3, 1, 2}, i32.data(), i32.size() * 4);
  w.add("wide", DType::I64, {3}, i64.data(), i64.size() * 8);
  w.set_metadata("format", "reparq-int8");
  w.set_metadata("bits", "8");
  w.set_metadata("scale", "0.125");
  w.set_metadata("note", "unicode \xc3\xa9 and \"quotes\"");
  return w;
}

void expect_all_dtypes(const SafeTensorsFile& f) {
  ASSERT_EQ(f.tensors().size(), 7u);
  const char* order[] = {"blocks.0.attn.qkv.weight", "half", "brain", "codes", "bytes", "acc", "wide"};
  for (size_t i = 0; i < 7; ++i) EXPECT_EQ(f.tensors()[i].name, order[i]) << "tensors() keeps write order";

  const TensorView& w = f.get("blocks.0.attn.qkv.weight", {2, 3});
  EXPECT_EQ(w.dtype, DType::F32);
  EXPECT_EQ(w.numel(), 6);
  EXPECT_EQ(w.nbytes, 24u);
  EXPECT_EQ(w.as<float>()[0], 1.5f);
  EXPECT_EQ(w.as<float>()[3], 1e-30f);
  EXPECT_TRUE(std::signbit(w.as<float>()[4]));
  EXPECT_EQ(w.as<float>()[5], 65504.0f);

  EXPECT_EQ(f.get("half", {3}).as<uint16_t>()[2], 0x7bff);
  EXPECT_EQ(f.get("brain", {2, 2}).dtype, DType::BF16);
  EXPECT_EQ(f.get("brain").as<uint16_t>()[1], 0x4049);
  EXPECT_EQ(f.get("codes").as<int8_t>()[0], -128);
  EXPECT_EQ(f.get("codes").as<int8_t>()[4], 127);
  const TensorView& b = f.get("bytes", {7, 11});
  for (int i = 0; i < 77; ++i) ASSERT_EQ(b.as<uint8_t>()[i], static_cast<uint8_t>(3 + i));
  EXPECT_EQ(f.get("acc", {3, 1, 2}).as<int32_t>()[0], INT32_MIN);
  EXPECT_EQ(f.get("acc").as<int32_t>()[4], INT32_MAX);
  EXPECT_EQ(f.get("wide").dtype, DType::I64);
  EXPECT_EQ(f.get("wide").as<int64_t>()[0], INT64_MIN);
  EXPECT_EQ(f.get("wide").as<int64_t>()[2], INT64_MAX);

  EXPECT_EQ(f.metadata().size(), 4u);
  EXPECT_EQ(f.meta_str("format"), "reparq-int8");
  EXPECT_EQ(f.meta_int("bits"), 8);
  EXPECT_EQ(f.meta_double("scale", 0.0), 0.125);
  EXPECT_EQ(f.meta_str("note"), "unicode \xc3\xa9 and \"quotes\"");
}

}  // namespace

TEST(SafeTensorsRoundTrip, AllDTypesInMemory) {
  const SafeTensorsFile f = SafeTensorsFile::from_bytes(writer_with_all_dtypes().to_bytes(), "mem");
  EXPECT_EQ(f.path(), "mem");
  expect_all_dtypes(f);
}

TEST(SafeTensorsRoundTrip, AllDTypesOnDisk) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  const SafeTensorsWriter w = writer_with_all_dtypes();
  w.write(path);
  EXPECT_EQ(read_raw(path), w.to_bytes()) << "write() writes exactly to_bytes()";
  const SafeTensorsFile f = SafeTensorsFile::open(path);
  EXPECT_EQ(f.path(), path);
  expect_all_dtypes(f);
}

TEST(SafeTensorsRoundTrip, ScalarEmptyAndNoTensors) {
  SafeTensorsWriter w;
  const float one = 1.0f;
  w.add("scalar", DType::F32, {}, &one, 4);
  w.add("empty", DType::I32, {0, 5}, nullptr, 0);
  w.add("after", DType::U8, {1}, "x", 1);
  const SafeTensorsFile f = SafeTensorsFile::from_bytes(w.to_bytes(), "mem");
  EXPECT_EQ(f.get("scalar").numel(), 1);
  EXPECT_EQ(f.get("scalar").as<float>()[0], 1.0f);
  EXPECT_EQ(f.get("empty", {0, 5}).numel(), 0);
  EXPECT_EQ(f.get("empty").nbytes, 0u);
  EXPECT_EQ(f.get("after").as<char>()[0], 'x');

  const SafeTensorsFile none = SafeTensorsFile::from_bytes(SafeTensorsWriter().to_bytes(), "none");
  EXPECT_TRUE(none.tensors().empty());
  EXPECT_TRUE(none.metadata().empty());
}

TEST(SafeTensorsRoundTrip, ZeroDimensionAllowsHugeOtherDimensions) {
  // numel is 0, whatever the other dimensions: not an overflow.
  const auto b = raw_file(R"({"z":{"dtype":"F32","shape":[0,4611686018427387904,8],"data_offsets":[0,0]}})", 0);
  EXPECT_EQ(SafeTensorsFile::from_bytes(b, "z").get("z").numel(), 0);
}

TEST(SafeTensorsRoundTrip, HeaderMayTrailWhitespace) {
  const auto b = raw_file("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}} \t\r\n ", 2);
  EXPECT_EQ(SafeTensorsFile::from_bytes(b, "ws").get("a", {2}).nbytes, 2u);
}

TEST(SafeTensorsRoundTrip, ReadsForeignLayoutWithoutPadding) {
  // Other writers pack tensors back to back at unaligned offsets: still valid.
  const auto b = raw_file(R"({"__metadata__":{"format":"pt"},)"
                          R"("b":{"dtype":"U8","shape":[3],"data_offsets":[4,7]},)"
                          R"("a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                          7);
  const SafeTensorsFile f = SafeTensorsFile::from_bytes(b, "foreign");
  ASSERT_EQ(f.tensors().size(), 2u);
  EXPECT_EQ(f.tensors()[0].name, "a") << "listed in data order";
  EXPECT_EQ(f.tensors()[1].name, "b");
  EXPECT_EQ(f.get("b").as<uint8_t>()[0], static_cast<uint8_t>(4 * 7 + 1));
  EXPECT_EQ(f.meta_str("format"), "pt");
}

TEST(SafeTensorsRoundTrip, CopiesShareTheBuffer) {
  SafeTensorsFile copy = SafeTensorsFile::from_bytes(writer_with_all_dtypes().to_bytes(), "mem");
  {
    const SafeTensorsFile original = SafeTensorsFile::from_bytes(writer_with_all_dtypes().to_bytes(), "mem");
    copy = original;
  }  // the original is gone; the views must still point at live bytes
  expect_all_dtypes(copy);
}

// ---------------------------------------------------------------------------------------------
// Layout written

TEST(SafeTensorsLayout, DataAndEveryTensorAre64ByteAligned) {
  const std::vector<uint8_t> bytes = writer_with_all_dtypes().to_bytes();

  // Check the bytes themselves, independently of the reader.
  const uint64_t hl = header_len(bytes);
  ASSERT_LE(8 + hl, bytes.size());
  EXPECT_EQ((8 + hl) % 64, 0u) << "data section must start on a 64-byte boundary";
  const std::string text(bytes.begin() + 8, bytes.begin() + 8 + static_cast<long>(hl));
  EXPECT_EQ(text.front(), '{');
  const size_t last = text.find_last_not_of(' ');
  ASSERT_NE(last, std::string::npos);
  EXPECT_EQ(text[last], '}') << "the header is padded with spaces only";

  const nlohmann::json h = nlohmann::json::parse(text);
  const uint64_t data_size = bytes.size() - 8 - hl;
  int tensors = 0, pads = 0;
  uint64_t covered = 0;
  for (auto it = h.begin(); it != h.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const uint64_t begin = (*it)["data_offsets"][0], end = (*it)["data_offsets"][1];
    covered += end - begin;
    if (it.key().rfind("__pad.", 0) == 0) {
      ++pads;
      EXPECT_EQ((*it)["dtype"], "U8");
      EXPECT_EQ((*it)["shape"], nlohmann::json::array({end - begin}));
      EXPECT_LT(end - begin, 64u);
      EXPECT_EQ(end % 64, 0u) << it.key() << " must end where the next tensor starts, aligned";
      for (uint64_t i = begin; i < end; ++i) EXPECT_EQ(bytes[8 + hl + i], 0) << "padding is zeroed";
    } else {
      ++tensors;
      EXPECT_EQ(begin % 64, 0u) << it.key() << " starts at offset " << begin;
    }
  }
  EXPECT_EQ(tensors, 7);
  EXPECT_EQ(pads, 6) << "one pad after every tensor but the last (none is a multiple of 64)";
  EXPECT_EQ(covered, data_size) << "no holes";

  // And the reader hands out 64-byte aligned pointers, from memory and from disk.
  const SafeTensorsFile f = SafeTensorsFile::from_bytes(bytes, "mem");
  for (const TensorView& t : f.tensors())
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 64, 0u) << t.name;
  TempDir dir;
  write_raw(dir.file("a.safetensors"), bytes);
  const SafeTensorsFile g = SafeTensorsFile::open(dir.file("a.safetensors"));
  for (const TensorView& t : g.tensors())
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 64, 0u) << t.name;
}

TEST(SafeTensorsLayout, PadTensorsAreHiddenButValidated) {
  const std::vector<uint8_t> bytes = writer_with_all_dtypes().to_bytes();
  const SafeTensorsFile f = SafeTensorsFile::from_bytes(bytes, "mem");
  for (const TensorView& t : f.tensors()) EXPECT_NE(t.name.rfind("__pad.", 0), 0u) << t.name;
  EXPECT_EQ(f.find("__pad.0"), nullptr);

  // A pad whose shape disagrees with its range is as wrong as any other tensor.
  const auto bad = raw_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                            R"("__pad.0":{"dtype":"U8","shape":[3],"data_offsets":[4,64]}})",
                            64);
  expect_input_error([&] { SafeTensorsFile::from_bytes(bad, "pad"); }, "pad", "tensor '__pad.0'");
}

TEST(SafeTensorsLayout, MultipleOf64NeedsNoPad) {
  SafeTensorsWriter w;
  const std::vector<float> a(16, 1.0f), b(3, 2.0f);
  w.add("a", DType::F32, {16}, a.data(), 64);
  w.add("b", DType::F32, {3}, b.data(), 12);
  const std::vector<uint8_t> bytes = w.to_bytes();
  const uint64_t hl = header_len(bytes);
  const nlohmann::json h = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<long>(hl));
  EXPECT_EQ(h.size(), 2u) << h.dump();
  EXPECT_EQ(bytes.size(), 8 + hl + 64 + 12) << "no pad after the last tensor";
}

// ---------------------------------------------------------------------------------------------
// Atomic writes

TEST(SafeTensorsWrite, AtomicWriteLeavesNoTemporaryFile) {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  writer_with_all_dtypes().write(path);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"m.safetensors"});

  // Overwriting replaces the content whole.
  SafeTensorsWriter small;
  small.add("only", DType::U8, {2}, "ab", 2);
  small.write(path);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"m.safetensors"});
  const SafeTensorsFile f = SafeTensorsFile::open(path);
  ASSERT_EQ(f.tensors().size(), 1u);
  EXPECT_EQ(f.tensors()[0].name, "only");
}

TEST(SafeTensorsWrite, MissingDirectoryFailsCleanly) {
  TempDir dir;
  const std::string path = dir.file("no/such/dir/m.safetensors");
  expect_input_error([&] { writer_with_all_dtypes().write(path); }, path, "cannot write");
  EXPECT_TRUE(dir.entries().empty());
}

TEST(SafeTensorsWrite, TargetIsADirectoryRemovesTemporary) {
  TempDir dir;
  fs::create_directory(dir.path() / "taken");
  const std::string path = dir.file("taken");
  expect_input_error([&] { write_file_atomic(path, "abc", 3); }, path, "rename");
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"taken"}) << "the temporary file was removed";
}

TEST(SafeTensorsWrite, WriteFileAtomicWritesExactBytes) {
  TempDir dir;
  const std::vector<uint8_t> payload = iota_vec<uint8_t>(1000, 0);
  write_file_atomic(dir.file("blob"), payload.data(), payload.size());
  EXPECT_EQ(read_raw(dir.file("blob")), payload);
  write_file_atomic(dir.file("empty"), nullptr, 0);
  EXPECT_EQ(fs::file_size(dir.file("empty")), 0u);
}

TEST(SafeTensorsWrite, WriterRejectsMisuse) {
  const uint8_t four[4] = {};
  auto expect_internal = [](auto&& f, const std::string& needle) {
    try {
      f();
      ADD_FAILURE() << "no exception; expected: " << needle;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), kExitInternal);
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  SafeTensorsWriter w;
  w.add("a", DType::U8, {4}, four, 4);
  expect_internal([&] { w.add("a", DType::U8, {4}, four, 4); }, "duplicate tensor 'a'");
  expect_internal([&] { w.add("__pad.3", DType::U8, {4}, four, 4); }, "reserved");
  expect_internal([&] { w.add("__metadata__", DType::U8, {4}, four, 4); }, "reserved");
  expect_internal([&] { w.add("", DType::U8, {4}, four, 4); }, "empty tensor name");
  expect_internal([&] { w.add("b", DType::F32, {2}, four, 4); }, "needs 8 bytes, got 4");
  expect_internal([&] { w.add("c", DType::U8, {-4}, four, 4); }, "negative dimension");
  expect_internal([&] { w.add("d", DType::U8, {1LL << 40, 1LL << 40}, four, 4); }, "too large");
  expect_internal([&] { w.add("\xff\xfe", DType::U8, {4}, four, 4); }, "UTF-8");
  expect_internal([&] { w.set_metadata("k", "\xc3"); }, "UTF-8");
}

// ---------------------------------------------------------------------------------------------
// Malformed files: every case is checked from memory and from a file on disk.

namespace {

struct BadCase {
  const char* name;
  std::vector<uint8_t> bytes;
  std::string expected;  // substring of the message (after "<label>: ")
};

std::vector<uint8_t> with_len(uint64_t len, size_t total) {
  std::vector<uint8_t> b(total, ' ');
  for (size_t i = 0; i < 8 && i < total; ++i) b[i] = static_cast<uint8_t>(len >> (8 * i));
  return b;
}

const std::string kA = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";

std::vector<BadCase> bad_cases() {
  std::string deep(10000, '[');
  deep += std::string(10000, ']');
  std::string bad_utf8 = "{\"\xff\":" + std::string(R"({"dtype":"U8","shape":[0],"data_offsets":[0,0]}})");
  return {
      {"Empty", {}, "empty file"},
      {"ShorterThanLength", {1, 0, 0, 0, 0}, "truncated: file has 5 bytes"},
      {"HeaderLengthHuge", with_len(200'000'000, 64), "header length 200000000 exceeds the limit"},
      {"HeaderLengthAllOnes", with_len(~uint64_t{0}, 64), "exceeds the limit"},
      {"HeaderBeyondFile", with_len(1234, 100), "truncated: header says 1234 bytes but file has 92"},
      {"InvalidJson", raw_file(R"({"a":)", 0), "header is not valid JSON"},
      {"InvalidUtf8", raw_file(bad_utf8, 0), "header is not valid JSON"},
      {"EmptyHeader", raw_file("", 0), "header is not valid JSON"},
      {"NotAnObject", raw_file("[1, 2]", 0), "header is not a JSON object"},
      {"LeadingWhitespace", raw_file(" {}", 0), "header must begin with '{'"},
      {"TooDeep", raw_file(deep, 0), "nests deeper"},
      {"DuplicateKey", raw_file("{" + kA + "," + kA + "}", 8), "duplicate key 'a'"},
      {"EntryNotObject", raw_file(R"({"a":3})", 0), "tensor 'a': entry is not a JSON object"},
      {"MissingOffsets", raw_file(R"({"a":{"dtype":"U8","shape":[1]}})", 1), "tensor 'a': missing 'data_offsets'"},
      {"MissingDtype", raw_file(R"({"a":{"shape":[1],"data_offsets":[0,1]}})", 1), "missing 'dtype'"},
      {"UnexpectedField",
       raw_file(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":1}})", 1),
       "unexpected field 'x'"},
      {"UnknownDtype", raw_file(R"({"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", 8),
       "tensor 'a': unknown dtype 'F64'"},
      {"DtypeNotString", raw_file(R"({"a":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", 4),
       "dtype is not a string"},
      {"NegativeShape", raw_file(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8),
       "shape dimension -2 is negative"},
      {"FractionalShape", raw_file(R"({"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", 8),
       "shape dimension is not an integer"},
      {"ShapeNotArray", raw_file(R"({"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", 8),
       "shape is not a JSON array"},
      {"ShapeOverflow",
       raw_file(R"({"a":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8),
       "is too large"},
      {"ShapeTimesDtypeOverflow",
       raw_file(R"({"a":{"dtype":"I64","shape":[4611686018427387904],"data_offsets":[0,8]}})", 8),
       "is too large"},
      {"DimensionAboveInt64",
       raw_file(R"({"a":{"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,8]}})", 8),
       "shape dimension 18446744073709551615 is too large"},
      {"SizeMismatch", raw_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
       "tensor 'a': F32 x shape [3] is 12 bytes but data_offsets [0, 8] cover 8"},
      {"OffsetsNotPair", raw_file(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0]}})", 1),
       "data_offsets is not an array of two integers"},
      {"NegativeOffset", raw_file(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}})", 1),
       "data_offsets begin -1 is negative"},
      {"BeginAfterEnd", raw_file(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[8,0]}})", 8),
       "data_offsets [8, 0] has begin > end"},
      {"OffsetsBeyondData", raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", 8),
       "data_offsets [8, 16] reach beyond the data section of 8 bytes"},
      {"HugeOffset",
       raw_file(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[18446744073709551614,18446744073709551615]}})", 8),
       "is too large"},
      {"Overlap",
       raw_file("{" + kA + R"(,"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
       "tensors 'a' [0, 8) and 'b' [4, 12) overlap"},
      {"SameRangeTwice",
       raw_file("{" + kA + R"(,"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8),
       "overlap"},
      {"Hole",
       raw_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                R"("b":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}})",
                12),
       "hole in the data section: bytes [4, 8) belong to no tensor"},
      {"HoleAtStart", raw_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})", 8),
       "hole in the data section: bytes [0, 4)"},
      {"TrailingBytes", raw_file("{" + kA + "}", 12),
       "trailing bytes: the data section has 12 bytes but the tensors cover only the first 8"},
      {"DataWithoutTensors", raw_file("{}", 3), "trailing bytes"},
      {"MetadataNotString", raw_file(R"({"__metadata__":{"k":1},)" + kA + "}", 8),
       "__metadata__ value of 'k' is not a string"},
      {"MetadataNotObject", raw_file(R"({"__metadata__":["k"],)" + kA + "}", 8),
       "__metadata__ is not a JSON object"},
  };
}

class SafeTensorsBad : public ::testing::TestWithParam<size_t> {};

}  // namespace

TEST_P(SafeTensorsBad, RejectedFromMemoryAndDisk) {
  const BadCase c = bad_cases()[GetParam()];
  SCOPED_TRACE(c.name);
  expect_input_error([&] { SafeTensorsFile::from_bytes(c.bytes, "bad.safetensors"); }, "bad.safetensors",
                     c.expected);
  TempDir dir;
  const std::string path = dir.file(std::string(c.name) + ".safetensors");
  write_raw(path, c.bytes);
  expect_input_error([&] { SafeTensorsFile::open(path); }, path, c.expected);
}

INSTANTIATE_TEST_SUITE_P(Catalogue, SafeTensorsBad, ::testing::Range<size_t>(0, bad_cases().size()),
                         [](const ::testing::TestParamInfo<size_t>& info) {
                           return std::string(bad_cases()[info.param].name);
                         });

TEST(SafeTensorsOpen, DirectoryAndMissingPath) {
  TempDir dir;
  const std::string d = dir.path().string();
  expect_input_error([&] { SafeTensorsFile::open(d); }, d, "is a directory");
  const std::string missing = dir.file("absent.safetensors");
  expect_input_error([&] { SafeTensorsFile::open(missing); }, missing, "cannot open: No such file or directory");
}

TEST(SafeTensorsOpen, GetChecksNameAndShape) {
  const SafeTensorsFile f = SafeTensorsFile::from_bytes(writer_with_all_dtypes().to_bytes(), "m.st");
  expect_input_error([&] { f.get("blocks.0.norm1.weight"); }, "m.st", "missing tensor 'blocks.0.norm1.weight'");
  expect_input_error([&] { f.get("blocks.0.attn.qkv.weight", {3, 2}); }, "m.st",
                     "tensor 'blocks.0.attn.qkv.weight' has shape [2, 3], expected [3, 2]");
  expect_input_error([&] { f.get("wide", {3, 1}); }, "m.st", "has shape [3], expected [3, 1]");
  EXPECT_EQ(f.find("nope"), nullptr);
  ASSERT_NE(f.find("codes"), nullptr);
  EXPECT_EQ(f.find("codes")->numel(), 5);
}

TEST(SafeTensorsOpen, MetadataHelpers) {
  SafeTensorsWriter w;
  w.set_metadata("n", "-42");
  w.set_metadata("big", "99999999999999999999");
  w.set_metadata("word", "abc");
  w.set_metadata("partial", "12x");
  w.set_metadata("x", "-2.5e-3");
  const SafeTensorsFile f = SafeTensorsFile::from_bytes(w.to_bytes(), "meta.st");
  EXPECT_EQ(f.meta_int("n"), -42);
  EXPECT_EQ(f.meta_int("n", 7), -42);
  EXPECT_EQ(f.meta_int("absent", 7), 7);
  EXPECT_EQ(f.meta_str("absent", "dflt"), "dflt");
  EXPECT_EQ(f.meta_str("word", "dflt"), "abc");
  EXPECT_DOUBLE_EQ(f.meta_double("x", 0.0), -2.5e-3);
  EXPECT_DOUBLE_EQ(f.meta_double("absent", 1.25), 1.25);
  EXPECT_DOUBLE_EQ(f.meta_double("n", 0.0), -42.0);
  expect_input_error([&] { f.meta_str("absent"); }, "meta.st", "missing metadata key 'absent'");
  expect_input_error([&] { f.meta_int("absent"); }, "meta.st", "missing metadata key 'absent'");
  expect_input_error([&] { f.meta_int("word"); }, "meta.st", "metadata key 'word' = 'abc' is not an integer");
  expect_input_error([&] { f.meta_int("partial", 0); }, "meta.st", "'partial' = '12x' is not an integer");
  expect_input_error([&] { f.meta_int("big"); }, "meta.st", "out of the int64 range");
  expect_input_error([&] { f.meta_double("word", 0.0); }, "meta.st", "'word' = 'abc' is not a number");
}

// Random corruption of a valid file must end in a clean InputError or a valid file, never in a
// crash or another exception (run under REPARQ_SANITIZE for the full value of this test).
TEST(SafeTensorsFuzz, MutatedFilesFailCleanly) {
  const std::vector<uint8_t> good = writer_with_all_dtypes().to_bytes();
  const size_t hl = static_cast<size_t>(header_len(good));
  std::mt19937_64 rng(1234);
  int rejected = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::vector<uint8_t> b = good;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % (8 + hl);  // the length and the header are where parsing happens
      switch (rng() % 4) {
        case 0: b[at] = static_cast<uint8_t>(rng()); break;
        case 1: b[at] = "0123456789[]{},\":-"[rng() % 18]; break;
        case 2: b.resize(at); break;
        default: b.insert(b.begin() + static_cast<long>(at), static_cast<uint8_t>(rng())); break;
      }
      if (b.size() < 8 + hl) break;
    }
    try {
      const SafeTensorsFile f = SafeTensorsFile::from_bytes(b, "fuzz");
      for (const TensorView& t : f.tensors()) ASSERT_EQ(t.nbytes, t.numel() * dtype_size(t.dtype));
    } catch (const InputError& e) {
      ASSERT_EQ(std::string(e.what()).rfind("fuzz: ", 0), 0u) << e.what();
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 2500) << "almost every mutation must be caught";
}
