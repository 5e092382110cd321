// cpu.cpp: our own cpuid/xgetbv (x86) and getauxval (Arm64 Linux) probe, and the ISA cap
// (REPARQ_MAX_ISA, set_isa_cap).
#include "kernels/cpu.h"

#include <atomic>
#include <cstdlib>

#include "kernels/error.h"

#if defined(__x86_64__) || defined(_M_X64)
#define REPARQ_X86 1
#include <cpuid.h>
#endif

#if defined(__aarch64__) && defined(__linux__)
#define REPARQ_ARM64_LINUX 1
#include <sys/auxv.h>
#endif

namespace reparq {
namespace {

#if REPARQ_X86
// XCR0 via xgetbv, without needing -mxsave on this (baseline) translation unit.
unsigned long long read_xcr0() {
  unsigned eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
}

CpuFeatures probe() {
  CpuFeatures f;
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx)) return f;
  const unsigned max_leaf = eax;
  if (max_leaf < 7) return f;

  __cpuid_count(1, 0, eax, ebx, ecx, edx);
  const bool osxsave = (ecx >> 27) & 1;
  const bool fma = (ecx >> 12) & 1;
  if (!osxsave) return f;
  const unsigned long long xcr0 = read_xcr0();
  const bool os_ymm = (xcr0 & 0x6) == 0x6;     // SSE + AVX state
  const bool os_zmm = (xcr0 & 0xE6) == 0xE6;   // + opmask, ZMM_Hi256, Hi16_ZMM
  if (!os_ymm) return f;

  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  const unsigned leaf7_max_sub = eax;
  f.avx2 = (ebx >> 5) & 1;
  f.fma = fma;
  if (os_zmm) {
    f.avx512f = (ebx >> 16) & 1;
    f.avx512bw = (ebx >> 30) & 1;
    f.avx512vl = (ebx >> 31) & 1;
    f.avx512vnni = (ecx >> 11) & 1;
    f.avx512vbmi = (ecx >> 1) & 1;
  }
  if (leaf7_max_sub >= 1) {
    __cpuid_count(7, 1, eax, ebx, ecx, edx);
    f.avx_vnni = (eax >> 4) & 1;
  }
  return f;
}
#elif REPARQ_ARM64_LINUX
// Bits of the Linux AArch64 hwcaps ABI (arch/arm64/include/uapi/asm/hwcap.h); spelled out so
// that an older kernel header does not hide them.
constexpr unsigned long kHwcapAsimd = 1UL << 1;
constexpr unsigned long kHwcapAsimddp = 1UL << 20;
constexpr unsigned long kHwcap2I8mm = 1UL << 13;

CpuFeatures probe() {
  CpuFeatures f;
  const unsigned long hwcap = getauxval(AT_HWCAP);
  const unsigned long hwcap2 = getauxval(AT_HWCAP2);
  f.asimd = (hwcap & kHwcapAsimd) != 0;
  f.asimddp = f.asimd && (hwcap & kHwcapAsimddp) != 0;
  f.i8mm = f.asimd && (hwcap2 & kHwcap2I8mm) != 0;
  return f;
}
#else
CpuFeatures probe() { return CpuFeatures{}; }
#endif

// -1: no cap set by set_isa_cap().
std::atomic<int> g_cap{-1};

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = [] {
    CpuFeatures f = probe();
    // Testing: REPARQ_NO_VBMI=1 runs the AVX-512 path as on a CPU without VBMI (Cascade Lake),
    // so that its fallbacks are tested on machines that have it.
    const char* no_vbmi = std::getenv("REPARQ_NO_VBMI");
    if (no_vbmi != nullptr && no_vbmi[0] == '1') f.avx512vbmi = false;
    return f;
  }();
  return features;
}

bool isa_available(Isa isa) {
  const CpuFeatures& f = cpu_features();
  switch (isa) {
    case Isa::Scalar:
      return true;
#if REPARQ_X86 && defined(REPARQ_HAVE_X86_KERNELS)
    case Isa::Avx2:
      return f.avx2 && f.fma;
    case Isa::Avx512Vnni:
      return f.avx512f && f.avx512bw && f.avx512vl && f.avx512vnni;
#endif
#if defined(__aarch64__) && defined(REPARQ_HAVE_ARM_KERNELS)
    case Isa::Neon:
      return f.asimd;
    case Isa::NeonDot:
      return f.asimddp;
    case Isa::NeonI8mm:
      // Armv8.6 CPUs with I8MM also have DotProd; requiring both keeps the ISAs nested.
      return f.i8mm && f.asimddp;
#endif
    default:
      (void)f;
      return false;
  }
}

Isa detected_isa() {
  for (int i = kIsaCount - 1; i > 0; --i) {
    if (isa_available(static_cast<Isa>(i))) return static_cast<Isa>(i);
  }
  return Isa::Scalar;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512Vnni: return "avx512vnni";
    case Isa::Neon: return "neon";
    case Isa::NeonDot: return "neondot";
    case Isa::NeonI8mm: return "neoni8mm";
  }
  return "unknown";
}

Isa parse_isa(const std::string& name, const char* what) {
  for (int i = 0; i < kIsaCount; ++i) {
    if (name == isa_name(static_cast<Isa>(i))) return static_cast<Isa>(i);
  }
  throw UsageError(std::string(what) + ": unknown ISA '" + name +
                   "' (allowed: scalar, avx2, avx512vnni, neon, neondot, neoni8mm)");
}

namespace {
void require_available(Isa isa, const char* what) {
  if (!isa_available(isa)) {
    throw UsageError(std::string(what) + "=" + isa_name(isa) + ": this CPU lacks " +
                     isa_name(isa) + " (best available: " + isa_name(detected_isa()) + ")");
  }
}
}  // namespace

void set_isa_cap(Isa cap) {
  require_available(cap, "--isa");
  g_cap.store(static_cast<int>(cap));
}

void clear_isa_cap() { g_cap.store(-1); }

Isa best_isa() {
  const int flag_cap = g_cap.load();
  if (flag_cap >= 0) return static_cast<Isa>(flag_cap);
  const char* env = std::getenv("REPARQ_MAX_ISA");
  if (env != nullptr && env[0] != '\0') {
    const Isa cap = parse_isa(env, "REPARQ_MAX_ISA");
    require_available(cap, "REPARQ_MAX_ISA");
    return cap;
  }
  return detected_isa();
}

}  // namespace reparq
