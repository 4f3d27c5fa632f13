// AVX-512 gemm_q (int4, int3, nf4): the 256-bit kernel of cpu/x86/gemm_q_x86.h compiled for
// AVX-512 (F, BW, VL): EVEX encodings give it 32 vector registers, so the batched tile grows to
// 4 x 3. A 512-bit variant is not written: no machine here runs AVX-512 to test it.
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

const GemmQFn kGemmQAvx512[kQFormatCount] = {gemm_q<Int4Dec, 4, 3>, gemm_q<Int3Dec, 4, 3>,
                                             gemm_q<NF4Dec, 4, 3>};

}  // namespace qk
