// AVX-512 fp32 panel GEMM for batches of W8A16 (c[m, n] = sum_k x[m, k] * float(w[n, k])) and
// vq (c[m, n] = sum_k x[m, k] * decoded weight; kernels.h: GemmVQFn).
//
// The fp32 twin of gemm_panel_avx512vnni.cpp. The dot-product tiles (gemm_f32_s8, gemm_vq) decode
// every weight once per register tile of activation rows and end in a horizontal sum per output;
// here the weights of a task are decoded once per K block (256 k) into an fp32 panel, 16 columns
// per 64-byte vector and one vector per k, and an 8 x 48 register tile (24 fp32 accumulators)
// runs 3 panel loads, 8 activation broadcasts and 24 FMAs per k, the shape of a BLAS kernel.
// Decoding goes through the 16 x 8 dword transpose of the VNNI panel:
// - int8 rows, 32 k at a time: the transpose puts 4 consecutive k of each column in one dword;
//   shifting byte t to the top and back (arithmetic) sign-extends it, then vcvtdq2ps.
// - vq, one group of 8 k at a time: each row's 8 weights are the sum of its codebook entries
//   (fp32, one 32-byte load per codebook), and the transpose turns 16 rows into 8 k vectors.
//
// Limitations: AVX-512F/BW/VL; c is written (not accumulated); x is read up to column K only.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "core/kernels.h"
#include "cpu/tile_loop.h"
#include "formats/grouped.h"
#include "formats/vq.h"

namespace qk {
namespace {
#include "cpu/avx512/panel_avx512.h"

constexpr int64_t kKc = 256;  // k per K block
constexpr int64_t kBlock = grouped::kBlock;

struct Scratch {
  std::vector<float> panel;  // [vectors, kKc, 16] plus 64 bytes of alignment slack
};

// int8 rows [N, ldw] (W8A16).
struct S8Rows {
  const int8_t* w;
  int64_t ldw;

  // Widens k in [k0, k1) of columns [v * 16, v * 16 + 16) into dst ([k1 - k0, 16] floats; k0 a
  // multiple of 32).
  void pack(int64_t v, int64_t k0, int64_t k1, int64_t N, int64_t K, float* dst) const {
    for (int64_t kb = k0; kb < k1; kb += kBlock) {
      const int64_t len = std::min(kBlock, K - kb);
      __m256i rows[16];
      for (int r = 0; r < 16; ++r) {
        const int64_t n = v * 16 + r;
        if (n >= N) {
          rows[r] = _mm256_setzero_si256();
        } else {
          // Masked load: nothing past column K of a row is read.
          const __mmask32 m = len >= 32 ? ~__mmask32{0} : (__mmask32{1} << len) - 1;
          rows[r] = _mm256_maskz_loadu_epi8(m, w + n * ldw + kb);
        }
      }
      __m512i quads[8];  // quads[q]: k = kb + 4q .. kb + 4q + 3 of the 16 columns
      transpose_16x8(rows, quads);
      for (int q = 0; q < 8 && kb + 4 * q < k1; ++q)
        for (int t = 0; t < 4; ++t) {
          const __m512i b = _mm512_srai_epi32(_mm512_slli_epi32(quads[q], 24 - 8 * t), 24);
          _mm512_store_ps(dst + (kb - k0 + 4 * q + t) * 16, _mm512_cvtepi32_ps(b));
        }
    }
  }
};

// vq codes [N, K / 8, MC] with fp32 codebooks [MC, 2^B, 8] (the per-row scale is the driver's).
template <int MC, typename Code>
struct VQRows {
  const Code* codes;
  const float* books;
  int64_t entries;

  // Decodes k in [k0, k1) (multiples of 8) of columns [v * 16, v * 16 + 16) into dst.
  void pack(int64_t v, int64_t k0, int64_t k1, int64_t N, int64_t K, float* dst) const {
    const int64_t groups = K / vq::kGroup;
    for (int64_t kb = k0; kb < k1; kb += vq::kGroup) {
      const int64_t g = kb / vq::kGroup;
      __m256i rows[16];
      for (int r = 0; r < 16; ++r) {
        const int64_t n = v * 16 + r;
        if (n >= N) {
          rows[r] = _mm256_setzero_si256();
          continue;
        }
        const Code* cg = codes + (n * groups + g) * MC;
        __m256 sum = _mm256_loadu_ps(books + static_cast<int64_t>(cg[0]) * vq::kGroup);
        if constexpr (MC == 2)
          sum = _mm256_add_ps(
              sum, _mm256_loadu_ps(books + (entries + static_cast<int64_t>(cg[1])) * vq::kGroup));
        rows[r] = _mm256_castps_si256(sum);
      }
      __m512i ks[8];  // ks[q]: k = kb + q of the 16 columns
      transpose_16x8(rows, ks);
      for (int q = 0; q < 8; ++q) _mm512_store_si512(dst + (kb - k0 + q) * 16, ks[q]);
    }
  }
};

template <typename Rows>
struct PanelF32 {
  const float* x;
  int64_t ldx;
  Rows rows_of;
  float* c;
  int64_t ldc, M, N, K, vecs;
  Scratch& s;

