// The precision knob (see precision.h).
#include "autograd/cpu/precision.h"

#include <atomic>

#include "autograd/cpu/features.h"
#include "autograd/errors.h"

namespace lcd {

namespace {
std::atomic<Precision> g_precision{Precision::kFp32};
}

Precision parse_precision(const std::string& text, const std::string& what) {
  if (text == "fp32") return Precision::kFp32;
  if (text == "bf16") return Precision::kBf16;
  throw ValueError(what + ": precision \"" + text + "\" is not fp32 or bf16");
}

const char* precision_name(Precision p) { return p == Precision::kBf16 ? "bf16" : "fp32"; }

bool bf16_supported() {
  const std::string isa = cpu::kernel_isa();
  return cpu::features().native_bf16() && (isa == "avx512_core_bf16" || isa == "avx512_core_amx");
}

Precision resolve_precision(Precision requested, std::string* notice) {
  notice->clear();
  if (requested != Precision::kBf16 || bf16_supported()) return requested;
  *notice = cpu::features().native_bf16()
                ? "bf16 requested, but oneDNN is limited to " + cpu::kernel_isa() + " here: running fp32"
                : "bf16 requested, but this CPU (" + cpu::features().model +
                      ") has neither AMX-BF16 nor AVX512-BF16: running fp32";
  return Precision::kFp32;
}

// bf16 wherever the CPU computes it natively, measured faster than fp32 at this UNet's shapes on both kinds
// (bench/pytorch/compare.sh, 2 threads, lcd-step): AMX tiles on a Xeon Emerald Rapids (0.29 s against
// 0.46 s fp32) and AVX512-BF16 on an AMD EPYC Zen 4 (0.20 s against 0.31 s). The one exception is a CPU with
// AMX whose oneDNN is limited below it to AVX512_CORE_BF16 kernels: that stand-in for a CPU without AMX
// measured bf16 slower (0.61 s against 0.42 s), so such a limit keeps fp32.
Precision default_precision() {
  if (!bf16_supported()) return Precision::kFp32;
  const bool amx_held_back = cpu::features().amx_bf16 && cpu::kernel_isa() != "avx512_core_amx";
  return amx_held_back ? Precision::kFp32 : Precision::kBf16;
}

Precision compute_precision() { return g_precision.load(std::memory_order_relaxed); }

void set_compute_precision(Precision p) {
  if (p == Precision::kBf16 && !bf16_supported())
    throw ValueError("bf16 compute precision set on a CPU without native bf16 (resolve_precision first)");
  g_precision.store(p, std::memory_order_relaxed);
}

PrecisionGuard::PrecisionGuard(Precision p) : previous_(compute_precision()) { set_compute_precision(p); }
PrecisionGuard::~PrecisionGuard() { g_precision.store(previous_, std::memory_order_relaxed); }

}  // namespace lcd
