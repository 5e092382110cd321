#include "calib/sysinfo.h"

#include <climits>
#include <cstdlib>
#include <fstream>
#include <set>

namespace reparq {

std::string cpu_model_name() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) {
      auto p = line.find(':');
      if (p != std::string::npos) return line.substr(p + 2);
    }
  }
  return "unknown CPU";
}

std::string blas_library() {
  std::ifstream f("/proc/self/maps");
  std::string line;
  std::set<std::string> seen;
  while (std::getline(f, line)) {
    auto p = line.find('/');
    if (p == std::string::npos) continue;
    std::string path = line.substr(p);
    if (seen.count(path)) continue;
    seen.insert(path);
    auto slash = path.rfind('/');
    std::string base = path.substr(slash + 1);
    if (base.find("openblas") != std::string::npos || base.rfind("libblas", 0) == 0 ||
        base.find("blis") != std::string::npos || base.find("mkl_core") != std::string::npos) {
      char buf[PATH_MAX];
      if (realpath(path.c_str(), buf)) return buf;
      return path;
    }
  }
  return "";
}

bool blas_is_openblas(const std::string& lib) { return lib.find("openblas") != std::string::npos; }

std::string openblas_coretype() {
  const char* c = std::getenv("OPENBLAS_CORETYPE");
  return c && *c ? c : "auto";
}

std::string blas_summary() {
  std::string lib = blas_library();
  if (lib.empty()) return "BLAS: none mapped yet";
  std::string s = "BLAS: " + lib;
  if (blas_is_openblas(lib)) s += " (OPENBLAS_CORETYPE=" + openblas_coretype() + ")";
  else s += " (WARNING: not OpenBLAS; LibTorch FP32 will be ~30x slower: apt-get install libopenblas0-openmp)";
  return s;
}

}  // namespace reparq
