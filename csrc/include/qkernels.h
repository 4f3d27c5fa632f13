/* qkernels C ABI.
 *
 * Plain C11. Every function validates its arguments and returns a qk_status; on failure the
 * calling thread's message is available from qk_last_error() until that thread's next call.
 * No function aborts, throws or touches memory outside the ranges described by its arguments.
 *
 * Matrices are row-major. A "leading dimension" (ld*) is the distance in elements between two
 * consecutive rows; it must be at least the row length. The library owns a thread pool; its
 * size defaults to the number of hardware threads and is set with qk_set_num_threads().
 */
#ifndef QKERNELS_H_
#define QKERNELS_H_

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define QK_API __declspec(dllexport)
#else
#define QK_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define QK_VERSION_MAJOR 0
#define QK_VERSION_MINOR 1
#define QK_VERSION_PATCH 0

/* In C++ (the library's side) the enums below have int as their fixed underlying type, so any int
 * that a C caller passes is a valid value for the argument checks to reject. Without it, a value
 * outside the enumerators' range (e.g. (qk_dtype)-1) is undefined behaviour in C++ before any
 * check runs (UBSan aborts on it). Same size and calling convention as the C enum. */
#ifdef __cplusplus
#define QK_ENUM_INT : int
#else
#define QK_ENUM_INT
#endif

typedef enum qk_status QK_ENUM_INT {
  QK_OK = 0,
  QK_ERR_INVALID_ARGUMENT = 1, /* a NULL pointer, a negative size, a too-small stride, ... */
  QK_ERR_UNSUPPORTED = 2,      /* e.g. forcing an ISA this CPU cannot run */
  QK_ERR_OUT_OF_MEMORY = 3,
  QK_ERR_INTERNAL = 4
} qk_status;

/* Instruction-set paths of the CPU kernels. */
typedef enum qk_isa QK_ENUM_INT {
  QK_ISA_GENERIC = 0, /* scalar C++; the ground truth every other path is tested against */
  QK_ISA_AVX2 = 1,    /* AVX2 + FMA */
  QK_ISA_AVX512 = 2,  /* AVX-512 F/BW/VL, using VNNI when the CPU has it */
  QK_ISA_NEON = 3,    /* AArch64 Advanced SIMD */
  QK_ISA_COUNT = 4
} qk_isa;

/* Element types of float activations and outputs. */
typedef enum qk_dtype QK_ENUM_INT { QK_F32 = 0, QK_BF16 = 1, QK_F16 = 2 } qk_dtype;

/* ---- library state ---------------------------------------------------------------------- */

QK_API const char* qk_version(void);            /* "MAJOR.MINOR.PATCH" */
QK_API const char* qk_last_error(void);         /* this thread's last message, "" if none */
QK_API const char* qk_status_name(qk_status s); /* "QK_OK", ... */

QK_API const char* qk_isa_name(qk_isa isa); /* "generic", "avx2", ...; NULL if out of range */
QK_API int qk_isa_available(qk_isa isa);    /* 1 if compiled in and this CPU can run it */
QK_API qk_isa qk_isa_active(void);          /* the path used by the kernels */
/* The active path's integer engine for batches, in words (e.g. "vpdpbusd (AVX-512 VNNI): panel
 * GEMM from M >= 8 (int8: 12)"): which instructions and kernel shape a bench table measured. */
QK_API const char* qk_isa_engine(void);
/* Forces a path. QK_ERR_UNSUPPORTED if this CPU or build cannot run it. The initial path is the
 * best available one, or the one named by the environment variable QKERNELS_ISA. */
QK_API qk_status qk_set_isa(qk_isa isa);

QK_API qk_status qk_set_num_threads(int n); /* n >= 1 */

/* Runs the kernels' parallel work on the host's threads instead of the library's own pool.
 * runner(work, arg, n_threads, ctx) must call work(arg) on up to n_threads threads at once (the
 * calling one may be among them) and return when every call has returned; any number of calls,
 * even none, gives the same result, because the library finishes what is left on the calling
 * thread. An engine with its own pool passes it here, so the two never compete for the cores;
 * with OpenMP the runner is one call, GOMP_parallel(work, arg, n_threads, 0) (qkernels' Python
 * layer passes the OpenMP runtime torch runs on). NULL restores the library's own pool. A forked
 * child always runs its work on the calling thread. */
typedef void (*qk_parallel_runner)(void (*work)(void*), void* arg, int n_threads, void* ctx);
QK_API qk_status qk_set_parallel_runner(qk_parallel_runner runner, void* ctx);
QK_API int qk_get_num_threads(void);

/* ---- int8 ------------------------------------------------------------------------------- */
/* Symmetric int8 with one fp32 scale per row:
 *   scale = max(max|row| / 127, FLT_MIN), or 1 for an all-zero row; q = round_half_even(v / scale)
 *   in [-127, 127]. The FLT_MIN floor keeps every code within half a step of its value for tiny
 *   (subnormal) rows, whose values below FLT_MIN / 2 become 0.
 * The same rule quantizes weights (per output channel, offline) and activations (per token, inside
 * qk_linear_int8_w8a8). Non-finite input is rejected by qk_quantize_int8. */

/* w: [rows, cols] floats (dtype w_dtype, leading dimension ldw). q: [rows, cols] int8, dense.
 * scales: [rows] fp32. Returns QK_ERR_INVALID_ARGUMENT naming the first row holding NaN/Inf. */
QK_API qk_status qk_quantize_int8(const void* w, qk_dtype w_dtype, int64_t rows, int64_t cols,
                                  int64_t ldw, int8_t* q, float* scales);

