// gemm_q for x86 with 256-bit integer SIMD: group-wise int4 / int3 / nf4 weights times an int8
// activation panel (contract: csrc/core/kernels.h). Included inside an anonymous namespace by
// cpu/avx2/gemm_q_avx2.cpp and cpu/avx512/gemm_q_avx512.cpp, so each gets its own copy compiled
// with its own flags (AVX-512 adds 16 more vector registers, which the larger tiles use).
//
// Per 32-weight block a decoder turns the packed bytes into 32 bytes in panel order, then
// vpmaddubsw -> vpmaddwd(1) -> vpaddd accumulate exact int32 sums per group:
// - int4/int3: the unsigned codes u go straight into vpmaddubsw(u, a): u <= 15 and |a| <= 127,
//   so an int16 pair sum is at most 2 * 15 * 127 = 3810. The zero point is applied once per
//   group and per lane: lane l of the dot product holds sum a u over bytes 4l..4l+3 of every
//   block, and the driver's asum8 holds sum a over the same bytes, so lane - z * asum8 (one FMA)
//   is sum a (u - z) for that lane, exactly: every value is an integer below 2^24 (groups up to
//   8192 weights), so the lanes carry what the signed path would, with no cancellation.
// - nf4: signed table values v, vpmaddubsw(|v|, a with v's sign): |v|, |a| <= 127, so a pair
//   sum is at most 2 * 127 * 127 = 32258 < 32767: never saturates.
// The group's sum is then scaled once: acc += float(isum) * (sa * scale).
//
// Limitations: weight rows are read in whole blocks; a short last block (int4/nf4 when K is not a
// multiple of 32) goes through a zero-padded copy, so nothing past a row is read.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "core/kernels.h"
#include "cpu/prefetch_x86.h"
#include "cpu/tile_loop.h"
#include "cpu/x86/hsum_x86.h"
#include "formats/int3.h"
#include "formats/int4.h"
#include "formats/nf4.h"

struct QTileArgs {
  qk::QWeights w;
  const int8_t* a;
  int64_t lda;
  const float* sa;
  const float* asum;
  int64_t ldsa;
  float* c;
  int64_t ldc;
};

// 16 packed bytes -> 32 nibbles in panel order: low nibbles (even elements), then high nibbles.
// The bytes are broadcast to both 128-bit lanes by the load itself; a per-lane shift (0, then 4)
// and a mask split them, with no cross-lane shuffle.
inline __m256i split_nibbles(const uint8_t* p) {
  const __m256i b =
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  const __m256i shifted = _mm256_srlv_epi32(b, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
  return _mm256_and_si256(shifted, _mm256_set1_epi8(0x0F));
}

struct Int4Dec {
  static constexpr int64_t kBytes = 16;
  static constexpr bool kZeroPoint = true;
  static __m256i codes(const uint8_t* p) { return split_nibbles(p); }
};

struct NF4Dec {
  static constexpr int64_t kBytes = 16;
  static constexpr bool kZeroPoint = false;
  // vpshufb is a 16-entry byte table lookup: the register LUT of the NF4 values.
  static __m256i codes(const uint8_t* p) {
    const __m256i table = _mm256_broadcastsi128_si256(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(qk::nf4::kTableInt8)));
    return _mm256_shuffle_epi8(table, split_nibbles(p));
  }
};

struct Int3Dec {
  static constexpr int64_t kBytes = qk::int3::kBlockBytes;
  static constexpr bool kZeroPoint = true;
  static __m256i codes(const uint8_t* p) {
    // Low plane: byte j holds elements j + 8t at bits 2t. Broadcast the 8 bytes to 4 quadwords and
    // shift quadword t right by 2t: byte j of quadword t then has element j + 8t in its low bits.
    const __m256i q = _mm256_broadcastq_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
    const __m256i lo =
        _mm256_and_si256(_mm256_srlv_epi64(q, _mm256_setr_epi64x(0, 2, 4, 6)), _mm256_set1_epi8(3));
    // High plane: bit i of the 32-bit word is element i's bit 2. Byte i/8 goes to lane i, then a
    // per-lane bit test gives 0xFF where the bit is set.
    int32_t h32;
    std::memcpy(&h32, p + 8, 4);
    const __m256i sel = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,  //
                                         2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit =
        _mm256_setr_epi8(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16,
                         32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128);
    const __m256i h = _mm256_shuffle_epi8(_mm256_set1_epi32(h32), sel);
    const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(h, bit), bit);
    return _mm256_or_si256(lo, _mm256_and_si256(set, _mm256_set1_epi8(4)));
  }
};

