// int3 format: 3-bit codes, group-wise scales (and integer zero points) along K, stored as 2+1
// bit planes: 32 codes in 12 bytes. Spec: docs/formats.md#int3. Mirrored in
// python/qkernels/formats/int3.py.
//
//   packed  uint8 [N, ceil(K/32) * 12]   per 32-block: bytes 0..7 low-bit pairs, bytes 8..11 high
//   bits scales  fp32  [N, groups]            w = scale * (code - zero) zeros   uint8 [N, groups]
//   in [0, 7]; absent for symmetric (zero = 4)
//
// Block layout: byte j (0..7) holds bits 0..1 of elements j, j+8, j+16, j+24 at bit offsets
// 0, 2, 4, 6; bytes 8..11, read as a little-endian uint32, hold bit 2 of element i at bit i. The
// last block of a row is padded with code 0.
#pragma once

#include <cstdint>

#include "formats/grouped.h"
#include "formats/hd.h"

namespace qk::int3 {

inline constexpr int kBits = 3;
inline constexpr int kCodes = 1 << kBits;
inline constexpr int kSymZero = 4;
inline constexpr int64_t kBlockBytes = 12;
static_assert(kBlockBytes * 8 == grouped::kBlock * kBits, "2+1 planes are exactly 3 bits a code");

QK_HD inline constexpr int64_t row_bytes(int64_t K) {
  return grouped::blocks_per_row(K) * kBlockBytes;
}

QK_HD inline uint8_t get_code(const uint8_t* row, int64_t k) {
  const uint8_t* blk = row + (k / 32) * kBlockBytes;
  const int i = static_cast<int>(k % 32);
  const int lo = (blk[i % 8] >> (2 * (i / 8))) & 3;
  const int hi = (blk[8 + i / 8] >> (i % 8)) & 1;
  return static_cast<uint8_t>(lo | (hi << 2));
}
QK_HD inline void set_code(uint8_t* row, int64_t k, uint8_t code) {
  uint8_t* blk = row + (k / 32) * kBlockBytes;
  const int i = static_cast<int>(k % 32);
  const int lo_shift = 2 * (i / 8), hi_shift = i % 8;
  blk[i % 8] = static_cast<uint8_t>((blk[i % 8] & ~(3 << lo_shift)) | ((code & 3) << lo_shift));
  blk[8 + i / 8] =
      static_cast<uint8_t>((blk[8 + i / 8] & ~(1 << hi_shift)) | (((code >> 2) & 1) << hi_shift));
}

// The decoders produce a block in element order.
QK_HD inline constexpr int panel_source(int p) { return p; }

}  // namespace qk::int3
