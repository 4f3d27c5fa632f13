// Argument checks shared by the C ABI entry points. Each returns QK_OK or records a message of the
// form "<function>: <argument>: expected <what>, got <value>".
#pragma once

#include <cstdint>
#include <string>

#include "status.h"

namespace qk {

inline qk_status check_size(const char* fn, const char* name, int64_t v) {
  if (v >= 0 && v < (int64_t{1} << 40)) return QK_OK;
  return fail(
      QK_ERR_INVALID_ARGUMENT,
      std::string(fn) + ": " + name + ": expected 0 <= value < 2^40, got " + std::to_string(v));
}

// A row-major matrix [rows, cols] with leading dimension ld must have ld >= cols (and >= 1 so an
// empty matrix still has a well-defined layout) and a non-NULL pointer when it holds elements.
inline qk_status check_matrix(const char* fn, const char* name, const void* p, int64_t rows,
                              int64_t cols, int64_t ld) {
  const std::string f = std::string(fn) + ": ";
  if (ld < cols || ld < 1 || ld >= (int64_t{1} << 40))
    return fail(QK_ERR_INVALID_ARGUMENT, f + "ld" + name + ": expected >= max(1, " +
                                             std::to_string(cols) + "), got " + std::to_string(ld));
  if (p == nullptr && rows > 0 && cols > 0)
    return fail(QK_ERR_INVALID_ARGUMENT, f + name + ": expected a non-NULL pointer for a [" +
                                             std::to_string(rows) + ", " + std::to_string(cols) +
                                             "] matrix, got NULL");
  return QK_OK;
}

inline qk_status check_dtype(const char* fn, const char* name, qk_dtype d) {
  if (d == QK_F32 || d == QK_BF16 || d == QK_F16) return QK_OK;
  return fail(QK_ERR_INVALID_ARGUMENT, std::string(fn) + ": " + name +
                                           ": expected QK_F32, QK_BF16 or QK_F16, got " +
                                           std::to_string(static_cast<int>(d)));
}

}  // namespace qk

// Propagates a non-OK status from a check.
#define QK_TRY(expr)                  \
  do {                                \
    const qk_status qk_s_ = (expr);   \
    if (qk_s_ != QK_OK) return qk_s_; \
  } while (0)
