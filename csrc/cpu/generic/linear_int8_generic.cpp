// Scalar int8 kernels: the C++ ground truth that every SIMD path is tested against.
// Rounding: nearbyint under the default mode (half to even). No saturation anywhere: products are
// accumulated in int32, which cannot overflow for K <= 2^17 (formats/int8.h).
#include <cmath>

#include "core/kernels.h"
#include "formats/int8.h"

namespace qk {
namespace {

float quantize_row_int8(const float* x, int64_t n, int8_t* q) {
  float absmax = 0.0f;
  bool finite = true;
  for (int64_t i = 0; i < n; ++i) {
    finite = finite && std::isfinite(x[i]);
    absmax = std::fmax(absmax, std::fabs(x[i]));
  }
  if (!finite) {
    for (int64_t i = 0; i < n; ++i) q[i] = 0;
    return NAN;
  }
  const float scale = int8::scale_from_absmax(absmax);
  for (int64_t i = 0; i < n; ++i) q[i] = int8::quantize_value(x[i], scale);
  return scale;
}

void gemm_s8(const int8_t* a, int64_t lda, const int8_t* b, int64_t ldb, int32_t* c, int64_t ldc,
             int64_t M, int64_t N, int64_t K) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      int32_t acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += int32_t{a[m * lda + k]} * int32_t{b[n * ldb + k]};
      c[m * ldc + n] = acc;
    }
}

void gemm_f32_s8(const float* x, int64_t ldx, const int8_t* w, int64_t ldw, float* c, int64_t ldc,
                 int64_t M, int64_t N, int64_t K) {
  // 16 interleaved partial sums, then a pairwise reduction: a single running sum would lose
  // O(K) ulps, far more than the blocked summation of the SIMD paths and of BLAS.
  constexpr int kLanes = 16;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      float part[kLanes] = {};
      for (int64_t k = 0; k < K; ++k)
        part[k % kLanes] += x[m * ldx + k] * static_cast<float>(w[n * ldw + k]);
      for (int width = kLanes / 2; width > 0; width /= 2)
        for (int i = 0; i < width; ++i) part[i] += part[i + width];
      c[m * ldc + n] = part[0];
    }
}

constexpr KernelTable kTable = {
    QK_ISA_GENERIC, quantize_row_int8, gemm_s8, gemm_f32_s8, kGemmQGeneric,
    kGemmVQGeneric, nullptr,           {},      nullptr,     0,
    "scalar C++"};

}  // namespace

const KernelTable* kernels_generic() { return &kTable; }

}  // namespace qk
