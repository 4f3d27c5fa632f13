// Drivers of the int8 ops: argument checks, activation staging (dtype conversion, per-token
// quantization into a zero-padded panel), thread split, and the fp32 epilogues. The arithmetic
// inner loops live in the per-ISA kernels (csrc/cpu/<isa>/).
#include <cmath>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "driver.h"
#include "formats/grouped.h"
#include "formats/int8.h"
#include "kernels.h"
#include "ops.h"
#include "stage.h"
#include "status.h"
#include "threadpool.h"
#include "tiling.h"
#include "validate.h"

namespace qk {
namespace {

// Checks shared by both linear ops.
qk_status check_linear(const char* fn, const void* x, qk_dtype x_dtype, int64_t ldx,
                       const int8_t* w, const float* w_scale, void* y, int64_t ldy, int64_t M,
                       int64_t N, int64_t K) {
  QK_TRY(check_gemm_sizes(fn, M, N, K));
  QK_TRY(check_dtype(fn, "x_dtype", x_dtype));
  QK_TRY(check_matrix(fn, "x", x, M, K, ldx));
  QK_TRY(check_matrix(fn, "w", w, N, K, std::max<int64_t>(K, 1)));
  QK_TRY(check_matrix(fn, "y", y, M, N, ldy));
  if (w_scale == nullptr && N > 0)
    return fail(QK_ERR_INVALID_ARGUMENT, std::string(fn) +
                                             ": w_scale: expected a non-NULL pointer to " +
                                             std::to_string(N) + " floats, got NULL");
  return QK_OK;
}

// Quantizes rows [r0, r1) of x into the panel; rows holding NaN/Inf get a NaN scale.
void quantize_rows(const KernelTable& k, const void* x, qk_dtype d, int64_t ldx, int64_t K,
                   int64_t r0, int64_t r1, int8_t* panel, int64_t ldp, float* scales) {
  std::vector<float> buf(d == QK_F32 ? 0 : static_cast<size_t>(K));
  for (int64_t r = r0; r < r1; ++r) {
    const float* row = static_cast<const float*>(row_ptr(x, d, ldx, r));
    if (d != QK_F32) {
      load_row_f32(row_ptr(x, d, ldx, r), d, K, buf.data());
      row = buf.data();
    }
    scales[r] = k.quantize_row_int8(row, K, panel + r * ldp);
  }
}

// W8A8 through the panel GEMM (kernels.h: GemmPanelFn): the int8 rows are one group of K,
// scaled by x_scale and w_scale; the result is bit-identical to the dot-product path. asum: the
// sum of each panel row.
qk_status w8a8_panel(const KernelTable& k, const int8_t* panel, int64_t ldp, const float* x_scale,
                     const float* asum, const int8_t* w, const float* w_scale, const float* bias,
                     void* y, qk_dtype x_dtype, int64_t ldy, int64_t M, int64_t N, int64_t K,
                     int nt) {
  const int64_t blocks = std::max<int64_t>(grouped::blocks_per_row(K), 1);
  const QWeights qw{reinterpret_cast<const uint8_t*>(w), K, w_scale, nullptr, 0, 1, blocks, K};
  const Tiling t = make_panel_tiling(M, N, nt);
  parallel_for(t.tasks(), nt, [&](int64_t task) {
    const int64_t m0 = t.m0(task), n0 = t.n0(task);
    const int64_t mb = std::min(t.mb, M - m0), nb = std::min(t.nb, N - n0);
    QWeights wt = qw;
    wt.packed += n0 * K;
    wt.scales += n0;
    auto out = aligned_buffer<float>(mb * nb);  // written whole by the kernel
    k.gemm_panel[kPanelS8](wt, panel + m0 * ldp, ldp, x_scale + m0, asum + m0, 1, out.get(), nb, mb,
                           nb);
    store_block(out.get(), mb, nb, nullptr, bias, y, x_dtype, ldy, m0, n0);
  });
  return ok();
}

}  // namespace

qk_status quantize_int8(const void* w, qk_dtype w_dtype, int64_t rows, int64_t cols, int64_t ldw,
                        int8_t* q, float* scales, int threads) {
  const char* fn = "qk_quantize_int8";
  QK_TRY(check_runtime(fn));
  QK_TRY(check_size(fn, "rows", rows));
  QK_TRY(check_size(fn, "cols", cols));
  QK_TRY(check_dtype(fn, "w_dtype", w_dtype));
  QK_TRY(check_matrix(fn, "w", w, rows, cols, ldw));
  QK_TRY(check_matrix(fn, "q", q, rows, cols, std::max<int64_t>(cols, 1)));
  QK_TRY(check_matrix(fn, "scales", scales, rows, 1, 1));
  return guarded(fn, [&]() -> qk_status {
    const KernelTable& k = active_kernels();
    const int64_t chunk = 64;
    parallel_for((rows + chunk - 1) / chunk, threads_for(rows, cols, 1, threads), [&](int64_t t) {
      quantize_rows(k, w, w_dtype, ldw, cols, t * chunk, std::min(rows, (t + 1) * chunk), q, cols,
                    scales);
    });
    for (int64_t r = 0; r < rows; ++r)
      if (std::isnan(scales[r]))
        return fail(QK_ERR_INVALID_ARGUMENT, std::string(fn) +
                                                 ": w: expected finite values, got "
                                                 "NaN or Inf in row " +
                                                 std::to_string(r));
    return ok();
  });
}

qk_status matmul_int8(const int8_t* a, int64_t lda, const int8_t* b, int64_t ldb, int32_t* c,
                      int64_t ldc, int64_t M, int64_t N, int64_t K, int threads) {
  const char* fn = "qk_matmul_int8";
  QK_TRY(check_gemm_sizes(fn, M, N, K));
  QK_TRY(check_matrix(fn, "a", a, M, K, lda));
  QK_TRY(check_matrix(fn, "b", b, N, K, ldb));
  QK_TRY(check_matrix(fn, "c", c, M, N, ldc));
  // -128 has no positive counterpart in int8, which the SIMD magnitude trick relies on.
  auto find_min = [&](const int8_t* p, int64_t rows, int64_t ld) -> int64_t {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < K; ++i)
        if (p[r * ld + i] == -128) return r;
    return -1;
  };
  for (auto [p, rows, ld, name] : {std::tuple{a, M, lda, "a"}, std::tuple{b, N, ldb, "b"}})
    if (int64_t r = find_min(p, rows, ld); r >= 0)
      return fail(QK_ERR_INVALID_ARGUMENT,
                  std::string(fn) + ": " + name +
                      ": expected values in [-127, 127], got -128 in row " + std::to_string(r));
  return guarded(fn, [&]() -> qk_status {
    if (M == 0 || N == 0) return ok();
    const KernelTable& k = active_kernels();
    const int64_t ldp = round_up(std::max<int64_t>(K, 1), kPanelAlign);
    auto panel = aligned_buffer<int8_t>(M * ldp);
    for (int64_t r = 0; r < M; ++r) {
      int8_t* dst = panel.get() + r * ldp;
      for (int64_t i = 0; i < ldp; ++i) dst[i] = i < K ? a[r * lda + i] : 0;
    }
    const Tiling t = make_tiling(M, N, K, ldp, threads);
    parallel_for(t.tasks(), threads_for(M, N, K, threads), [&](int64_t task) {
      const int64_t m0 = t.m0(task), n0 = t.n0(task);
      k.gemm_s8(panel.get() + m0 * ldp, ldp, b + n0 * ldb, ldb, c + m0 * ldc + n0, ldc,
                std::min(t.mb, M - m0), std::min(t.nb, N - n0), K);
    });
    return ok();
  });
}

