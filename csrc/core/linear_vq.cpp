// Driver of the codebook linear (vq): argument checks, fp32 staging of 16-bit activations, the
// thread split, and the epilogue y = acc * scale[n] + bias[n]. The per-ISA gemm_vq kernels decode
// the codebooks; see csrc/core/kernels.h for their contract.
#include <string>
#include <vector>

#include "driver.h"
#include "formats/vq.h"
#include "kernels.h"
#include "ops.h"
#include "stage.h"
#include "threadpool.h"
#include "tiling.h"

namespace qk {

qk_status linear_vq(const void* x, qk_dtype x_dtype, int64_t ldx, const void* codes,
                    int num_codebooks, int codebook_bits, const float* codebooks,
                    const float* scales, const float* bias, void* y, int64_t ldy, int64_t M,
                    int64_t N, int64_t K, int threads) {
  const char* fn = "qk_linear_vq";
  QK_TRY(check_runtime(fn));
  QK_TRY(check_size(fn, "M", M));
  QK_TRY(check_size(fn, "N", N));
  QK_TRY(check_size(fn, "K", K));
  QK_TRY(check_dtype(fn, "x_dtype", x_dtype));
  QK_TRY(check_matrix(fn, "x", x, M, K, ldx));
  QK_TRY(check_matrix(fn, "y", y, M, N, ldy));
  if (!vq::valid_config(num_codebooks, codebook_bits))
    return fail(QK_ERR_INVALID_ARGUMENT,
                std::string(fn) +
                    ": num_codebooks x codebook_bits: expected 1 or 2 x 8 or 16, got " +
                    std::to_string(num_codebooks) + " x " + std::to_string(codebook_bits));
  if (K % vq::kGroup != 0)
    return fail(QK_ERR_INVALID_ARGUMENT,
                std::string(fn) + ": K: expected a multiple of 8, got " + std::to_string(K));
  const int64_t code_cols = K / vq::kGroup * num_codebooks;
  QK_TRY(check_matrix(fn, "codes", codes, N, code_cols, std::max<int64_t>(code_cols, 1)));
  QK_TRY(check_matrix(fn, "codebooks", codebooks, num_codebooks,
                      vq::codebook_entries(codebook_bits) * vq::kGroup,
                      vq::codebook_entries(codebook_bits) * vq::kGroup));
  QK_TRY(check_matrix(fn, "scales", scales, N, 1, 1));
  return guarded(fn, [&]() -> qk_status {
    if (M == 0 || N == 0) return ok();
    const KernelTable& k = active_kernels();
    const int nt = threads_for(M, N, K, threads);
    const StagedF32 staged = stage_f32(x, x_dtype, ldx, M, K);
    const float* xf = staged.x;
    const int64_t ldxf = staged.ld;
    const int variant = vq::variant(num_codebooks, codebook_bits);
    const bool use_panel = k.gemm_vq_panel != nullptr && M >= k.vq_panel_min_m[variant];
    const GemmVQFn gemm = (use_panel ? k.gemm_vq_panel : k.gemm_vq)[variant];
    const int64_t row_code_bytes = code_cols * (codebook_bits / 8);
    const Tiling t =
        use_panel ? make_panel_tiling(M, N, nt) : make_tiling(M, N, K, 4 * ldxf, threads);
    parallel_for(t.tasks(), nt, [&](int64_t task) {
      const int64_t m0 = t.m0(task), n0 = t.n0(task);
      const int64_t mb = std::min(t.mb, M - m0), nb = std::min(t.nb, N - n0);
      const VQWeights w{static_cast<const uint8_t*>(codes) + n0 * row_code_bytes, codebooks, K};
      auto acc = aligned_buffer<float>(mb * nb);  // written whole by the kernel
      gemm(w, xf + m0 * ldxf, ldxf, acc.get(), nb, mb, nb);
      store_block(acc.get(), mb, nb, scales, bias, y, x_dtype, ldy, m0, n0);
    });
    return ok();
  });
}

}  // namespace qk
