// AVX2 gemm_q (int4, int3, nf4): the 256-bit kernel of cpu/x86/gemm_q_x86.h with AVX2 + FMA.
// Tiles: 1 x 4 at batch 1; 3 x 3 above it (the fp32 accumulators live in memory, so the nine int32
// sums fit in registers; measured on 4096 x 4096 int4 at batch 128: 3 x 3 and 4 x 2 ahead of 3 x 2
// and 2 x 4, 3 x 3 the most consistent).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "core/kernels.h"
#include "cpu/prefetch_x86.h"
#include "cpu/tile_loop.h"
#include "formats/int3.h"
#include "formats/int4.h"
#include "formats/nf4.h"

// The kernel header is included inside this unit's anonymous namespace (its dependencies above
// are already included, outside it), so every instantiation is private to these flags.

namespace qk {
namespace {
#include "cpu/x86/gemm_q_x86.h"
}  // namespace

const GemmQFn kGemmQAvx2[kQFormatCount] = {gemm_q<Int4Dec, 3, 3>, gemm_q<Int3Dec, 3, 3>,
                                           gemm_q<NF4Dec, 3, 3>};

}  // namespace qk