qk_status linear_int8_w8a8(const void* x, qk_dtype x_dtype, int64_t ldx, const int8_t* w,
                           const float* w_scale, const float* bias, void* y, int64_t ldy, int64_t M,
                           int64_t N, int64_t K, int threads) {
  const char* fn = "qk_linear_int8_w8a8";
  QK_TRY(check_linear(fn, x, x_dtype, ldx, w, w_scale, y, ldy, M, N, K));
  return guarded(fn, [&]() -> qk_status {
    if (M == 0 || N == 0) return ok();
    const KernelTable& k = active_kernels();
    const int nt = threads_for(M, N, K, threads);
    const int64_t ldp = round_up(std::max<int64_t>(K, 1), kPanelAlign);
    auto panel = aligned_buffer<int8_t>(M * ldp);
    auto x_scale = aligned_buffer<float>(M);
    const bool use_panel = k.gemm_panel != nullptr && M >= k.panel_min_m[kPanelS8];
    auto asum = aligned_buffer<float>(use_panel ? M : 0);
    const int64_t rows_per_task = 16;
    parallel_for((M + rows_per_task - 1) / rows_per_task, nt, [&](int64_t t) {
      const int64_t r0 = t * rows_per_task, r1 = std::min(M, r0 + rows_per_task);
      quantize_rows(k, x, x_dtype, ldx, K, r0, r1, panel.get(), ldp, x_scale.get());
      for (int64_t r = r0; r < r1; ++r) {
        int8_t* row = panel.get() + r * ldp;
        for (int64_t i = K; i < ldp; ++i) row[i] = 0;  // the padding the kernels may load
        if (use_panel) asum[r] = sum_codes(row, K);
      }
    });
    if (use_panel)
      return w8a8_panel(k, panel.get(), ldp, x_scale.get(), asum.get(), w, w_scale, bias, y,
                        x_dtype, ldy, M, N, K, nt);
    const Tiling t = make_tiling(M, N, K, ldp, threads);
    parallel_for(t.tasks(), nt, [&](int64_t task) {
      const int64_t m0 = t.m0(task), n0 = t.n0(task);
      const int64_t mb = std::min(t.mb, M - m0), nb = std::min(t.nb, N - n0);
      std::vector<int32_t> acc(static_cast<size_t>(mb * nb));
      std::vector<float> out(static_cast<size_t>(nb));
      k.gemm_s8(panel.get() + m0 * ldp, ldp, w + n0 * K, K, acc.data(), nb, mb, nb, K);
      for (int64_t i = 0; i < mb; ++i) {
        const float sx = x_scale[m0 + i];
        for (int64_t j = 0; j < nb; ++j) {
          // Two roundings (no FMA: the library builds with -ffp-contract=off) so that the
          // PyTorch oracle reproduces every bit.
          const float s = sx * w_scale[n0 + j];
          float v = static_cast<float>(acc[i * nb + j]) * s;
          if (bias != nullptr) v = v + bias[n0 + j];
          out[j] = v;
        }
        store_row_f32(
            out.data(), nb, x_dtype,
            static_cast<char*>(row_ptr(y, x_dtype, ldy, m0 + i)) + n0 * dtype_size(x_dtype));
      }
    });
    return ok();
  });
}

