// fuzz_idx.cpp: libFuzzer harness of the IDX reader (calib/data.cpp read_idx), gzip-compressed
// or plain. read_idx opens a path (through zlib's gzopen), so each input is written to a file
// in /dev/shm first. Allowed outcomes: success or reparq::InputError. The first input byte
// chooses the expected magic (images 0x803 or labels 0x801), the rest is the file.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "calib/data.h"
#include "kernels/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = [] {
    const char* dir = std::getenv("FUZZ_TMPDIR");
    return std::string(dir ? dir : "/dev/shm") + "/reparq-fuzz-idx-" + std::to_string(::getpid());
  }();
  static const struct Cleanup {
    ~Cleanup() { ::unlink(path.c_str()); }
  } cleanup;
  if (size < 1) return 0;
  const int magic = (data[0] & 1) ? 0x00000803 : 0x00000801;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size > 1 && std::fwrite(data + 1, 1, size - 1, f) != size - 1) std::abort();
  std::fclose(f);
  try {
    std::vector<uint8_t> out;
    const std::vector<int64_t> dims = reparq::read_idx(path, magic, &out);
    uint64_t total = 1;
    for (int64_t d : dims) total *= uint64_t(d);
    if (total != out.size()) std::abort();
  } catch (const reparq::InputError&) {
  }
  return 0;
}
