// AVX2 + FMA int8 kernels.
//
// gemm_s8: int8 x int8 -> int32 with the "sign trick": vpmaddubsw needs one unsigned operand, so
// it multiplies |a| (unsigned) by b with a's sign moved onto it (vpsignb). Both operands lie in
// [-127, 127], so each int16 pair sum is at most 2 * 127 * 127 = 32258 < 32767: vpmaddubsw never
// saturates and the result is exact. vpmaddwd with ones widens the pairs to int32.
// gemm_f32_s8: at M <= 4, weights widened int8 -> int32 -> fp32 in registers and FMA-accumulated
// in fp32 (a dot product per output); above, weight strips are widened into L1 and multiplied as
// fp32 outer products (see gemm_f32_s8_panels).
// quantize_row_int8: vdivps + vcvtps2dq (MXCSR default: round half to even), as the scalar rule.
//
// Tiles: 2 x 4 (int8) and 3 x 4 (fp32) outputs per register block; 1-wide tiles for the edges.
// K tails read the weight rows through a zero-padded stack copy, never past column K.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/kernels.h"
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

struct S8Tile {
  const int8_t* a;
  int64_t lda;
  const int8_t* b;
  int64_t ldb;
  int32_t* c;
  int64_t ldc, K;

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
      for (int j = 0; j < NR; ++j)
        bv[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + j * ldb + k));
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
  const S8Tile tile{a, lda, b, ldb, c, ldc, K};
  if (M == 1)
    cpu::for_each_tile<1, 4>(M, N, tile);
  else
    cpu::for_each_tile<2, 4>(M, N, tile);
}

inline __m256 widen8(const int8_t* p) {
  const __m128i v = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
}

struct F32S8Tile {
  const float* x;
  int64_t ldx;
  const int8_t* w;
  int64_t ldw;
  float* c;
  int64_t ldc, K;

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
      for (int j = 0; j < NR; ++j) wv[j] = widen8(wp + j * ldw + k);
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

// ---- W8A16 at M > 4: weights decoded to fp32 strips in L1, fp32 outer products ----------------
// The register-decode dot kernel above re-widens every weight for each activation row it meets and
// ends each output with a horizontal sum; at larger M that work dominates. Here each k block of
// 6 weight rows is widened once into `wp` and reused by up to 128 activation rows, which are
// transposed once per k block into `xp` ([k][16] per 16-row group) and reused by every weight
// strip. The 16 x 6 register tile then needs 2 loads + 6 broadcasts per 12 FMAs.
constexpr int64_t kKc = 256;  // k block: a 16-row xp group (16 KiB) and wp (6 KiB) stay in L1
constexpr int64_t kMg = 16;   // activation rows per register tile (2 ymm)
constexpr int64_t kNr = 6;    // weight rows per register tile (one broadcast each)
constexpr int64_t kMb = 128;  // activation rows packed per k block (128 KiB, L2)

inline float* align32(float* p) {
  return reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(p) + 31) & ~uintptr_t{31});
}

// dst[k * 16 + c] = src[c * ld + k] for an 8 x 8 block (c, k < 8).
inline void transpose8x8_to16(const float* src, int64_t ld, float* dst) {
  __m256 r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * ld);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_store_ps(dst + i * kMg, _mm256_permute2f128_ps(u[i], u[i + 4], 0x20));
    _mm256_store_ps(dst + (i + 4) * kMg, _mm256_permute2f128_ps(u[i], u[i + 4], 0x31));
  }
}

// xp[g][k][i] = x[(16 g + i) * ldx + k] for k < kc; rows at or past mr are zero.
void pack_x(const float* x, int64_t ldx, int64_t mr, int64_t kc, float* xp) {
  for (int64_t g = 0; g * kMg < mr; ++g) {
    float* dst = xp + g * kKc * kMg;
    const float* src = x + g * kMg * ldx;
    const int64_t rows = std::min(kMg, mr - g * kMg);
    int64_t k = 0;
    if (rows == kMg)
      for (; k + 8 <= kc; k += 8) {
        transpose8x8_to16(src + k, ldx, dst + k * kMg);
        transpose8x8_to16(src + 8 * ldx + k, ldx, dst + k * kMg + 8);
      }
    for (; k < kc; ++k)
      for (int64_t i = 0; i < kMg; ++i) dst[k * kMg + i] = i < rows ? src[i * ldx + k] : 0.0f;
  }
}

// wp[j][k] = float(w[j * ldw + k]) for k < kc; rows at or past nr are zero.
void pack_w(const int8_t* w, int64_t ldw, int64_t nr, int64_t kc, float* wp) {
  for (int64_t j = 0; j < kNr; ++j) {
    float* dst = wp + j * kKc;
    if (j >= nr) {
      std::memset(dst, 0, sizeof(float) * static_cast<size_t>(kc));
      continue;
    }
    const int8_t* src = w + j * ldw;
    int64_t k = 0;
    for (; k + 8 <= kc; k += 8) _mm256_store_ps(dst + k, widen8(src + k));
    for (; k < kc; ++k) dst[k] = static_cast<float>(src[k]);
  }
}

