// What the CPU this process runs on can do, read once from CPUID and XGETBV (the OS must have enabled the
// AVX-512 and AMX register state for a feature to count). Kernels are chosen from this at run time: oneDNN
// picks its own JIT kernels (AMX-BF16, AVX512-BF16, AVX-512, AVX2) and lcdkit's precision knob
// (autograd/cpu/precision.h) allows bf16 only where the CPU computes it natively.
#pragma once
#include <string>

namespace lcd::cpu {

struct Features {
  std::string model;      // /proc/cpuinfo's "model name", or the CPUID brand string
  bool avx2 = false;
  bool avx512f = false;   // AVX-512 Foundation (with the OS saving ZMM state)
  bool avx512_bf16 = false;
  bool amx_bf16 = false;  // AMX tiles with BF16 (with the OS enabling tile state)
  // "avx512f avx512_bf16 amx_bf16": the flags above that are present, named as /proc/cpuinfo names them.
  std::string flags() const;
  bool native_bf16() const { return avx512_bf16 || amx_bf16; }
};

const Features& features();  // of this CPU, detected on first use

// The instruction set oneDNN's kernels run with here ("avx512_core_amx", "avx2", ...), after any
// ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA limit from the environment.
std::string kernel_isa();

}  // namespace lcd::cpu
