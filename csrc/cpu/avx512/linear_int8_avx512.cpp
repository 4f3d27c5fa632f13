// AVX-512 (F, BW, VL, DQ) int8 kernels; gemm_s8 switches to the VNNI unit when cpuid has it.
//
// gemm_s8 without VNNI: AVX-512 has no vpsignb, so a's sign moves onto b with a masked negate
// (vpmovb2m + masked vpsubb), then vpmaddubsw(|a|, ±b) -> vpmaddwd(ones) as in the AVX2 path.
// Exact for the same reason: |a|, |b| <= 127, so int16 pair sums cannot saturate.
// gemm_f32_s8: int8 -> fp32 widening in registers, FMA in fp32.
// K tails use masked loads, which never touch memory outside the mask.
// Tiles: 2 x 8 (int8) and 4 x 4 (fp32) register blocks, 1-wide for the edges.
#include "cpu/avx512/linear_int8_avx512.h"

#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "core/kernels.h"
#include "cpu/prefetch_x86.h"
#include "cpu/tile_loop.h"
#include "formats/int8.h"

namespace qk {
namespace {

inline __mmask64 tail_mask64(int64_t r) {
  return r >= 64 ? ~__mmask64{0} : ((__mmask64{1} << r) - 1);
}
inline __mmask16 tail_mask16(int64_t r) {
  return r >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << r) - 1);
}

float quantize_row_int8(const float* x, int64_t n, int8_t* q) {
  const __m512 inf = _mm512_set1_ps(INFINITY);
  __m512 vmax = _mm512_setzero_ps();
  __mmask16 bad = 0;
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask16(n - i);
    const __m512 a = _mm512_abs_ps(_mm512_maskz_loadu_ps(m, x + i));
    vmax = _mm512_max_ps(vmax, a);
    // NLT_UQ is true for +Inf and for NaN (unordered), which vmaxps would silently drop.
    bad |= _mm512_mask_cmp_ps_mask(m, a, inf, _CMP_NLT_UQ);
  }
  if (bad) {
    std::memset(q, 0, static_cast<size_t>(n));
    return NAN;
  }
  const float scale = int8::scale_from_absmax(_mm512_reduce_max_ps(vmax));
  const __m512 vs = _mm512_set1_ps(scale);
  const __m128i lo = _mm_set1_epi8(static_cast<char>(int8::kQMin));
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask16(n - i);
    const __m512i v = _mm512_cvtps_epi32(_mm512_div_ps(_mm512_maskz_loadu_ps(m, x + i), vs));
    // vpmovsdb saturates to [-128, 127]; the max restores the symmetric range.
    const __m128i b = _mm_max_epi8(_mm512_cvtsepi32_epi8(v), lo);
    _mm_mask_storeu_epi8(q + i, m, b);
  }
  return scale;
}

struct S8Tile : cpu::S8Args {
  template <int MR, int NR>
  inline void run(int64_t m, int64_t n) const {
    const __m512i ones = _mm512_set1_epi16(1);
    const __m512i zero = _mm512_setzero_si512();
    __m512i acc[MR][NR];
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_si512();
    const int8_t* ap = a + m * lda;
    const int8_t* bp = b + n * ldb;
    for (int64_t k = 0; k < K; k += 64) {
      const __mmask64 km = tail_mask64(K - k);
      __m512i bv[NR];
      for (int j = 0; j < NR; ++j) {
        // First pass over a strip: prefetch the rows two tiles ahead, as the AVX2 path does.
        if (m == 0) cpu::prefetch_strip<MR>(bp + (2 * NR + j) * ldb + k);
        bv[j] = _mm512_maskz_loadu_epi8(km, bp + j * ldb + k);
      }
      for (int i = 0; i < MR; ++i) {
        // The panel is zero-padded to kPanelAlign = 64, so a full load of a is in bounds.
        const __m512i av = _mm512_load_si512(ap + i * lda + k);
        const __m512i aa = _mm512_abs_epi8(av);
        const __mmask64 neg = _mm512_movepi8_mask(av);
        for (int j = 0; j < NR; ++j) {
          const __m512i sb = _mm512_mask_sub_epi8(bv[j], neg, zero, bv[j]);
          acc[i][j] =
              _mm512_add_epi32(acc[i][j], _mm512_madd_epi16(_mm512_maddubs_epi16(aa, sb), ones));
        }
      }
    }
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) c[(m + i) * ldc + n + j] = _mm512_reduce_add_epi32(acc[i][j]);
  }
};

