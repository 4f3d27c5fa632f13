// int4 format: 4-bit codes, group-wise scales (and integer zero points) along K, two codes per
// byte. Spec: docs/formats.md#int4. Mirrored in python/qkernels/formats/int4.py.
//
//   packed  uint8 [N, K/2]     byte j of a row: element 2j in bits 0..3, element 2j+1 in bits 4..7
//   scales  fp32  [N, groups]  w = scale * (code - zero)
//   zeros   uint8 [N, groups]  in [0, 15]; absent for symmetric (zero = 8)
#pragma once

#include <cstdint>

#include "formats/grouped.h"
#include "formats/hd.h"

namespace qk::int4 {

inline constexpr int kBits = 4;
inline constexpr int kCodes = 1 << kBits;
inline constexpr int kSymZero = 8;

QK_HD inline constexpr int64_t row_bytes(int64_t K) { return K / 2; }
static_assert(row_bytes(grouped::kBlock) == 16, "a block of 32 codes is one 16-byte vector");

QK_HD inline uint8_t get_code(const uint8_t* row, int64_t k) {
  return static_cast<uint8_t>((row[k / 2] >> (4 * (k & 1))) & 0xF);
}
QK_HD inline void set_code(uint8_t* row, int64_t k, uint8_t code) {
  const int shift = 4 * static_cast<int>(k & 1);
  row[k / 2] = static_cast<uint8_t>((row[k / 2] & ~(0xF << shift)) | ((code & 0xF) << shift));
}

// Kernel order of a 32-block: the low nibbles of its 16 bytes (even elements), then the high
// nibbles (odd elements). The SIMD decoders split a 16-byte load this way with two ANDs and a
// shift; the activation panel is permuted to match (element of panel position p within a block).
QK_HD inline constexpr int panel_source(int p) { return p < 16 ? 2 * p : 2 * (p - 16) + 1; }

}  // namespace qk::int4
