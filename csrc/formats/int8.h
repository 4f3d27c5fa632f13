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

// scale = absmax / 127, or 1 when that is 0: an all-zero row (any positive scale reproduces zeros
// exactly) or one so tiny (absmax < 63.5 * 2^-149, about 8.9e-44) that the division underflows.
QK_HD inline float scale_from_absmax(float absmax) {
  const float s = absmax / static_cast<float>(kQMax);
  return s > 0.0f ? s : 1.0f;
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
