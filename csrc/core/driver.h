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

}  // namespace qk
