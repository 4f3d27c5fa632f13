#include "status.h"

namespace qk {
thread_local std::string t_last_error;  // NOLINT: read by qk_last_error below

qk_status fail(qk_status s, const std::string& msg) {
  t_last_error = msg;
  return s;
}

qk_status ok() {
  t_last_error.clear();
  return QK_OK;
}

}  // namespace qk

extern "C" const char* qk_last_error(void) { return qk::t_last_error.c_str(); }
