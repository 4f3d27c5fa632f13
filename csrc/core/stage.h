// Moving activations and outputs between the caller's dtype and the fp32 the kernels compute in.
#pragma once

#include <cstdint>

#include "convert.h"
#include "qkernels.h"

namespace qk {

inline int64_t dtype_size(qk_dtype d) { return d == QK_F32 ? 4 : 2; }

// Converts n elements of row (dtype d) into dst as fp32.
inline void load_row_f32(const void* row, qk_dtype d, int64_t n, float* dst) {
  if (d == QK_F32) {
    const float* s = static_cast<const float*>(row);
    for (int64_t i = 0; i < n; ++i) dst[i] = s[i];
    return;
  }
  const uint16_t* s = static_cast<const uint16_t*>(row);
  if (d == QK_BF16)
    for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
  else
    for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
}

// Stores n fp32 values into row (dtype d), rounding to nearest even.
inline void store_row_f32(const float* src, int64_t n, qk_dtype d, void* row) {
  if (d == QK_F32) {
    float* o = static_cast<float*>(row);
    for (int64_t i = 0; i < n; ++i) o[i] = src[i];
    return;
  }
  uint16_t* o = static_cast<uint16_t*>(row);
  if (d == QK_BF16)
    for (int64_t i = 0; i < n; ++i) o[i] = f32_to_bf16(src[i]);
  else
    for (int64_t i = 0; i < n; ++i) o[i] = f32_to_f16(src[i]);
}

inline const void* row_ptr(const void* base, qk_dtype d, int64_t ld, int64_t r) {
  return static_cast<const char*>(base) + r * ld * dtype_size(d);
}
inline void* row_ptr(void* base, qk_dtype d, int64_t ld, int64_t r) {
  return static_cast<char*>(base) + r * ld * dtype_size(d);
}

}  // namespace qk
