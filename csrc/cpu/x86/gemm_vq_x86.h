// gemm_vq for x86 with 256-bit SIMD: codebook-decoding matmul (contract: csrc/core/kernels.h).
// Included inside an anonymous namespace by cpu/avx2/gemm_vq_avx2.cpp and
// cpu/avx512/gemm_vq_avx512.cpp.
//
// A group of 8 weights is one fp32 vector: the codebook entry of each codebook (one 32-byte load
// each, from a table that is L1-resident for 8-bit codes: 2 x 256 x 32 B = 16 KiB) summed, then an
// FMA with the 8 activations of every row of the tile. 16-bit codebooks (2 MiB per codebook) miss
// L2 on most lookups, so 1x16 runs at the latency of random L3 reads (docs/kernels.md).
#pragma once

#include "cpu/x86/hsum_x86.h"

template <int MC, typename Code>
struct VQTile {
  qk::VQWeights w;
  const float* x;
  int64_t ldx;
  float* c;
  int64_t ldc;
  int64_t entries;  // 2^B

  template <int MR, int NR>
  inline void run(int64_t m, int64_t n) const {
    const int64_t groups = w.K / qk::vq::kGroup;
    const Code* codes = static_cast<const Code*>(w.codes) + n * groups * MC;
    __m256 acc[MR][NR];
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_ps();
    for (int64_t g = 0; g < groups; ++g) {
      __m256 xv[MR];
      for (int i = 0; i < MR; ++i) xv[i] = _mm256_loadu_ps(x + (m + i) * ldx + g * qk::vq::kGroup);
      for (int j = 0; j < NR; ++j) {
        const Code* cj = codes + (j * groups + g) * MC;
        __m256 wv = _mm256_loadu_ps(w.codebooks + static_cast<int64_t>(cj[0]) * qk::vq::kGroup);
        if constexpr (MC == 2)
          wv = _mm256_add_ps(
              wv, _mm256_loadu_ps(w.codebooks +
                                  (entries + static_cast<int64_t>(cj[1])) * qk::vq::kGroup));
        for (int i = 0; i < MR; ++i) acc[i][j] = _mm256_fmadd_ps(xv[i], wv, acc[i][j]);
      }
    }
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) c[(m + i) * ldc + n + j] = hsum_ps(acc[i][j]);
  }
};

template <int MC, int B>
void gemm_vq(const qk::VQWeights& w, const float* x, int64_t ldx, float* c, int64_t ldc, int64_t M,
             int64_t N) {
  using Code = std::conditional_t<B == 8, uint8_t, uint16_t>;
  const VQTile<MC, Code> tile{w, x, ldx, c, ldc, int64_t{1} << B};
  if (M == 1)
    qk::cpu::for_each_tile<1, 4>(M, N, tile);
  else
    qk::cpu::for_each_tile<4, 2>(M, N, tile);
}

inline constexpr qk::GemmVQFn kGemmVQ[qk::vq::kVariants] = {gemm_vq<1, 8>, gemm_vq<1, 16>,
                                                            gemm_vq<2, 8>, gemm_vq<2, 16>};
