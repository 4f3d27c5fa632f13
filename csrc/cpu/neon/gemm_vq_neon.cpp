// AArch64 Advanced SIMD gemm_vq (1x8, 1x16, 2x8, 2x16): a group of 8 weights is two float32x4
// halves, the sum of its codebook entries, FMA'd into every activation row of the tile.
// Tiles: 1 x 4 at batch 1, 4 x 2 above.
#include <arm_neon.h>

#include <cstdint>
#include <type_traits>

#include "core/kernels.h"
#include "cpu/tile_loop.h"
#include "formats/vq.h"

namespace qk {
namespace {

template <int MC, typename Code>
struct VQTile {
  VQWeights w;
  const float* x;
  int64_t ldx;
  float* c;
  int64_t ldc;
  int64_t entries;

  template <int MR, int NR>
  inline void run(int64_t m, int64_t n) const {
    const int64_t groups = w.K / vq::kGroup;
    const Code* codes = static_cast<const Code*>(w.codes) + n * groups * MC;
    float32x4_t acc[MR][NR][2];
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j][0] = acc[i][j][1] = vdupq_n_f32(0.0f);
    for (int64_t g = 0; g < groups; ++g) {
      for (int j = 0; j < NR; ++j) {
        const Code* cj = codes + (j * groups + g) * MC;
        const float* e0 = w.codebooks + static_cast<int64_t>(cj[0]) * vq::kGroup;
        float32x4_t lo = vld1q_f32(e0), hi = vld1q_f32(e0 + 4);
        if constexpr (MC == 2) {
          const float* e1 = w.codebooks + (entries + static_cast<int64_t>(cj[1])) * vq::kGroup;
          lo = vaddq_f32(lo, vld1q_f32(e1));
          hi = vaddq_f32(hi, vld1q_f32(e1 + 4));
        }
        for (int i = 0; i < MR; ++i) {
          const float* xp = x + (m + i) * ldx + g * vq::kGroup;
          acc[i][j][0] = vfmaq_f32(acc[i][j][0], vld1q_f32(xp), lo);
          acc[i][j][1] = vfmaq_f32(acc[i][j][1], vld1q_f32(xp + 4), hi);
        }
      }
    }
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j)
        c[(m + i) * ldc + n + j] = vaddvq_f32(vaddq_f32(acc[i][j][0], acc[i][j][1]));
  }
};

template <int MC, int B>
void gemm_vq(const VQWeights& w, const float* x, int64_t ldx, float* c, int64_t ldc, int64_t M,
             int64_t N) {
  using Code = std::conditional_t<B == 8, uint8_t, uint16_t>;
  const VQTile<MC, Code> tile{w, x, ldx, c, ldc, vq::codebook_entries(B)};
  if (M == 1)
    cpu::for_each_tile<1, 4>(M, N, tile);
  else
    cpu::for_each_tile<4, 2>(M, N, tile);
}

}  // namespace

const GemmVQFn kGemmVQNeon[vq::kVariants] = {gemm_vq<1, 8>, gemm_vq<1, 16>, gemm_vq<2, 8>,
                                             gemm_vq<2, 16>};

}  // namespace qk
