// cpu.h: which instruction sets this CPU runs, and the one knob that caps the set the kernels use.
//
// Nothing outside kernels/cpu.cpp and the kernel tables asks which ISA it runs on (DESIGN.md,
// practice 4). The cap comes from, in order of precedence:
//   1. set_isa_cap(isa)       -- e.g. the `--isa` flag of `reparq run` / `reparq bench`;
//   2. env REPARQ_MAX_ISA     -- scalar | avx2 | avx512vnni (x86) | neon | neondot | neoni8mm (Arm);
//   3. nothing                -- the best ISA the CPU has.
// Asking for an ISA the CPU lacks, or spelling it wrong, is a reparq::UsageError.
#pragma once

#include <string>

namespace reparq {

// Ordered within one architecture family: a cap admits every ISA at or below it. The x86 and
// Arm values never coexist: isa_available() is false for the other family's values.
enum class Isa : int {
  Scalar = 0,      // portable C++, the reference kernels
  Avx2 = 1,        // x86: AVX2 + FMA
  Avx512Vnni = 2,  // x86: AVX-512 F/BW/VL + VNNI (vpdpbusd)
  Neon = 3,        // Arm64: Advanced SIMD (every AArch64 CPU), widening multiplies
  NeonDot = 4,     // Arm64: + dot product (ARMv8.2 FEAT_DotProd, SDOT/UDOT)
  NeonI8mm = 5,    // Arm64: + int8 matrix multiply (ARMv8.6 FEAT_I8MM, mixed-sign SUDOT/USMMLA)
};
constexpr int kIsaCount = 6;

// Raw feature bits found by cpuid/xgetbv on x86 and getauxval(AT_HWCAP, AT_HWCAP2) on Arm64
// Linux (each family's bits are false on the other).
struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512vnni = false;
  bool avx512vbmi = false;  // vpermi2b (byte tables: VitRowOps::map_bytes)
  bool avx_vnni = false;  // VEX-encoded vpdpbusd on ymm (not used by a kernel yet)
  bool asimd = false;     // Arm64 HWCAP_ASIMD
  bool asimddp = false;   // Arm64 HWCAP_ASIMDDP (SDOT/UDOT)
  bool i8mm = false;      // Arm64 HWCAP2_I8MM (USDOT/SUDOT/USMMLA/SMMLA)
};

// Probed once, cached.
const CpuFeatures& cpu_features();

// True when the CPU (and the OS, via XCR0) supports `isa` and the build contains its kernels.
bool isa_available(Isa isa);

// The best available ISA, ignoring any cap.
Isa detected_isa();

// The ISA the kernels should use: detected_isa() capped by set_isa_cap() or REPARQ_MAX_ISA.
// Reads the environment on every call (cheap; call it at prepare time, not in hot loops).
// Throws UsageError if REPARQ_MAX_ISA is not one of the allowed names or names an ISA this
// CPU lacks.
Isa best_isa();

// Caps the ISA for this process (overrides REPARQ_MAX_ISA). Throws UsageError if the CPU lacks it.
void set_isa_cap(Isa cap);
// Removes a cap set by set_isa_cap() (REPARQ_MAX_ISA applies again).
void clear_isa_cap();

// "scalar", "avx2", "avx512vnni", "neon", "neondot", "neoni8mm".
const char* isa_name(Isa isa);

// Parses a name as written by isa_name(). Throws UsageError naming `what` (e.g. "--isa" or
// "REPARQ_MAX_ISA") and the allowed values.
Isa parse_isa(const std::string& name, const char* what);

}  // namespace reparq
