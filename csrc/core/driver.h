// Pieces shared by the op drivers (linear_int8.cpp, linear_q.cpp): aligned scratch buffers, the
// ISA-override check, and the exception barrier in front of the C ABI.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <new>
#include <string>

#include "formats/int8.h"
#include "kernels.h"
#include "stage.h"
#include "status.h"
#include "validate.h"

namespace qk {

struct AlignedFree {
  void operator()(void* p) const { ::operator delete[](p, std::align_val_t{64}); }
};
template <typename T>
inline std::unique_ptr<T[], AlignedFree> aligned_buffer(int64_t n) {
  void* p = ::operator new[](static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(T),
                             std::align_val_t{64});
  return std::unique_ptr<T[], AlignedFree>(static_cast<T*>(p));
}

inline qk_status check_runtime(const char* fn) {
  if (const char* e = isa_init_error()) return fail(QK_ERR_UNSUPPORTED, std::string(fn) + ": " + e);
  return QK_OK;
}

// The ISA override, the sizes, and the K bound of the int32 accumulators (the same for every
// integer path: each product is at most 127 * 127).
inline qk_status check_gemm_sizes(const char* fn, int64_t M, int64_t N, int64_t K) {
  QK_TRY(check_runtime(fn));
  QK_TRY(check_size(fn, "M", M));
  QK_TRY(check_size(fn, "N", N));
  QK_TRY(check_size(fn, "K", K));
  if (K > int8::kMaxK)
    return fail(QK_ERR_INVALID_ARGUMENT, std::string(fn) +
                                             ": K: expected <= " + std::to_string(int8::kMaxK) +
                                             ", got " + std::to_string(K));
  return QK_OK;
}

// Exceptions never cross the C ABI: allocation failures and internal errors become statuses.
template <typename Fn>
inline qk_status guarded(const char* fn, Fn&& body) {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return fail(QK_ERR_OUT_OF_MEMORY, std::string(fn) + ": out of memory");
  } catch (const std::exception& e) {
    return fail(QK_ERR_INTERNAL, std::string(fn) + ": " + e.what());
  }
}

// The sum of n int8 values, as the panel GEMMs take it (kernels.h: GemmPanelFn's asum): exact,
// since |sum| <= 127 * 2^17 < 2^24.
inline float sum_codes(const int8_t* q, int64_t n) {
  int32_t s = 0;
  for (int64_t i = 0; i < n; ++i) s += q[i];
  return static_cast<float>(s);
}

// x as fp32 rows for the float kernels: x itself when it is fp32, else a widened copy (once per
// call; the kernels re-read activations many times).
struct StagedF32 {
  const float* x;
  int64_t ld;
  std::unique_ptr<float[], AlignedFree> owned;
};
inline StagedF32 stage_f32(const void* x, qk_dtype d, int64_t ldx, int64_t M, int64_t K) {
  if (d == QK_F32) return {static_cast<const float*>(x), ldx, nullptr};
  auto buf = aligned_buffer<float>(M * std::max<int64_t>(K, 1));
  for (int64_t r = 0; r < M; ++r) load_row_f32(row_ptr(x, d, ldx, r), d, K, buf.get() + r * K);
  const float* p = buf.get();
  return {p, std::max<int64_t>(K, 1), std::move(buf)};
}

// The epilogue of a float-accumulating block: out[i, j] = acc[i, j] * scale[n0 + j] (when scale is
// given) + bias[n0 + j] (when given), rounded to y's dtype, for the block at (m0, n0).
inline void store_block(float* acc, int64_t mb, int64_t nb, const float* scale, const float* bias,
                        void* y, qk_dtype d, int64_t ldy, int64_t m0, int64_t n0) {
  for (int64_t i = 0; i < mb; ++i) {
    float* row = acc + i * nb;
    for (int64_t j = 0; j < nb; ++j) {
      float v = row[j];
      if (scale != nullptr) v = v * scale[n0 + j];
      if (bias != nullptr) v = v + bias[n0 + j];
      row[j] = v;
    }
    store_row_f32(row, nb, d, static_cast<char*>(row_ptr(y, d, ldy, m0 + i)) + n0 * dtype_size(d));
  }
}

}  // namespace qk
