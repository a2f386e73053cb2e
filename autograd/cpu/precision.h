// The one precision knob (DESIGN.md §10; train.precision, --precision): which operand type the GEMM-based
// kernels (convolutions, linears) use for float tensors.
//   fp32  operands and accumulation in float32: the reference for every golden test.
//   bf16  operands rounded to bfloat16 (weights once, activations as the kernels read them), products
//         accumulated in float32, results float32. Norms, softmax, losses, the LoRA scale, AdamW, EMA and
//         master weights stay float32. Attention's products take bf16 operands only in the tiled no-grad
//         kernel for long sequences with wide heads (Stable Diffusion); the Fashion-MNIST UNet's heads of 8
//         channels are below one bf16 tile and stay float32 (bf16 would cost accuracy and gain nothing).
//         A LoRA layer's forward keeps W and its branch apart (W rounded alone, the branch computed beside it),
//         taped or not, so that an LCD step's target and student are one network (autograd/ops/row_gemm.cpp).
// bf16 is used only where the CPU computes it natively (AMX-BF16 or AVX512-BF16, within any oneDNN ISA
// limit); elsewhere a request for it runs fp32, and resolve_precision says so. Double tensors (gradient
// checks) always compute in double.
#pragma once
#include <string>

namespace lcd {

enum class Precision { kFp32, kBf16 };

// "fp32" / "bf16"; anything else is a ValueError naming `what` (a flag or config key).
Precision parse_precision(const std::string& text, const std::string& what);
const char* precision_name(Precision p);

// Whether this CPU (and oneDNN's ISA limit) computes bf16 natively.
bool bf16_supported();
// The precision to use when `requested` is asked for: bf16 falls back to fp32 where unsupported, with a
// one-line `notice` explaining why (empty otherwise).
Precision resolve_precision(Precision requested, std::string* notice);
// The default of every tool (`auto`): bf16 where the CPU has AMX-BF16 or AVX512-BF16 and oneDNN uses it
// (not on an AMX CPU whose oneDNN is limited to AVX512_CORE_BF16), else fp32.
Precision default_precision();

// The process-wide compute precision (set once by a tool's main, or by PrecisionGuard in tests).
Precision compute_precision();
void set_compute_precision(Precision p);  // must be resolved already (bf16 only where supported)

class PrecisionGuard {
 public:
  explicit PrecisionGuard(Precision p);
  ~PrecisionGuard();
  PrecisionGuard(const PrecisionGuard&) = delete;
  PrecisionGuard& operator=(const PrecisionGuard&) = delete;

 private:
  Precision previous_;
};

}  // namespace lcd
