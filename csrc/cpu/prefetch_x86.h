// Software prefetch of weight rows for the x86 kernels (see linear_int8_avx2.cpp, S8Tile).
#pragma once

#include <xmmintrin.h>

namespace qk::cpu {

// Prefetch for the first pass over a weight strip. A single-row pass streams the rows straight
// into L1; a multi-row pass reuses the current strip from L1 for its later passes, so the rows
// ahead go to L2 only and do not evict it. prefetcht0/t1 are baseline SSE: no ISA flags leak.
template <int MR>
inline void prefetch_strip(const void* p) {
  if constexpr (MR == 1)
    _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0);
  else
    _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T1);
}

}  // namespace qk::cpu
