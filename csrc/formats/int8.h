// int8 format: symmetric, one fp32 scale per row (weights: per output channel; activations: per
// token). Spec: docs/formats.md#int8. Mirrored in python/qkernels/formats/int8.py.
#pragma once

#include <cmath>
#include <cstdint>

#include "formats/hd.h"

namespace qk::int8 {

inline constexpr int kBits = 8;
// The code range is symmetric: -128 is never produced, so |q| fits in 7 bits and the SIMD paths
// can multiply magnitudes (maddubs/sign trick) without saturating int16 pair sums.
inline constexpr int kQMax = 127;
inline constexpr int kQMin = -kQMax;
// Largest K for which K * 127 * 127 fits in int32 with room to spare.
inline constexpr int64_t kMaxK = int64_t{1} << 17;
static_assert(kMaxK * kQMax * kQMax < (int64_t{1} << 31), "int32 accumulator must not overflow");
static_assert(sizeof(int8_t) == 1, "one weight per byte");

// The smallest scale: FLT_MIN (2^-126), the smallest normal float.
inline constexpr float kMinScale = 0x1p-126f;

// scale = absmax / 127, raised to kMinScale, or 1 for an all-zero row (any positive scale
// reproduces zeros exactly). Why the floor: below FLT_MIN the quotient is subnormal and keeps
// only a few significant bits, so 127 * scale could miss absmax by more than half a step. With a
// normal scale every code is within half a step of its value; a row with absmax < 127 * FLT_MIN
// (about 1.5e-36) is coded in steps of FLT_MIN and values below FLT_MIN / 2 become 0.
QK_HD inline float scale_from_absmax(float absmax) {
  if (!(absmax > 0.0f)) return 1.0f;
  const float s = absmax / static_cast<float>(kQMax);
  return s > kMinScale ? s : kMinScale;
}

// q = round_half_even(v / scale), clamped to [-127, 127]. Division (not a reciprocal multiply) so
// that every path and the PyTorch oracle round identically. The clamp only matters for values
// rounded up from absmax / scale = 127 + ulp.
QK_HD inline int8_t quantize_value(float v, float scale) {
  float r = std::nearbyint(v / scale);
  r = r > kQMax ? kQMax : (r < kQMin ? kQMin : r);
  return static_cast<int8_t>(r);
}

}  // namespace qk::int8