// c[i * ldc + j] += sum_k xp[k][i] * wp[j][k] for i < mr, j < nr.
// The 12 accumulators are named variables, not an array: GCC keeps an accumulator array in memory
// and stores all of it every iteration, which halves the FMA rate.
void micro_16x6(const float* xp, const float* wp, int64_t kc, float* c, int64_t ldc, int64_t mr,
                int64_t nr) {
  __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00;
  __m256 a30 = a00, a31 = a00, a40 = a00, a41 = a00, a50 = a00, a51 = a00;
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 x0 = _mm256_load_ps(xp + k * kMg);
    const __m256 x1 = _mm256_load_ps(xp + k * kMg + 8);
    __m256 b = _mm256_broadcast_ss(wp + k);
    a00 = _mm256_fmadd_ps(x0, b, a00);
    a01 = _mm256_fmadd_ps(x1, b, a01);
    b = _mm256_broadcast_ss(wp + kKc + k);
    a10 = _mm256_fmadd_ps(x0, b, a10);
    a11 = _mm256_fmadd_ps(x1, b, a11);
    b = _mm256_broadcast_ss(wp + 2 * kKc + k);
    a20 = _mm256_fmadd_ps(x0, b, a20);
    a21 = _mm256_fmadd_ps(x1, b, a21);
    b = _mm256_broadcast_ss(wp + 3 * kKc + k);
    a30 = _mm256_fmadd_ps(x0, b, a30);
    a31 = _mm256_fmadd_ps(x1, b, a31);
    b = _mm256_broadcast_ss(wp + 4 * kKc + k);
    a40 = _mm256_fmadd_ps(x0, b, a40);
    a41 = _mm256_fmadd_ps(x1, b, a41);
    b = _mm256_broadcast_ss(wp + 5 * kKc + k);
    a50 = _mm256_fmadd_ps(x0, b, a50);
    a51 = _mm256_fmadd_ps(x1, b, a51);
  }
  alignas(32) float tile[kNr][kMg];
  const __m256 acc[kNr][2] = {{a00, a01}, {a10, a11}, {a20, a21},
                              {a30, a31}, {a40, a41}, {a50, a51}};
  for (int64_t j = 0; j < kNr; ++j) {
    _mm256_store_ps(tile[j], acc[j][0]);
    _mm256_store_ps(tile[j] + 8, acc[j][1]);
  }
  for (int64_t i = 0; i < mr; ++i)
    for (int64_t j = 0; j < nr; ++j) c[i * ldc + j] += tile[j][i];
}

void gemm_f32_s8_panels(const float* x, int64_t ldx, const int8_t* w, int64_t ldw, float* c,
                        int64_t ldc, int64_t M, int64_t N, int64_t K) {
  // Per-thread scratch (134 KiB): too large for the stacks of threads an engine may call from.
  thread_local std::vector<float> scratch((kMb + kNr) * kKc + 8);
  float* xp = align32(scratch.data());
  float* wp = xp + kMb * kKc;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) c[m * ldc + n] = 0.0f;
  for (int64_t m0 = 0; m0 < M; m0 += kMb) {
    const int64_t mb = std::min(kMb, M - m0);
    for (int64_t k0 = 0; k0 < K; k0 += kKc) {
      const int64_t kc = std::min(kKc, K - k0);
      pack_x(x + m0 * ldx + k0, ldx, mb, kc, xp);
      for (int64_t n0 = 0; n0 < N; n0 += kNr) {
        const int64_t nr = std::min(kNr, N - n0);
        pack_w(w + n0 * ldw + k0, ldw, nr, kc, wp);
        for (int64_t g = 0; g * kMg < mb; ++g)
          micro_16x6(xp + g * kKc * kMg, wp, kc, c + (m0 + g * kMg) * ldc + n0, ldc,
                     std::min(kMg, mb - g * kMg), nr);
      }
    }
  }
}

void gemm_f32_s8(const float* x, int64_t ldx, const int8_t* w, int64_t ldw, float* c, int64_t ldc,
                 int64_t M, int64_t N, int64_t K) {
  if (M > 4) return gemm_f32_s8_panels(x, ldx, w, ldw, c, ldc, M, N, K);
  const F32S8Tile tile{x, ldx, w, ldw, c, ldc, K};
  if (M == 1)
    cpu::for_each_tile<1, 4>(M, N, tile);
  else
    cpu::for_each_tile<3, 4>(M, N, tile);
}

constexpr KernelTable kTable = {QK_ISA_AVX2, quantize_row_int8, gemm_s8, gemm_f32_s8};

}  // namespace

const KernelTable* kernels_avx2() { return &kTable; }

}  // namespace qk