qk_status linear_int8_w8a16(const void* x, qk_dtype x_dtype, int64_t ldx, const int8_t* w,
                            const float* w_scale, const float* bias, void* y, int64_t ldy,
                            int64_t M, int64_t N, int64_t K, int threads) {
  const char* fn = "qk_linear_int8_w8a16";
  QK_TRY(check_linear(fn, x, x_dtype, ldx, w, w_scale, y, ldy, M, N, K));
  return guarded(fn, [&]() -> qk_status {
    if (M == 0 || N == 0) return ok();
    const KernelTable& k = active_kernels();
    const int nt = threads_for(M, N, K, threads);
    const StagedF32 staged = stage_f32(x, x_dtype, ldx, M, K);
    const float* xf = staged.x;
    const int64_t ldxf = staged.ld;
    const bool use_panel = k.gemm_f32_s8_panel != nullptr && M >= k.f32_panel_min_m;
    const auto gemm = use_panel ? k.gemm_f32_s8_panel : k.gemm_f32_s8;
    const Tiling t =
        use_panel ? make_panel_tiling(M, N, nt) : make_tiling(M, N, K, 4 * ldxf, threads);
    parallel_for(t.tasks(), nt, [&](int64_t task) {
      const int64_t m0 = t.m0(task), n0 = t.n0(task);
      const int64_t mb = std::min(t.mb, M - m0), nb = std::min(t.nb, N - n0);
      auto acc = aligned_buffer<float>(mb * nb);  // written whole by the kernel
      gemm(xf + m0 * ldxf, ldxf, w + n0 * K, K, acc.get(), nb, mb, nb, K);
      store_block(acc.get(), mb, nb, w_scale, bias, y, x_dtype, ldy, m0, n0);
    });
    return ok();
  });
}

}  // namespace qk
