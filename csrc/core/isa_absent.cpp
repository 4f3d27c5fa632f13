// Table accessors for the ISA paths this build does not compile (see cmake/isa.cmake).
#include "kernels.h"

namespace qk {
#if !defined(QK_HAVE_AVX2)
const KernelTable* kernels_avx2() { return nullptr; }
#endif
#if !defined(QK_HAVE_AVX512)
const KernelTable* kernels_avx512() { return nullptr; }
#endif
#if !defined(QK_HAVE_NEON)
const KernelTable* kernels_neon() { return nullptr; }
#endif
}  // namespace qk