/* Exact integer matrix product: c[M, N] (int32, ldc) = a[M, K] (int8, lda) x b[N, K]^T (int8, ldb).
 * Inputs must lie in [-127, 127] (the range qk_quantize_int8 produces); -128 is rejected because
 * the SIMD paths multiply magnitudes. K must be <= 2^17 so that int32 cannot overflow. */
QK_API qk_status qk_matmul_int8(const int8_t* a, int64_t lda, const int8_t* b, int64_t ldb,
                                int32_t* c, int64_t ldc, int64_t M, int64_t N, int64_t K);

/* W8A8 dynamic: y[M, N] = dequant(quant(x)) x dequant(w)^T + bias.
 *   x:       [M, K] activations, dtype x_dtype, leading dimension ldx
 *   w:       [N, K] int8 weights in [-127, 127], dense. The range is a precondition, not checked
 * per call (a scan would double the memory traffic at batch 1): -128 gives wrong values, never an
 * out-of-bounds access. qk_quantize_int8 never produces it. w_scale: [N] fp32 per-output-channel
 * scales (> 0) bias:    [N] fp32 or NULL y:       [M, N] outputs, dtype x_dtype, leading dimension
 * ldy Each row of x is quantized per token with the rule above; the int32 accumulation is exact and
 * the epilogue is y = float(acc) * (x_scale[m] * w_scale[n]) + bias[n] in fp32, without FMA.
 * A row of x holding NaN or Inf gives a row of NaN. K <= 2^17. */
QK_API qk_status qk_linear_int8_w8a8(const void* x, qk_dtype x_dtype, int64_t ldx, const int8_t* w,
                                     const float* w_scale, const float* bias, void* y, int64_t ldy,
                                     int64_t M, int64_t N, int64_t K);

/* W8A16: y[M, N] = x x (w * w_scale)^T + bias with float activations; the weights are converted to
 * fp32 in registers (never materialised) and accumulated in fp32. Same arguments as above;
 * NaN/Inf propagate as IEEE arithmetic does. */
QK_API qk_status qk_linear_int8_w8a16(const void* x, qk_dtype x_dtype, int64_t ldx, const int8_t* w,
                                      const float* w_scale, const float* bias, void* y, int64_t ldy,
                                      int64_t M, int64_t N, int64_t K);

/* ---- group-wise sub-byte formats: int4, int3, nf4 --------------------------------------- */
/* Weights packed as docs/formats.md specifies, with one scale per group of group_size weights
 * along K (group_size: a positive multiple of 32, or -1 for the whole row; the last group of a row
 * may be partial):
 *   int4: packed [N, K/2] bytes (K even), value = scales[n, g] * (code - zero[n, g])
 *   int3: packed [N, ceil(K/32) * 12] bytes, the same with 3-bit codes
 *   zeros: [N, groups] uint8 zero points (< 16 for int4, < 8 for int3), or NULL for symmetric
 *          (zero 8 for int4, 4 for int3); scales: [N, groups] fp32, groups = ceil(K / group_size)
 *   nf4: packed [N, K/2] bytes (K even), value = NF4[code] * absmax[n, b], blocks of block_size
 *        (32, 64, 128 or 256) along K, absmax [N, ceil(K / block_size)] fp32
 * y[M, N] = xq x w^T + bias, where xq is x quantized to int8 per token and per group (one scale
 * per group_size values, the int8 rule above) and each group's integer dot product is exact; nf4
 * multiplies by round(127 * NF4[code]) / 127. x and y have dtype x_dtype; bias: [N] fp32 or NULL.
 * K <= 2^17. A row of x holding NaN or Inf gives a row of NaN. */
QK_API qk_status qk_linear_int4(const void* x, qk_dtype x_dtype, int64_t ldx, const uint8_t* packed,
                                const float* scales, const uint8_t* zeros, int64_t group_size,
                                const float* bias, void* y, int64_t ldy, int64_t M, int64_t N,
                                int64_t K);
QK_API qk_status qk_linear_int3(const void* x, qk_dtype x_dtype, int64_t ldx, const uint8_t* packed,
                                const float* scales, const uint8_t* zeros, int64_t group_size,
                                const float* bias, void* y, int64_t ldy, int64_t M, int64_t N,
                                int64_t K);
QK_API qk_status qk_linear_nf4(const void* x, qk_dtype x_dtype, int64_t ldx, const uint8_t* packed,
                               const float* absmax, int64_t block_size, const float* bias, void* y,
                               int64_t ldy, int64_t M, int64_t N, int64_t K);

/* ---- vq: additive codebooks over groups of 8 weights (AQLM style) -------------------------- */
/* codes: [N, K/8, num_codebooks] indices, uint8 when codebook_bits is 8, uint16 when 16, dense;
 * codebooks: [num_codebooks, 2^codebook_bits, 8] fp32; scales: [N] fp32; K a multiple of 8.
 * w[n, 8j + i] = scales[n] * sum_c codebooks[c, codes[n, j, c], i]. y[M, N] = x x w^T + bias in
 * fp32 with float activations (x, y: dtype x_dtype; bias: [N] fp32 or NULL); the weights are
 * decoded in registers, never materialised. Configurations: 1 or 2 codebooks of 8 or 16 bits. */
QK_API qk_status qk_linear_vq(const void* x, qk_dtype x_dtype, int64_t ldx, const void* codes,
                              int num_codebooks, int codebook_bits, const float* codebooks,
                              const float* scales, const float* bias, void* y, int64_t ldy,
                              int64_t M, int64_t N, int64_t K);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* QKERNELS_H_ */
