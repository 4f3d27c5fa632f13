// The C ABI (qkernels.h): thin wrappers over the internal entry points with the default thread
// count, plus library state queries.
#include <string>

#include "ops.h"
#include "qkernels.h"
#include "status.h"
#include "threadpool.h"

#define QK_STR2(x) #x
#define QK_STR(x) QK_STR2(x)

extern "C" {

const char* qk_version(void) {
  return QK_STR(QK_VERSION_MAJOR) "." QK_STR(QK_VERSION_MINOR) "." QK_STR(QK_VERSION_PATCH);
}

const char* qk_status_name(qk_status s) {
  switch (s) {
    case QK_OK:
      return "QK_OK";
    case QK_ERR_INVALID_ARGUMENT:
      return "QK_ERR_INVALID_ARGUMENT";
    case QK_ERR_UNSUPPORTED:
      return "QK_ERR_UNSUPPORTED";
    case QK_ERR_OUT_OF_MEMORY:
      return "QK_ERR_OUT_OF_MEMORY";
    case QK_ERR_INTERNAL:
      return "QK_ERR_INTERNAL";
  }
  return "QK_ERR_UNKNOWN";
}

qk_status qk_set_parallel_runner(qk_parallel_runner runner, void* ctx) {
  qk::set_parallel_runner(runner, ctx);
  return qk::ok();
}

qk_status qk_set_num_threads(int n) {
  if (n < 1 || n > 1024)
    return qk::fail(QK_ERR_INVALID_ARGUMENT,
                    "qk_set_num_threads: n: expected 1..1024, got " + std::to_string(n));
  qk::set_default_num_threads(n);
  return qk::ok();
}

int qk_get_num_threads(void) { return qk::default_num_threads(); }

qk_status qk_quantize_int8(const void* w, qk_dtype w_dtype, int64_t rows, int64_t cols, int64_t ldw,
                           int8_t* q, float* scales) {
  return qk::quantize_int8(w, w_dtype, rows, cols, ldw, q, scales, qk::default_num_threads());
}

qk_status qk_matmul_int8(const int8_t* a, int64_t lda, const int8_t* b, int64_t ldb, int32_t* c,
                         int64_t ldc, int64_t M, int64_t N, int64_t K) {
  return qk::matmul_int8(a, lda, b, ldb, c, ldc, M, N, K, qk::default_num_threads());
}

qk_status qk_linear_int8_w8a8(const void* x, qk_dtype x_dtype, int64_t ldx, const int8_t* w,
                              const float* w_scale, const float* bias, void* y, int64_t ldy,
                              int64_t M, int64_t N, int64_t K) {
  return qk::linear_int8_w8a8(x, x_dtype, ldx, w, w_scale, bias, y, ldy, M, N, K,
                              qk::default_num_threads());
}

qk_status qk_linear_int8_w8a16(const void* x, qk_dtype x_dtype, int64_t ldx, const int8_t* w,
                               const float* w_scale, const float* bias, void* y, int64_t ldy,
                               int64_t M, int64_t N, int64_t K) {
  return qk::linear_int8_w8a16(x, x_dtype, ldx, w, w_scale, bias, y, ldy, M, N, K,
                               qk::default_num_threads());
}

qk_status qk_linear_int4(const void* x, qk_dtype x_dtype, int64_t ldx, const uint8_t* packed,
                         const float* scales, const uint8_t* zeros, int64_t group_size,
                         const float* bias, void* y, int64_t ldy, int64_t M, int64_t N, int64_t K) {
  return qk::linear_q(qk::kQInt4, x, x_dtype, ldx, packed, scales, zeros, group_size, bias, y, ldy,
                      M, N, K, qk::default_num_threads());
}

qk_status qk_linear_int3(const void* x, qk_dtype x_dtype, int64_t ldx, const uint8_t* packed,
                         const float* scales, const uint8_t* zeros, int64_t group_size,
                         const float* bias, void* y, int64_t ldy, int64_t M, int64_t N, int64_t K) {
  return qk::linear_q(qk::kQInt3, x, x_dtype, ldx, packed, scales, zeros, group_size, bias, y, ldy,
                      M, N, K, qk::default_num_threads());
}

qk_status qk_linear_nf4(const void* x, qk_dtype x_dtype, int64_t ldx, const uint8_t* packed,
                        const float* absmax, int64_t block_size, const float* bias, void* y,
                        int64_t ldy, int64_t M, int64_t N, int64_t K) {
  return qk::linear_q(qk::kQNF4, x, x_dtype, ldx, packed, absmax, nullptr, block_size, bias, y, ldy,
                      M, N, K, qk::default_num_threads());
}

qk_status qk_linear_vq(const void* x, qk_dtype x_dtype, int64_t ldx, const void* codes,
                       int num_codebooks, int codebook_bits, const float* codebooks,
                       const float* scales, const float* bias, void* y, int64_t ldy, int64_t M,
                       int64_t N, int64_t K) {
  return qk::linear_vq(x, x_dtype, ldx, codes, num_codebooks, codebook_bits, codebooks, scales,
                       bias, y, ldy, M, N, K, qk::default_num_threads());
}

}  // extern "C"
