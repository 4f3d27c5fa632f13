// nf4 format: bitsandbytes' NormalFloat4 codes with one fp32 absmax per block along K, two codes
// per byte. Spec: docs/formats.md#nf4. Mirrored in python/qkernels/formats/nf4.py.
//
//   packed  uint8 [N, K/2]      byte j of a row: element 2j in bits 0..3, element 2j+1 in bits 4..7
//   absmax  fp32  [N, blocks]   w = kTable[code] * absmax   (blocks of 32, 64, 128 or 256)
//
// The nibble order and the code packing are those of int4 (formats/int4.h).
#pragma once

#include <cstdint>

#include "formats/hd.h"
#include "formats/int4.h"

namespace qk::nf4 {

inline constexpr int kCodes = 16;

// bitsandbytes' NormalFloat4 values: quantiles of N(0, 1) scaled to [-1, 1], with an exact 0.
inline constexpr float kTable[kCodes] = {-1.0f,        -0.6961928f,  -0.52507305f,  -0.39491749f,
                                         -0.28444138f, -0.18477343f, -0.091050036f, 0.0f,
                                         0.0795803f,   0.1609302f,   0.24611230f,   0.33791524f,
                                         0.44070983f,  0.562617f,    0.72295684f,   1.0f};

// The integer kernels multiply int8 activations by round(127 * kTable[code]) and scale by
// absmax / 127: the table rounded to 1/127 of the block's absmax (docs/formats.md#nf4 gives the
// accuracy this costs).
inline constexpr int8_t kTableInt8[kCodes] = {-127, -88, -67, -50, -36, -23, -12, 0,
                                              10,   20,  31,  43,  56,  71,  92,  127};
inline constexpr float kInt8Scale = 127.0f;

constexpr bool table_int8_matches() {
  for (int c = 0; c < kCodes; ++c) {
    const float v = kTable[c] * kInt8Scale;
    const int r = static_cast<int>(v < 0 ? v - 0.5f : v + 0.5f);  // no ties occur in this table
    if (r != kTableInt8[c]) return false;
  }
  return true;
}
static_assert(table_int8_matches(), "kTableInt8 is round(127 * kTable)");

QK_HD inline constexpr bool valid_block_size(int64_t b) {
  return b == 32 || b == 64 || b == 128 || b == 256;
}

using int4::get_code;
using int4::panel_source;
using int4::row_bytes;
using int4::set_code;

}  // namespace qk::nf4
