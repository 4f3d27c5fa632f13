// Internal entry points behind the C ABI, with an explicit thread count. The pybind11 module calls
// these directly (passing torch.get_num_threads()); qkernels.h wraps them with the default count.
#pragma once

#include <cstdint>

#include "kernels.h"
#include "qkernels.h"

namespace qk {

qk_status quantize_int8(const void* w, qk_dtype w_dtype, int64_t rows, int64_t cols, int64_t ldw,
                        int8_t* q, float* scales, int threads);
qk_status matmul_int8(const int8_t* a, int64_t lda, const int8_t* b, int64_t ldb, int32_t* c,
                      int64_t ldc, int64_t M, int64_t N, int64_t K, int threads);
qk_status linear_int8_w8a8(const void* x, qk_dtype x_dtype, int64_t ldx, const int8_t* w,
                           const float* w_scale, const float* bias, void* y, int64_t ldy, int64_t M,
                           int64_t N, int64_t K, int threads);
qk_status linear_int8_w8a16(const void* x, qk_dtype x_dtype, int64_t ldx, const int8_t* w,
                            const float* w_scale, const float* bias, void* y, int64_t ldy,
                            int64_t M, int64_t N, int64_t K, int threads);

// The group-wise sub-byte linears (csrc/core/linear_q.cpp). zeros is NULL for symmetric int4/int3
// and for nf4; group_size is nf4's block size.
qk_status linear_q(QFormat f, const void* x, qk_dtype x_dtype, int64_t ldx, const uint8_t* packed,
                   const float* scales, const uint8_t* zeros, int64_t group_size, const float* bias,
                   void* y, int64_t ldy, int64_t M, int64_t N, int64_t K, int threads);

// The codebook linear (csrc/core/linear_vq.cpp). codes: uint8 (B = 8) or uint16 (B = 16).
qk_status linear_vq(const void* x, qk_dtype x_dtype, int64_t ldx, const void* codes,
                    int num_codebooks, int codebook_bits, const float* codebooks,
                    const float* scales, const float* bias, void* y, int64_t ldy, int64_t M,
                    int64_t N, int64_t K, int threads);

}  // namespace qk
