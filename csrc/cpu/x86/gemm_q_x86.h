// gemm_q for x86 with 256-bit integer SIMD: group-wise int4 / int3 / nf4 weights times an int8
// activation panel (contract: csrc/core/kernels.h). Included inside an anonymous namespace by
// cpu/avx2/gemm_q_avx2.cpp and cpu/avx512/gemm_q_avx512.cpp, so each gets its own copy compiled
// with its own flags (AVX-512 adds 16 more vector registers, which the larger tiles use).
//
// Per 32-weight block: a decoder turns the packed bytes into 32 signed int8 values v in panel
// order, then vpmaddubsw(|v|, a with v's sign) -> vpmaddwd(1) -> vpaddd. |v| <= 127 and
// |a| <= 127, so an int16 pair sum is at most 2 * 127 * 127 = 32258: never saturates. The exact
// int32 sum of a group is scaled once per group: acc += float(isum) * (sa * scale).
//
// Limitations: weight rows are read in whole blocks; a short last block (int4/nf4 when K is not a
// multiple of 32) goes through a zero-padded stack copy, so nothing past a row is read.
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
  int64_t ldsa;
  float* c;
  int64_t ldc;
};

// 16 packed bytes -> 32 nibbles in panel order: low nibbles (even elements), then high nibbles.
inline __m256i split_nibbles(const uint8_t* p) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i m = _mm_set1_epi8(0x0F);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(b, 4), m), _mm_and_si128(b, m));
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
    const __m256i q = _mm256_set1_epi64x(static_cast<long long>(load_le64(p)));
    const __m256i lo =
        _mm256_and_si256(_mm256_srlv_epi64(q, _mm256_setr_epi64x(0, 2, 4, 6)), _mm256_set1_epi8(3));
    // High plane: bit i of the 32-bit word is element i's bit 2. Byte i/8 goes to lane i, then a
    // per-lane bit test gives 0xFF where the bit is set.
    uint32_t h32;
    std::memcpy(&h32, p + 8, 4);
    const __m256i sel = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,  //
                                         2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit =
        _mm256_setr_epi8(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16,
                         32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128);
    const __m256i h = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(h32)), sel);
    const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(h, bit), bit);
    return _mm256_or_si256(lo, _mm256_and_si256(set, _mm256_set1_epi8(4)));
  }
  static uint64_t load_le64(const uint8_t* p) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    return v;
  }
};

template <typename Dec>
struct QTile : QTileArgs {
  // The signed values of block b of weight row `row` (zero point subtracted for int4/int3).
  inline __m256i values(const uint8_t* row, int64_t b, __m256i zero) const {
    const int64_t off = b * Dec::kBytes;
    __m256i c;
    if (off + Dec::kBytes <= w.row_bytes) {
      c = Dec::codes(row + off);
    } else {
      alignas(16) uint8_t buf[Dec::kBytes] = {};
      std::memcpy(buf, row + off, static_cast<size_t>(w.row_bytes - off));
      c = Dec::codes(buf);
    }
    if constexpr (Dec::kZeroPoint) c = _mm256_sub_epi8(c, zero);
    return c;
  }

  template <int MR, int NR>
  inline void run(int64_t m, int64_t n) const {
    const __m256i ones = _mm256_set1_epi16(1);
    const int64_t nblocks = qk::grouped::blocks_per_row(w.K);
    __m256 acc[MR][NR];
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_ps();
    const uint8_t* rows = w.packed + n * w.row_bytes;
    for (int64_t g = 0; g < w.groups; ++g) {
      __m256i zero[NR];
      for (int j = 0; j < NR; ++j)
        zero[j] = _mm256_set1_epi8(
            static_cast<char>(w.zeros != nullptr ? w.zeros[(n + j) * w.groups + g] : w.zero));
      __m256i isum[MR][NR];
      for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NR; ++j) isum[i][j] = _mm256_setzero_si256();
      const int64_t b1 = std::min(nblocks, (g + 1) * w.group_blocks);
      for (int64_t b = g * w.group_blocks; b < b1; ++b) {
        __m256i v[NR];
        for (int j = 0; j < NR; ++j) {
          // Rows two tiles ahead, one prefetch per 64-byte line (see linear_int8_avx2.cpp).
          if (m == 0 && (b * Dec::kBytes) % 64 < Dec::kBytes)
            qk::cpu::prefetch_strip<MR>(rows + (2 * NR + j) * w.row_bytes + b * Dec::kBytes);
          v[j] = values(rows + j * w.row_bytes, b, zero[j]);
        }
        for (int i = 0; i < MR; ++i) {
          const __m256i av =
              _mm256_load_si256(reinterpret_cast<const __m256i*>(a + (m + i) * lda + b * 32));
          for (int j = 0; j < NR; ++j) {
            const __m256i p =
                _mm256_maddubs_epi16(_mm256_abs_epi8(v[j]), _mm256_sign_epi8(av, v[j]));
            isum[i][j] = _mm256_add_epi32(isum[i][j], _mm256_madd_epi16(p, ones));
          }
        }
      }
      for (int i = 0; i < MR; ++i) {
        const __m256 s = _mm256_set1_ps(sa[(m + i) * ldsa + g]);
        for (int j = 0; j < NR; ++j) {
          const __m256 d = _mm256_mul_ps(s, _mm256_set1_ps(w.scales[(n + j) * w.groups + g]));
          acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[i][j]), d, acc[i][j]);
        }
      }
    }
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) c[(m + i) * ldc + n + j] = hsum_ps(acc[i][j]);
  }
};

template <typename Dec, int GemmMR, int GemmNR>
void gemm_q(const qk::QWeights& w, const int8_t* a, int64_t lda, const float* sa, int64_t ldsa,
            float* c, int64_t ldc, int64_t M, int64_t N) {
  const QTile<Dec> tile{{w, a, lda, sa, ldsa, c, ldc}};
  if (M == 1)
    qk::cpu::for_each_tile<1, 4>(M, N, tile);
  else
    qk::cpu::for_each_tile<GemmMR, GemmNR>(M, N, tile);
}