  float* panel() const { return aligned_panel(s.panel); }

  void pack(int64_t k0, int64_t k1) const {
    for (int64_t v = 0; v < vecs; ++v) rows_of.pack(v, k0, k1, N, K, panel() + v * kKc * 16);
  }

  template <int MR, int NR>
  void tile(int64_t m, int64_t v, int64_t k0, int64_t k1) const {
    __mmask16 cols[NR];
    const float* bp[NR];
    _Pragma("GCC unroll 4") for (int j = 0; j < NR; ++j) {
      cols[j] = column_mask(N - (v + j) * 16);
      bp[j] = panel() + (v + j) * kKc * 16;
    }
    __m512 acc[MR][NR];
    _Pragma("GCC unroll 8") for (int i = 0; i < MR; ++i)
        _Pragma("GCC unroll 4") for (int j = 0; j < NR; ++j) acc[i][j] =
            k0 == 0 ? _mm512_setzero_ps()
                    : _mm512_maskz_loadu_ps(cols[j], c + (m + i) * ldc + (v + j) * 16);
    const float* xp = x + m * ldx;
    for (int64_t k = k0; k < k1; ++k) {
      __m512 b[NR];
      _Pragma("GCC unroll 4") for (int j = 0; j < NR; ++j) b[j] =
          _mm512_load_ps(bp[j] + (k - k0) * 16);
      _Pragma("GCC unroll 8") for (int i = 0; i < MR; ++i) {
        const __m512 a = _mm512_set1_ps(xp[i * ldx + k]);
        _Pragma("GCC unroll 4") for (int j = 0; j < NR; ++j) acc[i][j] =
            _mm512_fmadd_ps(a, b[j], acc[i][j]);
      }
    }
    _Pragma("GCC unroll 8") for (int i = 0; i < MR; ++i)
        _Pragma("GCC unroll 4") for (int j = 0; j < NR; ++j)
            _mm512_mask_storeu_ps(c + (m + i) * ldc + (v + j) * 16, cols[j], acc[i][j]);
  }

  void run() const {
    if (K == 0) {
      for (int64_t m = 0; m < M; ++m) std::fill_n(c + m * ldc, N, 0.0f);
      return;
    }
    for (int64_t k0 = 0; k0 < K; k0 += kKc) {
      const int64_t k1 = std::min(K, k0 + kKc);
      pack(k0, k1);
      panel_tiles(*this, M, vecs, k0, k1);
    }
  }
};

template <typename Rows>
void run_panel(const float* x, int64_t ldx, const Rows& rows, float* c, int64_t ldc, int64_t M,
               int64_t N, int64_t K) {
  if (M == 0 || N == 0) return;
  thread_local Scratch s;
  const int64_t vecs = (N + 15) / 16;
  s.panel.resize(static_cast<size_t>(vecs * kKc * 16 + 16));
  const PanelF32<Rows> p{x, ldx, rows, c, ldc, M, N, K, vecs, s};
  p.run();
}

template <int MC, int B>
void gemm_vq_panel(const VQWeights& w, const float* x, int64_t ldx, float* c, int64_t ldc,
                   int64_t M, int64_t N) {
  using Code = std::conditional_t<B == 8, uint8_t, uint16_t>;
  const VQRows<MC, Code> rows{static_cast<const Code*>(w.codes), w.codebooks, int64_t{1} << B};
  run_panel(x, ldx, rows, c, ldc, M, N, w.K);
}

}  // namespace

void gemm_f32_s8_panel_avx512(const float* x, int64_t ldx, const int8_t* w, int64_t ldw, float* c,
                              int64_t ldc, int64_t M, int64_t N, int64_t K) {
  run_panel(x, ldx, S8Rows{w, ldw}, c, ldc, M, N, K);
}

const GemmVQFn kGemmVQPanelAvx512[vq::kVariants] = {gemm_vq_panel<1, 8>, gemm_vq_panel<1, 16>,
                                                    gemm_vq_panel<2, 8>, gemm_vq_panel<2, 16>};

}  // namespace qk
