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
