/* Scalar oracles for test_capi.c, written independently of the library's code: the bf16/f16
 * conversions (round to nearest even), element access for each qk_dtype, and the int8 quantization
 * rule of qkernels.h. */
#ifndef QKERNELS_TESTS_C_REFERENCE_H_
#define QKERNELS_TESTS_C_REFERENCE_H_

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "qkernels.h"

/* fp32 -> a binary format with `mbits` stored mantissa bits and `ebits` exponent bits (bf16: 7, 8;
 * f16: 10, 5), rounding to nearest even through exact double arithmetic, so the check does not
 * share the library's bit manipulation. */
static inline uint16_t encode_float(float f, int mbits, int ebits) {
  const int bias = (1 << (ebits - 1)) - 1, emax = (1 << ebits) - 1;
  const uint16_t sign = signbit(f) ? (uint16_t)(1u << (mbits + ebits)) : 0;
  if (isnan(f)) return sign | (uint16_t)(emax << mbits) | (uint16_t)(1u << (mbits - 1));
  const double a = fabs((double)f);
  if (a == 0.0) return sign;
  if (isinf(a)) return sign | (uint16_t)(emax << mbits);
  int e;
  frexp(a, &e);                            /* a in [2^(e-1), 2^e) */
  e = e - 1 < 1 - bias ? 1 - bias : e - 1; /* subnormals share the smallest normal's quantum */
  const double m = nearbyint(ldexp(a, mbits - e)); /* in units of 2^(e - mbits) */
  /* Adding m (not m - 2^mbits) to the exponent field minus one carries a mantissa that rounded up
   * to 2^(mbits+1) into the exponent, and leaves subnormals (m < 2^mbits) with a zero field. */
  const double bits = ldexp(e + bias - 1, mbits) + m;
  return sign | (uint16_t)(bits >= ldexp(emax, mbits) ? ldexp(emax, mbits) : bits);
}

static inline float decode_float(uint16_t h, int mbits, int ebits) {
  const int bias = (1 << (ebits - 1)) - 1, emax = (1 << ebits) - 1;
  const int field = (h >> mbits) & emax, man = h & ((1 << mbits) - 1);
  double v;
  if (field == emax)
    v = man ? NAN : INFINITY;
  else if (field == 0)
    v = ldexp(man, 1 - bias - mbits);
  else
    v = ldexp(man + (1 << mbits), field - bias - mbits);
  return (float)((h >> (mbits + ebits)) & 1 ? -v : v);
}

static inline const char* dtype_name(qk_dtype d) {
  return d == QK_F32 ? "f32" : d == QK_BF16 ? "bf16" : "f16";
}
static inline size_t dtype_size(qk_dtype d) { return d == QK_F32 ? 4 : 2; }

static inline void put(void* base, qk_dtype d, int64_t i, float v) {
  if (d == QK_F32)
    ((float*)base)[i] = v;
  else
    ((uint16_t*)base)[i] = d == QK_BF16 ? encode_float(v, 7, 8) : encode_float(v, 10, 5);
}
static inline float get(const void* base, qk_dtype d, int64_t i) {
  if (d == QK_F32) return ((const float*)base)[i];
  const uint16_t h = ((const uint16_t*)base)[i];
  return d == QK_BF16 ? decode_float(h, 7, 8) : decode_float(h, 10, 5);
}
/* Bit pattern of element i, widened, for exact comparisons. */
static inline uint32_t bits_of(const void* base, qk_dtype d, int64_t i) {
  uint32_t u = 0;
  if (d == QK_F32)
    memcpy(&u, (const float*)base + i, 4);
  else
    u = ((const uint16_t*)base)[i];
  return u;
}
/* Equal bits, or both NaN (the sign and payload of a NaN are not specified). */
static inline int same(const void* got, const void* want, qk_dtype d, int64_t i) {
  return bits_of(got, d, i) == bits_of(want, d, i) ||
         (isnan(get(got, d, i)) && isnan(get(want, d, i)));
}

/* The quantization rule of qkernels.h for one row of decoded values. Returns the scale, or NaN
 * (with zero codes) for a row holding NaN or Inf. */
static inline float ref_quantize_row(const float* v, int64_t n, int8_t* q) {
  float absmax = 0.0f;
  int finite = 1;
  for (int64_t i = 0; i < n; ++i) {
    finite = finite && isfinite(v[i]);
    if (fabsf(v[i]) > absmax) absmax = fabsf(v[i]);
  }
  for (int64_t i = 0; i < n; ++i) q[i] = 0;
  if (!finite) return NAN;
  /* 1 for an all-zero row; never below FLT_MIN (a subnormal scale loses the half-step bound). */
  const float s = absmax / 127.0f, scale = absmax > 0.0f ? (s > 0x1p-126f ? s : 0x1p-126f) : 1.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float r = nearbyintf(v[i] / scale);
    q[i] = (int8_t)(r > 127.0f ? 127.0f : r < -127.0f ? -127.0f : r);
  }
  return scale;
}

#endif /* QKERNELS_TESTS_C_REFERENCE_H_ */
