// sysinfo.h: what the machine is and which BLAS LibTorch runs on (reports and benchmarks
// print it; without OpenBLAS, Debian's LibTorch falls back to the ~30x slower reference BLAS).
#pragma once
#include <string>

namespace reparq {

std::string cpu_model_name();          // from /proc/cpuinfo
// Resolved path of the BLAS library mapped into this process (call after a LibTorch GEMM
// ran), or "" when none is mapped.
std::string blas_library();
bool blas_is_openblas(const std::string& lib);
// "Haswell" etc. from OPENBLAS_CORETYPE, or "auto".
std::string openblas_coretype();
// One line for logs: "BLAS: /usr/lib/.../libopenblas.so.0 (OPENBLAS_CORETYPE=Haswell)".
std::string blas_summary();

}  // namespace reparq
