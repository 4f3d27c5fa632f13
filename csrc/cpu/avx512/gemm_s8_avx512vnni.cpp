// AVX-512 VNNI int8 GEMM (vpdpbusd). vpdpbusd multiplies unsigned by signed bytes and adds groups
// of four into int32 without intermediate saturation, so a is offset to a + 128 in [1, 255] and
// the offset is removed at the end: sum((a + 128) * b) - 128 * sum(b). sum(b) comes from one more
// vpdpbusd against a vector of ones per weight vector, shared by the MR activation rows. Exact.
// Tiles: 4 x 4 register blocks (16 accumulators + 4 row sums of 32 zmm), 1-wide for the edges.
#include <immintrin.h>

#include "core/kernels.h"
#include "cpu/avx512/linear_int8_avx512.h"
#include "cpu/prefetch_x86.h"
#include "cpu/tile_loop.h"

namespace qk {
namespace {

inline __mmask64 tail_mask64(int64_t r) {
  return r >= 64 ? ~__mmask64{0} : ((__mmask64{1} << r) - 1);
}

struct VnniTile : cpu::S8Args {
  template <int MR, int NR>
  inline void run(int64_t m, int64_t n) const {
    const __m512i offset = _mm512_set1_epi8(static_cast<char>(0x80));
    const __m512i ones = _mm512_set1_epi8(1);
    __m512i acc[MR][NR], bsum[NR];
    for (int j = 0; j < NR; ++j) {
      bsum[j] = _mm512_setzero_si512();
      for (int i = 0; i < MR; ++i) acc[i][j] = _mm512_setzero_si512();
    }
    const int8_t* ap = a + m * lda;
    const int8_t* bp = b + n * ldb;
    for (int64_t k = 0; k < K; k += 64) {
      const __mmask64 km = tail_mask64(K - k);
      __m512i bv[NR];
      for (int j = 0; j < NR; ++j) {
        // First pass over a strip: prefetch the rows two tiles ahead, as the AVX2 path does.
        if (m == 0) cpu::prefetch_strip<MR>(bp + (2 * NR + j) * ldb + k);
        bv[j] = _mm512_maskz_loadu_epi8(km, bp + j * ldb + k);
        bsum[j] = _mm512_dpbusd_epi32(bsum[j], ones, bv[j]);
      }
      for (int i = 0; i < MR; ++i) {
        // x ^ 0x80 == x + 128 reinterpreted as unsigned; the zero padding becomes 128 but meets
        // zero-filled b lanes, so it adds nothing.
        const __m512i au = _mm512_xor_si512(_mm512_load_si512(ap + i * lda + k), offset);
        for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], au, bv[j]);
      }
    }
    // The offset sums can pass 2^31 for large K; the true result fits int32, so computing modulo
    // 2^32 (unsigned, no UB) and converting back is exact.
    for (int j = 0; j < NR; ++j) {
      const uint32_t corr = 128u * static_cast<uint32_t>(_mm512_reduce_add_epi32(bsum[j]));
      for (int i = 0; i < MR; ++i)
        c[(m + i) * ldc + n + j] =
            static_cast<int32_t>(static_cast<uint32_t>(_mm512_reduce_add_epi32(acc[i][j])) - corr);
    }
  }
};

}  // namespace

void gemm_s8_avx512vnni(const int8_t* a, int64_t lda, const int8_t* b, int64_t ldb, int32_t* c,
                        int64_t ldc, int64_t M, int64_t N, int64_t K) {
  const VnniTile tile{{a, lda, b, ldb, c, ldc, K}};
  if (M == 1)
    cpu::for_each_tile<1, 8>(M, N, tile);
  else
    cpu::for_each_tile<4, 4>(M, N, tile);
}

}  // namespace qk