void gemm_s8(const int8_t* a, int64_t lda, const int8_t* b, int64_t ldb, int32_t* c, int64_t ldc,
             int64_t M, int64_t N, int64_t K) {
  const S8Tile tile{{a, lda, b, ldb, c, ldc, K}};
  if (M == 1)
    cpu::for_each_tile<1, 8>(M, N, tile);
  else
    cpu::for_each_tile<2, 8>(M, N, tile);
}

struct F32S8Tile : cpu::F32S8Args {
  template <int MR, int NR>
  inline void run(int64_t m, int64_t n) const {
    __m512 acc[MR][NR];
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
    const float* xp = x + m * ldx;
    const int8_t* wp = w + n * ldw;
    for (int64_t k = 0; k < K; k += 16) {
      const __mmask16 km = tail_mask16(K - k);
      __m512 wv[NR];
      for (int j = 0; j < NR; ++j) {
        if (m == 0 && (k & 63) == 0) cpu::prefetch_strip<MR>(wp + (2 * NR + j) * ldw + k);
        wv[j] =
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(km, wp + j * ldw + k)));
      }
      for (int i = 0; i < MR; ++i) {
        const __m512 xv = _mm512_maskz_loadu_ps(km, xp + i * ldx + k);
        for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
      }
    }
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) c[(m + i) * ldc + n + j] = _mm512_reduce_add_ps(acc[i][j]);
  }
};

void gemm_f32_s8(const float* x, int64_t ldx, const int8_t* w, int64_t ldw, float* c, int64_t ldc,
                 int64_t M, int64_t N, int64_t K) {
  const F32S8Tile tile{{x, ldx, w, ldw, c, ldc, K}};
  if (M == 1)
    cpu::for_each_tile<1, 4>(M, N, tile);
  else
    cpu::for_each_tile<4, 4>(M, N, tile);
}

// From this batch size on W8A16's panel GEMM beats the 4 x 4 dot-product tiles (docs/kernels.md).
constexpr int64_t kF32PanelMinM = 4;

KernelTable make_table() {
  const bool vnni = __builtin_cpu_supports("avx512vnni");
  return {QK_ISA_AVX512,
          quantize_row_int8,
          vnni ? gemm_s8_avx512vnni : gemm_s8,
          gemm_f32_s8,
          kGemmQAvx512,
          kGemmVQAvx512,
          vnni ? kGemmPanelAvx512Vnni : nullptr,
          // From these batch sizes on (int4, int3, nf4, int8) the VNNI panel GEMM beats the
          // dot-product kernels: measured crossovers in docs/kernels.md.
          {8, 8, 8, 12},
          gemm_f32_s8_panel_avx512,
          kF32PanelMinM,
          vnni ? "vpdpbusd (AVX-512 VNNI): panel GEMM from M >= 8 (int8: 12); W8A16, vq: fp32 "
                 "panel GEMM from M >= 4, 16"
               : "vpmaddubsw (AVX-512BW, no VNNI): dot-product tiles; W8A16, vq: fp32 panel "
                 "GEMM from M >= 4, 16",
          kGemmVQPanelAvx512,
          // vq's panel GEMM against its 4 x 2 dot-product tiles (1x8, 1x16, 2x8, 2x16): 16-bit
          // codebooks, decoded from L3, need more rows to pay for it (docs/kernels.md).
          {16, 32, 16, 32}};
}

}  // namespace

const KernelTable* kernels_avx512() {
  static const KernelTable table = make_table();
  return &table;
}

}  // namespace qk
