// Scalar gemm_q (int4, int3, nf4): the C++ ground truth of the group-wise sub-byte kernels.
// Decodes each 32-block with the spec's accessors (formats/<fmt>.h) into panel order, takes the
// exact int32 dot product with the activation panel, and scales once per group.
#include <algorithm>
#include <cstdint>

#include "core/kernels.h"
#include "formats/int3.h"
#include "formats/int4.h"
#include "formats/nf4.h"

namespace qk {
namespace {

struct Int4Values {
  static int8_t value(const uint8_t* row, int64_t k, int zero) {
    return static_cast<int8_t>(int4::get_code(row, k) - zero);
  }
  static constexpr int source(int p) { return int4::panel_source(p); }
};
struct Int3Values {
  static int8_t value(const uint8_t* row, int64_t k, int zero) {
    return static_cast<int8_t>(int3::get_code(row, k) - zero);
  }
  static constexpr int source(int p) { return int3::panel_source(p); }
};
struct NF4Values {
  static int8_t value(const uint8_t* row, int64_t k, int) {
    return nf4::kTableInt8[nf4::get_code(row, k)];
  }
  static constexpr int source(int p) { return nf4::panel_source(p); }
};

template <typename V>
void gemm_q(const QWeights& w, const int8_t* a, int64_t lda, const float* sa, const float*,
            int64_t ldsa, float* c, int64_t ldc, int64_t M, int64_t N) {
  constexpr int64_t kRows = 64;  // activation rows per pass: each decoded block serves all of them
  const int64_t nblocks = grouped::blocks_per_row(w.K);
  for (int64_t n = 0; n < N; ++n) {
    const uint8_t* row = w.packed + n * w.row_bytes;
    for (int64_t m0 = 0; m0 < M; m0 += kRows) {
      const int64_t mc = std::min(kRows, M - m0);
      float acc[kRows] = {};
      for (int64_t g = 0; g < w.groups; ++g) {
        const int zero = w.zeros != nullptr ? w.zeros[n * w.groups + g] : w.zero;
        int32_t isum[kRows] = {};
        const int64_t b1 = std::min(nblocks, (g + 1) * w.group_blocks);
        for (int64_t b = g * w.group_blocks; b < b1; ++b) {
          int8_t v[grouped::kBlock];
          for (int p = 0; p < grouped::kBlock; ++p) {
            const int64_t k = b * grouped::kBlock + V::source(p);
            v[p] = k < w.K ? V::value(row, k, zero) : 0;
          }
          for (int64_t i = 0; i < mc; ++i) {
            const int8_t* ap = a + (m0 + i) * lda + b * grouped::kBlock;
            for (int p = 0; p < grouped::kBlock; ++p) isum[i] += int32_t{ap[p]} * int32_t{v[p]};
          }
        }
        for (int64_t i = 0; i < mc; ++i)
          acc[i] +=
              static_cast<float>(isum[i]) * (sa[(m0 + i) * ldsa + g] * w.scales[n * w.groups + g]);
      }
      for (int64_t i = 0; i < mc; ++i) c[(m0 + i) * ldc + n] = acc[i];
    }
  }
}

}  // namespace

const GemmQFn kGemmQGeneric[kQFormatCount] = {gemm_q<Int4Values>, gemm_q<Int3Values>,
                                              gemm_q<NF4Values>};

}  // namespace qk
