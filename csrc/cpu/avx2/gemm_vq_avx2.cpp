// AVX2 gemm_vq (1x8, 1x16, 2x8, 2x16): the kernel of cpu/x86/gemm_vq_x86.h.
// Tiles: 1 x 4 at batch 1, 4 x 2 above.
#include <immintrin.h>

#include <cstdint>
#include <type_traits>

#include "core/kernels.h"
#include "cpu/tile_loop.h"
#include "formats/vq.h"

namespace qk {
namespace {
#include "cpu/x86/gemm_vq_x86.h"
}  // namespace

const GemmVQFn kGemmVQAvx2[vq::kVariants] = {kGemmVQ[0], kGemmVQ[1], kGemmVQ[2], kGemmVQ[3]};

}  // namespace qk
