// Scalar gemm_vq (1x8, 1x16, 2x8, 2x16): the C++ ground truth of the codebook kernels. Each group
// of 8 weights is the sum of its codebook entries, multiplied into 8 partial sums (the lanes of
// the SIMD paths), reduced pairwise at the end.
#include <cstdint>
#include <type_traits>

#include "core/kernels.h"
#include "formats/vq.h"

namespace qk {
namespace {

template <int MC, int B>
void gemm_vq(const VQWeights& w, const float* x, int64_t ldx, float* c, int64_t ldc, int64_t M,
             int64_t N) {
  using Code = std::conditional_t<B == 8, uint8_t, uint16_t>;
  const int64_t groups = w.K / vq::kGroup, entries = vq::codebook_entries(B);
  for (int64_t n = 0; n < N; ++n) {
    const Code* codes = static_cast<const Code*>(w.codes) + n * groups * MC;
    for (int64_t m = 0; m < M; ++m) {
      float part[vq::kGroup] = {};
      for (int64_t g = 0; g < groups; ++g) {
        for (int64_t k = 0; k < vq::kGroup; ++k) {
          float wk = 0.0f;
          for (int cb = 0; cb < MC; ++cb)
            wk += w.codebooks[(cb * entries + vq::code_at(codes, g, cb, MC)) * vq::kGroup + k];
          part[k] += x[m * ldx + g * vq::kGroup + k] * wk;
        }
      }
      for (int width = vq::kGroup / 2; width > 0; width /= 2)
        for (int i = 0; i < width; ++i) part[i] += part[i + width];
      c[m * ldc + n] = part[0];
    }
  }
}

}  // namespace

const GemmVQFn kGemmVQGeneric[vq::kVariants] = {gemm_vq<1, 8>, gemm_vq<1, 16>, gemm_vq<2, 8>,
                                                gemm_vq<2, 16>};

}  // namespace qk
