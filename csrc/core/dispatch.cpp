// Runtime choice of the CPU kernel table: detected once from cpuid (or the OS on AArch64),
// overridable with QKERNELS_ISA or qk_set_isa().
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "kernels.h"
#include "status.h"

namespace qk {
namespace {

const KernelTable* table_for(qk_isa isa) {
  switch (isa) {
    case QK_ISA_GENERIC:
      return kernels_generic();
    case QK_ISA_AVX2:
      return kernels_avx2();
    case QK_ISA_AVX512:
      return kernels_avx512();
    case QK_ISA_NEON:
      return kernels_neon();
    default:
      return nullptr;
  }
}

bool cpu_supports(qk_isa isa) {
  switch (isa) {
    case QK_ISA_GENERIC:
      return true;
#if defined(__x86_64__) || defined(_M_X64)
    // __builtin_cpu_supports also checks that the OS saves the YMM/ZMM state (XCR0).
    case QK_ISA_AVX2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case QK_ISA_AVX512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl");
#endif
#if defined(__aarch64__)
    case QK_ISA_NEON:
      return true;  // Advanced SIMD is mandatory on AArch64
#endif
    default:
      return false;
  }
}

std::string available_list() {
  std::string s;
  for (int i = 0; i < QK_ISA_COUNT; ++i) {
    if (!qk_isa_available(static_cast<qk_isa>(i))) continue;
    if (!s.empty()) s += ", ";
    s += qk_isa_name(static_cast<qk_isa>(i));
  }
  return s;
}

std::atomic<int> g_active{-1};
std::once_flag g_init;
std::string g_init_error;  // written once, when QKERNELS_ISA names a path this CPU cannot run
std::atomic<bool> g_init_failed{false};  // cleared by a successful qk_set_isa

void init_from_env() {
  int best = QK_ISA_GENERIC;
  for (int i = QK_ISA_COUNT - 1; i > 0; --i) {
    if (qk_isa_available(static_cast<qk_isa>(i))) {
      best = i;
      break;
    }
  }
  const char* env = std::getenv("QKERNELS_ISA");
  if (env != nullptr && *env != '\0') {
    int chosen = -1;
    for (int i = 0; i < QK_ISA_COUNT; ++i)
      if (std::strcmp(env, qk_isa_name(static_cast<qk_isa>(i))) == 0) chosen = i;
    if (chosen < 0) {
      g_init_error =
          std::string("QKERNELS_ISA: expected one of generic, avx2, avx512, neon, got '") + env +
          "'";
    } else if (!qk_isa_available(static_cast<qk_isa>(chosen))) {
      g_init_error = std::string("QKERNELS_ISA: '") + env +
                     "' cannot run on this CPU or build; available: " + available_list();
    } else {
      best = chosen;
    }
  }
  g_init_failed.store(!g_init_error.empty());
  g_active.store(best);
}

}  // namespace

const KernelTable& active_kernels() {
  std::call_once(g_init, init_from_env);
  return *table_for(static_cast<qk_isa>(g_active.load()));
}

const char* isa_init_error() {
  std::call_once(g_init, init_from_env);
  return g_init_failed.load() ? g_init_error.c_str() : nullptr;
}

}  // namespace qk

extern "C" {

const char* qk_isa_name(qk_isa isa) {
  static const char* const names[QK_ISA_COUNT] = {"generic", "avx2", "avx512", "neon"};
  return (isa >= 0 && isa < QK_ISA_COUNT) ? names[isa] : nullptr;
}

int qk_isa_available(qk_isa isa) {
  // The CPU check comes first: a table accessor lives in a translation unit compiled for its ISA,
  // so calling it on a CPU without that ISA could already execute an illegal instruction.
  return qk::cpu_supports(isa) && qk::table_for(isa) != nullptr ? 1 : 0;
}

qk_isa qk_isa_active(void) {
  qk::active_kernels();
  return static_cast<qk_isa>(qk::g_active.load());
}

const char* qk_isa_engine(void) { return qk::active_kernels().engine; }

qk_status qk_set_isa(qk_isa isa) {
  if (isa < 0 || isa >= QK_ISA_COUNT)
    return qk::fail(QK_ERR_INVALID_ARGUMENT, "qk_set_isa: isa: expected 0.." +
                                                 std::to_string(QK_ISA_COUNT - 1) + ", got " +
                                                 std::to_string(static_cast<int>(isa)));
  if (!qk_isa_available(isa))
    return qk::fail(QK_ERR_UNSUPPORTED,
                    std::string("qk_set_isa: '") + qk_isa_name(isa) +
                        "' cannot run on this CPU or build; available: " + qk::available_list());
  qk::active_kernels();
  qk::g_active.store(isa);
  qk::g_init_failed.store(false);
  return qk::ok();
}

}  // extern "C"