template <typename Dec>
struct QTile : QTileArgs {
  template <int MR, int NR>
  inline void run(int64_t m, int64_t n) const {
    const __m256i ones = _mm256_set1_epi16(1);
    const int64_t nblocks = qk::grouped::blocks_per_row(w.K);
    // The fp32 accumulators are touched once per group and live in memory, so the registers hold
    // the int32 sums that every block updates (acc + isum of a 3 x 2 tile would not fit in 16).
    alignas(32) float acc[MR][NR][8] = {};
    const uint8_t* rows = w.packed + n * w.row_bytes;
    // A short last block (int4/nf4 with K % 32 != 0) is copied out of each row here, before the
    // loops: a memcpy call inside them would force the int32 sums out of registers.
    const int64_t full = w.row_bytes / Dec::kBytes;
    alignas(16) uint8_t tail[NR][Dec::kBytes] = {};
    if (full < nblocks)
      for (int j = 0; j < NR; ++j)
        std::memcpy(tail[j], rows + j * w.row_bytes + full * Dec::kBytes,
                    static_cast<size_t>(w.row_bytes - full * Dec::kBytes));
    for (int64_t g = 0; g < w.groups; ++g) {
      __m256i isum[MR][NR];
      _Pragma("GCC unroll 8") for (int i = 0; i < MR; ++i)
          _Pragma("GCC unroll 8") for (int j = 0; j < NR; ++j) isum[i][j] = _mm256_setzero_si256();
      const int64_t b1 = std::min(nblocks, (g + 1) * w.group_blocks);
      for (int64_t b = g * w.group_blocks; b < b1; ++b) {
        __m256i v[NR];
        _Pragma("GCC unroll 8") for (int j = 0; j < NR; ++j) {
          // Rows two tiles ahead, one prefetch per 64-byte line (see linear_int8_avx2.cpp).
          if (m == 0 && static_cast<uint64_t>(b * Dec::kBytes) % 64 < Dec::kBytes)
            qk::cpu::prefetch_strip<MR>(rows + (2 * NR + j) * w.row_bytes + b * Dec::kBytes);
          v[j] = Dec::codes(b < full ? rows + j * w.row_bytes + b * Dec::kBytes : tail[j]);
        }
        _Pragma("GCC unroll 8") for (int i = 0; i < MR; ++i) {
          const __m256i av =
              _mm256_load_si256(reinterpret_cast<const __m256i*>(a + (m + i) * lda + b * 32));
          _Pragma("GCC unroll 8") for (int j = 0; j < NR; ++j) {
            __m256i p;
            if constexpr (Dec::kZeroPoint)
              p = _mm256_maddubs_epi16(v[j], av);
            else
              p = _mm256_maddubs_epi16(_mm256_abs_epi8(v[j]), _mm256_sign_epi8(av, v[j]));
            isum[i][j] = _mm256_add_epi32(isum[i][j], _mm256_madd_epi16(p, ones));
          }
        }
      }
      _Pragma("GCC unroll 8") for (int i = 0; i < MR; ++i) {
        const __m256 s = _mm256_set1_ps(sa[(m + i) * ldsa + g]);
        const float* asum8 = asum + ((m + i) * ldsa + g) * 8;
        _Pragma("GCC unroll 8") for (int j = 0; j < NR; ++j) {
          const __m256 d = _mm256_mul_ps(s, _mm256_set1_ps(w.scales[(n + j) * w.groups + g]));
          __m256 dot = _mm256_cvtepi32_ps(isum[i][j]);
          if constexpr (Dec::kZeroPoint) {
            const int z = w.zeros != nullptr ? w.zeros[(n + j) * w.groups + g] : w.zero;
            dot = _mm256_fnmadd_ps(_mm256_set1_ps(static_cast<float>(z)), _mm256_loadu_ps(asum8),
                                   dot);
          }
          _mm256_store_ps(acc[i][j], _mm256_fmadd_ps(dot, d, _mm256_load_ps(acc[i][j])));
        }
      }
    }
    _Pragma("GCC unroll 8") for (int i = 0; i < MR; ++i)
        _Pragma("GCC unroll 8") for (int j = 0; j < NR; ++j) c[(m + i) * ldc + n + j] =
            hsum_ps(_mm256_load_ps(acc[i][j]));
  }
};

template <typename Dec, int GemmMR, int GemmNR>
void gemm_q(const qk::QWeights& w, const int8_t* a, int64_t lda, const float* sa, const float* asum,
            int64_t ldsa, float* c, int64_t ldc, int64_t M, int64_t N) {
  const QTile<Dec> tile{{w, a, lda, sa, asum, ldsa, c, ldc}};
  if (M == 1)
    qk::cpu::for_each_tile<1, 4>(M, N, tile);
  else
    qk::cpu::for_each_tile<GemmMR, GemmNR>(M, N, tile);
}
