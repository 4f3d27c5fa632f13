// Error reporting for the C ABI: a per-thread message plus a qk_status code.
#pragma once

#include <string>

#include "qkernels.h"

namespace qk {

// Records msg as this thread's last error and returns s.
qk_status fail(qk_status s, const std::string& msg);
// Clears this thread's last error and returns QK_OK.
qk_status ok();

}  // namespace qk

// Returns QK_ERR_INVALID_ARGUMENT from the enclosing function when cond is false. The message
// names the function, the argument expression and the values seen.
#define QK_CHECK_ARG(cond, ...)                                                                 \
  do {                                                                                          \
    if (!(cond))                                                                                \
      return ::qk::fail(QK_ERR_INVALID_ARGUMENT, std::string(__func__) + ": " + (__VA_ARGS__)); \
  } while (0)
