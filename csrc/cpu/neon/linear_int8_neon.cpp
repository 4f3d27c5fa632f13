// AArch64 Advanced SIMD int8 kernels (baseline ARMv8-A; no dot-product extension required).
//
// gemm_s8: vmull_s8 + vmlal_high_s8 add two int8 products in int16 (at most 2 * 127 * 127 =
// 32258, no overflow), vpadalq_s16 widens pairs into int32 accumulators. Exact.
// gemm_f32_s8: int8 -> int16 -> int32 -> fp32 widening in registers, vfmaq_f32 in fp32.
// quantize_row_int8: vdivq_f32 + vcvtnq_s32_f32 (round to nearest, ties to even).
// K tails (K % 16) are finished with scalar code, so no load passes column K.
// Tiles: 2 x 4 (int8) and 4 x 4 (fp32) register blocks, 1-wide for the edges.
#include <arm_neon.h>

#include <cmath>
#include <cstring>

#include "core/kernels.h"
#include "cpu/tile_loop.h"
#include "formats/int8.h"

namespace qk {
namespace {

float quantize_row_int8(const float* x, int64_t n, int8_t* q) {
  const float32x4_t inf = vdupq_n_f32(INFINITY);
  float32x4_t vmax = vdupq_n_f32(0.0f);
  uint32x4_t bad = vdupq_n_u32(0);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const float32x4_t a = vabsq_f32(vld1q_f32(x + i));
    vmax = vmaxq_f32(vmax, a);
    // |x| < Inf is false for Inf and NaN alike.
    bad = vorrq_u32(bad, vmvnq_u32(vcltq_f32(a, inf)));
  }
  float absmax = vmaxvq_f32(vmax);
  bool finite = vmaxvq_u32(bad) == 0 && !std::isnan(absmax);
  for (int64_t j = i; j < n; ++j) {
    finite = finite && std::isfinite(x[j]);
    absmax = std::fmax(absmax, std::fabs(x[j]));
  }
  if (!finite) {
    std::memset(q, 0, static_cast<size_t>(n));
    return NAN;
  }
  const float scale = int8::scale_from_absmax(absmax);
  const float32x4_t vs = vdupq_n_f32(scale);
  const int8x8_t lo = vdup_n_s8(static_cast<int8_t>(int8::kQMin));
  i = 0;
  for (; i + 8 <= n; i += 8) {
    const int32x4_t q0 = vcvtnq_s32_f32(vdivq_f32(vld1q_f32(x + i), vs));
    const int32x4_t q1 = vcvtnq_s32_f32(vdivq_f32(vld1q_f32(x + i + 4), vs));
    const int16x8_t h = vcombine_s16(vqmovn_s32(q0), vqmovn_s32(q1));
    vst1_s8(q + i, vmax_s8(vqmovn_s16(h), lo));
  }
  for (; i < n; ++i) q[i] = int8::quantize_value(x[i], scale);
  return scale;
}

struct S8Tile : cpu::S8Args {
  template <int MR, int NR>
  inline void run(int64_t m, int64_t n) const {
    int32x4_t acc[MR][NR];
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j] = vdupq_n_s32(0);
    const int8_t* ap = a + m * lda;
    const int8_t* bp = b + n * ldb;
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
      int8x16_t bv[NR];
      for (int j = 0; j < NR; ++j) bv[j] = vld1q_s8(bp + j * ldb + k);
      for (int i = 0; i < MR; ++i) {
        const int8x16_t av = vld1q_s8(ap + i * lda + k);
        for (int j = 0; j < NR; ++j) {
          int16x8_t p = vmull_s8(vget_low_s8(av), vget_low_s8(bv[j]));
          p = vmlal_high_s8(p, av, bv[j]);
          acc[i][j] = vpadalq_s16(acc[i][j], p);
        }
      }
    }
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) {
        int32_t s = vaddvq_s32(acc[i][j]);
        for (int64_t t = k; t < K; ++t) s += int32_t{ap[i * lda + t]} * int32_t{bp[j * ldb + t]};
        c[(m + i) * ldc + n + j] = s;
      }
  }
};

void gemm_s8(const int8_t* a, int64_t lda, const int8_t* b, int64_t ldb, int32_t* c, int64_t ldc,
             int64_t M, int64_t N, int64_t K) {
  const S8Tile tile{{a, lda, b, ldb, c, ldc, K}};
  if (M == 1)
    cpu::for_each_tile<1, 4>(M, N, tile);
  else
    cpu::for_each_tile<2, 4>(M, N, tile);
}

struct F32S8Tile : cpu::F32S8Args {
  template <int MR, int NR>
  inline void run(int64_t m, int64_t n) const {
    float32x4_t acc[MR][NR];
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j] = vdupq_n_f32(0.0f);
    const float* xp = x + m * ldx;
    const int8_t* wp = w + n * ldw;
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
      float32x4_t wlo[NR], whi[NR];
      for (int j = 0; j < NR; ++j) {
        const int16x8_t h = vmovl_s8(vld1_s8(wp + j * ldw + k));
        wlo[j] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(h)));
        whi[j] = vcvtq_f32_s32(vmovl_high_s16(h));
      }
      for (int i = 0; i < MR; ++i) {
        const float32x4_t x0 = vld1q_f32(xp + i * ldx + k);
        const float32x4_t x1 = vld1q_f32(xp + i * ldx + k + 4);
        for (int j = 0; j < NR; ++j) {
          acc[i][j] = vfmaq_f32(acc[i][j], x0, wlo[j]);
          acc[i][j] = vfmaq_f32(acc[i][j], x1, whi[j]);
        }
      }
    }
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) {
        float s = vaddvq_f32(acc[i][j]);
        for (int64_t t = k; t < K; ++t) s += xp[i * ldx + t] * static_cast<float>(wp[j * ldw + t]);
        c[(m + i) * ldc + n + j] = s;
      }
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

constexpr KernelTable kTable = {QK_ISA_NEON,
                                quantize_row_int8,
                                gemm_s8,
                                gemm_f32_s8,
                                kGemmQNeon,
                                kGemmVQNeon,
                                nullptr,
                                {},
                                nullptr,
                                0,
                                "vmull_s8 (NEON): dot-product tiles"};

}  // namespace

const KernelTable* kernels_neon() { return &kTable; }

}  // namespace qk
