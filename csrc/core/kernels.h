// Internal kernel interface: one table of function pointers per ISA path, chosen at runtime.
//
// A kernel computes a block of the output with the whole K reduction; the drivers in
// csrc/core/ split the work across threads and apply epilogues. Kernels never allocate, never
// throw, and never read past the ranges given by their arguments.
#pragma once

#include <cstdint>

#include "qkernels.h"

namespace qk {

// Layout contract of the int8 "activation panel" that drivers prepare for gemm_s8:
// a: [M, Kp] int8 with Kp = round_up(K, kPanelAlign) and zeros in the padding, so kernels may
// load whole vectors of a; b is the caller's [N, K] matrix and is never read past column K.
inline constexpr int64_t kPanelAlign = 64;

inline constexpr int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

struct KernelTable {
  qk_isa isa;
  // Quantizes n fp32 values with the int8 rule (csrc/formats/int8.h). Writes q[0..n) and returns
  // the scale, or returns NaN and writes zeros when the row holds NaN or Inf.
  float (*quantize_row_int8)(const float* x, int64_t n, int8_t* q);
  // c[m, n] = sum_k a[m, k] * b[n, k] for m < M, n < N, exact in int32.
  // a: panel as above (lda >= Kp), values in [-127, 127]; b: [N, K] (ldb >= K), values in [-127,
  // 127].
  void (*gemm_s8)(const int8_t* a, int64_t lda, const int8_t* b, int64_t ldb, int32_t* c,
                  int64_t ldc, int64_t M, int64_t N, int64_t K);
  // c[m, n] = sum_k x[m, k] * float(w[n, k]) in fp32 (any summation order).
  // x: [M, K] fp32 (ldx >= K); w: [N, K] int8 (ldw >= K).
  void (*gemm_f32_s8)(const float* x, int64_t ldx, const int8_t* w, int64_t ldw, float* c,
                      int64_t ldc, int64_t M, int64_t N, int64_t K);
};

// Defined by each ISA's translation units; absent (nullptr) where not compiled for this target.
const KernelTable* kernels_generic();
const KernelTable* kernels_avx2();
const KernelTable* kernels_avx512();
const KernelTable* kernels_neon();

// The active table (thread-safe; honours QKERNELS_ISA on first use).
const KernelTable& active_kernels();
// The message when QKERNELS_ISA named a path that cannot run (every kernel entry point then
// fails with it until qk_set_isa succeeds), else nullptr.
const char* isa_init_error();

}  // namespace qk
