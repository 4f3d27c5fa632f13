// AVX2 + FMA int8 kernels.
//
// gemm_s8: int8 x int8 -> int32 with the "sign trick": vpmaddubsw needs one unsigned operand, so
// it multiplies |a| (unsigned) by b with a's sign moved onto it (vpsignb). Both operands lie in
// [-127, 127], so each int16 pair sum is at most 2 * 127 * 127 = 32258 < 32767: vpmaddubsw never
// saturates and the result is exact. vpmaddwd with ones widens the pairs to int32.
// gemm_f32_s8: weights widened int8 -> int32 -> fp32 in registers, FMA-accumulated in fp32.
// quantize_row_int8: vdivps + vcvtps2dq (MXCSR default: round half to even), as the scalar rule.
//
// Tiles (measured best on 11008 x 4096 at M = 8..512): 3 x 3 (int8) and 4 x 3 (fp32) outputs per
// register block above batch 1, 1 x 4 at batch 1, 1-wide tiles for the edges.
// K tails read the weight rows through a zero-padded stack copy, never past column K.
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "core/kernels.h"
#include "cpu/prefetch_x86.h"
#include "cpu/tile_loop.h"
#include "formats/int8.h"

namespace qk {
namespace {

inline __m256i load_bytes_partial(const int8_t* p, int64_t n) {
  alignas(32) int8_t buf[32] = {};
  std::memcpy(buf, p, static_cast<size_t>(n));
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(buf));
}

inline int32_t hsum_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

inline float hsum_ps(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

float quantize_row_int8(const float* x, int64_t n, int8_t* q) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 inf = _mm256_set1_ps(INFINITY);
  __m256 vmax = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 a = _mm256_and_ps(_mm256_loadu_ps(x + i), abs_mask);
    vmax = _mm256_max_ps(vmax, a);
    // NLT_UQ is true for +Inf and for NaN (unordered), which vmaxps would silently drop.
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, inf, _CMP_NLT_UQ));
  }
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
  float absmax = _mm_cvtss_f32(m4);
  bool finite = _mm256_movemask_ps(bad) == 0;
  for (int64_t j = i; j < n; ++j) {
    finite = finite && std::isfinite(x[j]);
    absmax = std::fmax(absmax, std::fabs(x[j]));
  }
  if (!finite) {
    std::memset(q, 0, static_cast<size_t>(n));
    return NAN;
  }
  const float scale = int8::scale_from_absmax(absmax);
  const __m256 vs = _mm256_set1_ps(scale);
  const __m256i lo = _mm256_set1_epi8(static_cast<char>(int8::kQMin));
  // packs interleave the two 128-bit lanes; this restores element order.
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256i q0 = _mm256_cvtps_epi32(_mm256_div_ps(_mm256_loadu_ps(x + i), vs));
    const __m256i q1 = _mm256_cvtps_epi32(_mm256_div_ps(_mm256_loadu_ps(x + i + 8), vs));
    const __m256i q2 = _mm256_cvtps_epi32(_mm256_div_ps(_mm256_loadu_ps(x + i + 16), vs));
    const __m256i q3 = _mm256_cvtps_epi32(_mm256_div_ps(_mm256_loadu_ps(x + i + 24), vs));
    __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(q0, q1), _mm256_packs_epi32(q2, q3));
    b = _mm256_max_epi8(_mm256_permutevar8x32_epi32(b, order), lo);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), b);
  }
  for (; i < n; ++i) q[i] = int8::quantize_value(x[i], scale);
  return scale;
}

