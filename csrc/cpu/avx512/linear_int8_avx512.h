// Declarations shared between the AVX-512 translation units.
#pragma once

#include <cstdint>

namespace qk {
// gemm_s8 with AVX-512 VNNI (vpdpbusd); defined in gemm_s8_avx512vnni.cpp, which alone is compiled
// with -mavx512vnni and is called only when cpuid reports VNNI.
void gemm_s8_avx512vnni(const int8_t* a, int64_t lda, const int8_t* b, int64_t ldb, int32_t* c,
                        int64_t ldc, int64_t M, int64_t N, int64_t K);
// W8A16's panel GEMM (gemm_f32_panel_avx512.cpp), AVX-512F/BW/VL.
void gemm_f32_s8_panel_avx512(const float* x, int64_t ldx, const int8_t* w, int64_t ldw, float* c,
                              int64_t ldc, int64_t M, int64_t N, int64_t K);
}  // namespace qk
