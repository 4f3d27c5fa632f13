// AArch64 Advanced SIMD gemm_q (int4, int3, nf4): group-wise sub-byte weights times an int8
// activation panel (contract: csrc/core/kernels.h).
//
// Per 32-weight block a decoder yields two int8x16 halves in panel order: int4/nf4 split 16
// bytes into low nibbles (even elements) and high nibbles (odd elements), nf4 then looks the
// codes up with vqtbl1q (the register LUT); int3 expands its 2+1 bit planes. vmull_s8 +
// vmlal_high_s8 add two products in int16 (at most 2 * 127 * 127 = 32258), vpadalq_s16 widens
// into int32, and the exact int32 sum of a group is scaled once: acc += float(isum) * (sa * s).
// Tiles: 1 x 4 at batch 1, 2 x 4 above; a short last int4/nf4 block is read from a zero-padded
// copy, so nothing past a row is loaded.
#include <arm_neon.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "core/kernels.h"
#include "cpu/tile_loop.h"
#include "formats/int3.h"
#include "formats/int4.h"
#include "formats/nf4.h"

namespace qk {
namespace {

struct Halves {
  int8x16_t lo, hi;
};

struct Int4Dec {
  static constexpr int64_t kBytes = 16;
  static constexpr bool kZeroPoint = true;
  static Halves codes(const uint8_t* p) {
    const uint8x16_t b = vld1q_u8(p);
    return {vreinterpretq_s8_u8(vandq_u8(b, vdupq_n_u8(0x0F))),
            vreinterpretq_s8_u8(vshrq_n_u8(b, 4))};
  }
};

struct NF4Dec {
  static constexpr int64_t kBytes = 16;
  static constexpr bool kZeroPoint = false;
  static Halves codes(const uint8_t* p) {
    const int8x16_t table = vld1q_s8(nf4::kTableInt8);
    const uint8x16_t b = vld1q_u8(p);
    return {vqtbl1q_s8(table, vandq_u8(b, vdupq_n_u8(0x0F))), vqtbl1q_s8(table, vshrq_n_u8(b, 4))};
  }
};

struct Int3Dec {
  static constexpr int64_t kBytes = int3::kBlockBytes;
  static constexpr bool kZeroPoint = true;
  static Halves codes(const uint8_t* p) {
    // Low plane: byte j holds elements j, j + 8, j + 16, j + 24 at bit offsets 0, 2, 4, 6.
    const uint8x8_t l = vld1_u8(p);
    const uint8x8_t three = vdup_n_u8(3);
    const uint8x16_t lo01 = vcombine_u8(vand_u8(l, three), vand_u8(vshr_n_u8(l, 2), three));
    const uint8x16_t lo23 = vcombine_u8(vand_u8(vshr_n_u8(l, 4), three), vshr_n_u8(l, 6));
    // High plane: byte i/8, bit i%8 is element i's bit 2; vtst gives 0xFF where it is set.
    const uint8x16_t bit = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t h01 = vcombine_u8(vdup_n_u8(p[8]), vdup_n_u8(p[9]));
    const uint8x16_t h23 = vcombine_u8(vdup_n_u8(p[10]), vdup_n_u8(p[11]));
    const uint8x16_t four = vdupq_n_u8(4);
    return {vreinterpretq_s8_u8(vorrq_u8(lo01, vandq_u8(vtstq_u8(h01, bit), four))),
            vreinterpretq_s8_u8(vorrq_u8(lo23, vandq_u8(vtstq_u8(h23, bit), four)))};
  }
};

struct QTileArgs {
  QWeights w;
  const int8_t* a;
  int64_t lda;
  const float* sa;
  int64_t ldsa;
  float* c;
  int64_t ldc;
};

template <typename Dec>
struct QTile : QTileArgs {
  template <int MR, int NR>
  inline void run(int64_t m, int64_t n) const {
    const int64_t nblocks = grouped::blocks_per_row(w.K);
    float32x4_t acc[MR][NR];
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j] = vdupq_n_f32(0.0f);
    const uint8_t* rows = w.packed + n * w.row_bytes;
    // A short last block (int4/nf4 with K % 32 != 0) is copied out of each row before the loops,
    // so no call inside them forces the accumulators out of registers.
    const int64_t full = w.row_bytes / Dec::kBytes;
    alignas(16) uint8_t tail[NR][Dec::kBytes] = {};
    if (full < nblocks)
      for (int j = 0; j < NR; ++j)
        std::memcpy(tail[j], rows + j * w.row_bytes + full * Dec::kBytes,
                    static_cast<size_t>(w.row_bytes - full * Dec::kBytes));
    for (int64_t g = 0; g < w.groups; ++g) {
      int8x16_t zero[NR];
      for (int j = 0; j < NR; ++j)
        zero[j] = vdupq_n_s8(
            static_cast<int8_t>(w.zeros != nullptr ? w.zeros[(n + j) * w.groups + g] : w.zero));
      int32x4_t isum[MR][NR];
      for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NR; ++j) isum[i][j] = vdupq_n_s32(0);
      const int64_t b1 = std::min(nblocks, (g + 1) * w.group_blocks);
      for (int64_t b = g * w.group_blocks; b < b1; ++b) {
        Halves v[NR];
        for (int j = 0; j < NR; ++j) {
          v[j] = Dec::codes(b < full ? rows + j * w.row_bytes + b * Dec::kBytes : tail[j]);
          if constexpr (Dec::kZeroPoint) {
            v[j].lo = vsubq_s8(v[j].lo, zero[j]);
            v[j].hi = vsubq_s8(v[j].hi, zero[j]);
          }
        }
        for (int i = 0; i < MR; ++i) {
          const int8_t* ap = a + (m + i) * lda + b * 32;
          const int8x16_t a0 = vld1q_s8(ap), a1 = vld1q_s8(ap + 16);
          for (int j = 0; j < NR; ++j) {
            int16x8_t p = vmull_s8(vget_low_s8(a0), vget_low_s8(v[j].lo));
            p = vmlal_high_s8(p, a0, v[j].lo);
            int16x8_t q = vmull_s8(vget_low_s8(a1), vget_low_s8(v[j].hi));
            q = vmlal_high_s8(q, a1, v[j].hi);
            isum[i][j] = vpadalq_s16(vpadalq_s16(isum[i][j], p), q);
          }
        }
      }
      for (int i = 0; i < MR; ++i) {
        const float s = sa[(m + i) * ldsa + g];
        for (int j = 0; j < NR; ++j)
          acc[i][j] = vfmaq_n_f32(acc[i][j], vcvtq_f32_s32(isum[i][j]),
                                  s * w.scales[(n + j) * w.groups + g]);
      }
    }
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) c[(m + i) * ldc + n + j] = vaddvq_f32(acc[i][j]);
  }
};

template <typename Dec>
void gemm_q(const QWeights& w, const int8_t* a, int64_t lda, const float* sa, const float*,
            int64_t ldsa, float* c, int64_t ldc, int64_t M, int64_t N) {
  const QTile<Dec> tile{{w, a, lda, sa, ldsa, c, ldc}};
  if (M == 1)
    cpu::for_each_tile<1, 4>(M, N, tile);
  else
    cpu::for_each_tile<2, 4>(M, N, tile);
}

}  // namespace

const GemmQFn kGemmQNeon[kQFormatCount] = {gemm_q<Int4Dec>, gemm_q<Int3Dec>, gemm_q<NF4Dec>};

}  // namespace qk