struct S8Tile : cpu::S8Args {
  template <int MR, int NR>
  inline void run(int64_t m, int64_t n) const {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc[MR][NR];
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_si256();
    const int8_t* ap = a + m * lda;
    const int8_t* bp = b + n * ldb;
    auto step = [&](const __m256i(&bv)[NR], int64_t k) {
      for (int i = 0; i < MR; ++i) {
        // The panel is zero-padded to kPanelAlign, so whole-vector loads of a are in bounds.
        const __m256i av = _mm256_load_si256(reinterpret_cast<const __m256i*>(ap + i * lda + k));
        const __m256i aa = _mm256_abs_epi8(av);
        for (int j = 0; j < NR; ++j) {
          const __m256i p = _mm256_maddubs_epi16(aa, _mm256_sign_epi8(bv[j], av));
          acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(p, ones));
        }
      }
    };
    int64_t k = 0;
    for (; k + 32 <= K; k += 32) {
      __m256i bv[NR];
      for (int j = 0; j < NR; ++j) {
        // Weight rows come from memory once per block. Row-major rows of a few KiB restart the
        // hardware prefetcher at every page, so the first pass over a strip (m == 0) prefetches
        // the rows two tiles ahead (measured on 11008 x 4096, 2 threads, batch 1: 15.8 GB/s
        // without, 21.3 one tile ahead, 23.9 two tiles ahead; batch 8: 0.58x -> 0.8x of
        // quantize_dynamic). A prefetch past the end of the matrix never faults.
        if (m == 0) cpu::prefetch_strip<MR>(bp + (2 * NR + j) * ldb + k);
        bv[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + j * ldb + k));
      }
      step(bv, k);
    }
    if (k < K) {
      __m256i bv[NR];
      for (int j = 0; j < NR; ++j) bv[j] = load_bytes_partial(bp + j * ldb + k, K - k);
      step(bv, k);
    }
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) c[(m + i) * ldc + n + j] = hsum_epi32(acc[i][j]);
  }
};

void gemm_s8(const int8_t* a, int64_t lda, const int8_t* b, int64_t ldb, int32_t* c, int64_t ldc,
             int64_t M, int64_t N, int64_t K) {
  const S8Tile tile{{a, lda, b, ldb, c, ldc, K}};
  if (M == 1)
    cpu::for_each_tile<1, 4>(M, N, tile);
  else
    cpu::for_each_tile<3, 3>(M, N, tile);
}

inline __m256 widen8(const int8_t* p) {
  const __m128i v = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
}

struct F32S8Tile : cpu::F32S8Args {
  template <int MR, int NR>
  inline void run(int64_t m, int64_t n) const {
    __m256 acc[MR][NR];
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_ps();
    const float* xp = x + m * ldx;
    const int8_t* wp = w + n * ldw;
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
      __m256 wv[NR];
      for (int j = 0; j < NR; ++j) {
        // One prefetch per 64-byte line of the next tile's rows (see S8Tile).
        if (m == 0 && (k & 63) == 0) cpu::prefetch_strip<MR>(wp + (2 * NR + j) * ldw + k);
        wv[j] = widen8(wp + j * ldw + k);
      }
      for (int i = 0; i < MR; ++i) {
        const __m256 xv = _mm256_loadu_ps(xp + i * ldx + k);
        for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
      }
    }
    if (k < K) {
      const int64_t r = K - k;
      alignas(8) int8_t buf[8] = {};
      __m256 wv[NR];
      for (int j = 0; j < NR; ++j) {
        std::memcpy(buf, wp + j * ldw + k, static_cast<size_t>(r));
        wv[j] = widen8(buf);
      }
      // maskload reads only the lanes below r: no access past the end of the x row.
      const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(r)),
                                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
      for (int i = 0; i < MR; ++i) {
        const __m256 xv = _mm256_maskload_ps(xp + i * ldx + k, mask);
        for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
      }
    }
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) c[(m + i) * ldc + n + j] = hsum_ps(acc[i][j]);
  }
};

void gemm_f32_s8(const float* x, int64_t ldx, const int8_t* w, int64_t ldw, float* c, int64_t ldc,
                 int64_t M, int64_t N, int64_t K) {
  const F32S8Tile tile{{x, ldx, w, ldw, c, ldc, K}};
  if (M == 1)
    cpu::for_each_tile<1, 4>(M, N, tile);
  else
    cpu::for_each_tile<4, 3>(M, N, tile);
}

constexpr KernelTable kTable = {QK_ISA_AVX2,
                                quantize_row_int8,
                                gemm_s8,
                                gemm_f32_s8,
                                kGemmQAvx2,
                                kGemmVQAvx2,
                                nullptr,
                                {},
                                nullptr,
                                0,
                                "vpmaddubsw (AVX2): dot-product tiles"};

}  // namespace

const KernelTable* kernels_avx2() { return &kTable; }

}  // namespace qk
