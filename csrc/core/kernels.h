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

// Group-wise sub-byte weights (int4, int3, nf4; csrc/formats/), as gemm_q reads them.
enum QFormat : int { kQInt4 = 0, kQInt3 = 1, kQNF4 = 2, kQFormatCount = 3 };

struct QWeights {
  const uint8_t* packed;  // [N, row_bytes] in the format's layout, from the first row to compute
  int64_t row_bytes;
  const float* scales;   // [N, groups]: int4/int3 scale; nf4 absmax
  const uint8_t* zeros;  // [N, groups] zero points, or nullptr: every zero point is `zero`
  int zero;              // int4/int3 symmetric zero point; unused by nf4
  int64_t groups, group_blocks, K;
};

// c[m, n] = sum_g sa[m, g] * scales[n, g] * sum_{k in group g} a[m, k] * v[n, k], where v is
// code - zero (int4, int3) or nf4::kTableInt8[code] (nf4), for m < M, n < N. The inner integer
// sums are exact; the fp32 sum over groups is in any order.
// a: activation panel [M, lda], lda >= blocks * 32, in the format's panel order
// (formats/<fmt>.h: panel_source) with zeros past K; sa: [M, ldsa] activation scale per group;
// asum: [M, ldsa, 8] per group, sum_b sum_{i<4} a[m, 32b + 4l + i] for lane l = 0..7 (integers,
// as fp32), for kernels that apply zero points after the dot product.
using GemmQFn = void (*)(const QWeights& w, const int8_t* a, int64_t lda, const float* sa,
                         const float* asum, int64_t ldsa, float* c, int64_t ldc, int64_t M,
                         int64_t N);

// One gemm_q per format, indexed by QFormat, defined by each ISA's gemm_q translation unit.
extern const GemmQFn kGemmQGeneric[kQFormatCount];
extern const GemmQFn kGemmQAvx2[kQFormatCount];
extern const GemmQFn kGemmQAvx512[kQFormatCount];
extern const GemmQFn kGemmQNeon[kQFormatCount];

// Panel GEMM for batches (csrc/cpu/avx512/gemm_panel_avx512vnni.cpp): the gemm_q contract for
// int4, int3 and nf4 (indexed by QFormat) and for int8 rows (kPanelS8: packed = [N, K] int8
// weights, row_bytes = K, one group per row, zeros = nullptr, zero = 0; the activation panel in
// element order). It differs from GemmQFn in one place: asum is [M, ldsa], the plain sum of a over
// each group (integers, as fp32). c is written, as by GemmQFn: the first group as
// float(isum) * (sa * scale), so W8A8 and its single group round exactly as its oracle; later
// groups add with one multiply-add.
using GemmPanelFn = GemmQFn;
inline constexpr int kPanelS8 = kQFormatCount;
inline constexpr int kPanelFormatCount = kQFormatCount + 1;
extern const GemmPanelFn kGemmPanelAvx512Vnni[kPanelFormatCount];

// Codebook weights (vq; csrc/formats/vq.h), as gemm_vq reads them.
struct VQWeights {
  const void* codes;       // [N, K/8, Mc] uint8 or uint16, from the first row to compute
  const float* codebooks;  // [Mc, 2^B, 8] fp32
  int64_t K;
};

// c[m, n] = sum_j sum_k<8 x[m, 8j + k] * (sum_c codebooks[c, codes[n, j, c], k]) in fp32 (any
// summation order), for m < M, n < N. x: [M, ldx] fp32, ldx >= K. The per-row scale is the
// driver's. One function per configuration, indexed by vq::variant(Mc, B).
using GemmVQFn = void (*)(const VQWeights& w, const float* x, int64_t ldx, float* c, int64_t ldc,
                          int64_t M, int64_t N);

extern const GemmVQFn kGemmVQGeneric[4];
extern const GemmVQFn kGemmVQAvx2[4];
extern const GemmVQFn kGemmVQAvx512[4];
extern const GemmVQFn kGemmVQNeon[4];
// The fp32 panel GEMM for vq batches (csrc/cpu/avx512/gemm_f32_panel_avx512.cpp), same contract.
extern const GemmVQFn kGemmVQPanelAvx512[4];

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
  const GemmQFn* gemm_q;    // [kQFormatCount]
  const GemmVQFn* gemm_vq;  // [vq::kVariants]
  // [kPanelFormatCount], or nullptr where the path has no panel GEMM; the drivers use it from
  // panel_min_m[format] activation rows on (measured: docs/kernels.md).
  const GemmPanelFn* gemm_panel = nullptr;
  int64_t panel_min_m[kPanelFormatCount] = {};
  // W8A16's panel GEMM: gemm_f32_s8's contract, or nullptr; used from f32_panel_min_m rows on.
  void (*gemm_f32_s8_panel)(const float* x, int64_t ldx, const int8_t* w, int64_t ldw, float* c,
                            int64_t ldc, int64_t M, int64_t N, int64_t K) = nullptr;
  int64_t f32_panel_min_m = 0;
  // The integer engine of the batched paths, for qk_isa_engine() and the bench headers.
  const char* engine = "";
  // vq's panel GEMM ([vq::kVariants]), or nullptr; used from vq_panel_min_m[variant] rows on.
  const GemmVQFn* gemm_vq_panel = nullptr;
  int64_t vq_panel_min_m[4] = {};
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
