// Shared declaration between the two AVX-512 translation units.
#pragma once

#include <cstdint>

namespace qk {
// gemm_s8 with AVX-512 VNNI (vpdpbusd); defined in gemm_s8_avx512vnni.cpp, which alone is compiled
// with -mavx512vnni and is called only when cpuid reports VNNI.
void gemm_s8_avx512vnni(const int8_t* a, int64_t lda, const int8_t* b, int64_t ldb, int32_t* c,
                        int64_t ldc, int64_t M, int64_t N, int64_t K);
}  // namespace qk
