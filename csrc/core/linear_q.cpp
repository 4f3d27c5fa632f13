// Driver of the group-wise sub-byte linears (int4, int3, nf4): argument checks, activation staging
// (fp32 conversion, int8 quantization per token and per group, permutation into the format's
// panel order), the thread split, and the bias epilogue. The per-ISA kernels (gemm_q) do the
// arithmetic; see csrc/core/kernels.h for their contract.
#include <cmath>
#include <string>
#include <vector>

#include "driver.h"
#include "formats/grouped.h"
#include "formats/int3.h"
#include "formats/int4.h"
#include "formats/nf4.h"
#include "kernels.h"
#include "ops.h"
#include "stage.h"
#include "threadpool.h"
#include "tiling.h"

namespace qk {
namespace {

struct FormatInfo {
  const char* fn;        // C ABI name, for messages
  const char* group;     // the group argument's name
  int codes;             // 16 or 8
  int sym_zero;          // zero point when zeros is NULL
  bool nibbles;          // two codes per byte: K must be even
  int (*source)(int p);  // panel order
  int64_t (*row_bytes)(int64_t K);
};

int int4_source(int p) { return int4::panel_source(p); }
int int3_source(int p) { return int3::panel_source(p); }
int64_t int4_row_bytes(int64_t K) { return int4::row_bytes(K); }
int64_t int3_row_bytes(int64_t K) { return int3::row_bytes(K); }

const FormatInfo& info(QFormat f) {
  static const FormatInfo table[kQFormatCount] = {
      {"qk_linear_int4", "group_size", int4::kCodes, int4::kSymZero, true, int4_source,
       int4_row_bytes},
      {"qk_linear_int3", "group_size", int3::kCodes, int3::kSymZero, false, int3_source,
       int3_row_bytes},
      {"qk_linear_nf4", "block_size", nf4::kCodes, 0, true, int4_source, int4_row_bytes},
  };
  return table[f];
}

qk_status check_args(QFormat f, const void* x, qk_dtype x_dtype, int64_t ldx, const uint8_t* packed,
                     const float* scales, const uint8_t* zeros, int64_t group_size, void* y,
                     int64_t ldy, int64_t M, int64_t N, int64_t K) {
  const FormatInfo& fi = info(f);
  const std::string fn = fi.fn;
  QK_TRY(check_gemm_sizes(fi.fn, M, N, K));
  QK_TRY(check_dtype(fi.fn, "x_dtype", x_dtype));
  QK_TRY(check_matrix(fi.fn, "x", x, M, K, ldx));
  QK_TRY(check_matrix(fi.fn, "y", y, M, N, ldy));
  const bool group_ok =
      f == kQNF4 ? nf4::valid_block_size(group_size) : grouped::group_blocks(group_size, K) > 0;
  if (!group_ok)
    return fail(QK_ERR_INVALID_ARGUMENT,
                fn + ": " + fi.group + ": expected " +
                    (f == kQNF4 ? "32, 64, 128 or 256" : "a positive multiple of 32, or -1") +
                    ", got " + std::to_string(group_size));
  if (fi.nibbles && K % 2 != 0)
    return fail(QK_ERR_INVALID_ARGUMENT,
                fn + ": K: expected an even number (two codes per byte), got " + std::to_string(K));
  const int64_t groups = grouped::groups_per_row(K, grouped::group_blocks(group_size, K));
  QK_TRY(check_matrix(fi.fn, "packed", packed, N, fi.row_bytes(K),
                      std::max<int64_t>(fi.row_bytes(K), 1)));
  QK_TRY(check_matrix(fi.fn, f == kQNF4 ? "absmax" : "scales", scales, N, groups, groups));
  if (zeros != nullptr) {
    // An out-of-range zero point would wrap the int8 value arithmetic; reject it up front.
    for (int64_t i = 0; i < N * groups; ++i)
      if (zeros[i] >= fi.codes)
        return fail(QK_ERR_INVALID_ARGUMENT,
                    fn + ": zeros: expected values < " + std::to_string(fi.codes) + ", got " +
                        std::to_string(zeros[i]) + " at [" + std::to_string(i / groups) + ", " +
                        std::to_string(i % groups) + "]");
  }
  return QK_OK;
}

// Quantizes rows [r0, r1) of x per group into the panel (panel order, zero padding) and writes
// the activation scale of each group; nf4 folds its table's 1/127 into that scale. Then, for each
// group, either the lane sums that gemm_q wants (asum, [M, groups, 8]) or the plain sums the panel
// GEMM wants (atot, [M, groups]; asum unused).
void stage_rows(const KernelTable& k, QFormat f, const void* x, qk_dtype d, int64_t ldx, int64_t K,
                int64_t group, int64_t groups, int64_t r0, int64_t r1, int8_t* panel, int64_t ldp,
                float* sa, float* asum, float* atot) {
  const FormatInfo& fi = info(f);
  int src[grouped::kBlock];  // panel position p holds element src[p] of its block
  for (int p = 0; p < grouped::kBlock; ++p) src[p] = fi.source(p);
  std::vector<float> xf(static_cast<size_t>(K));
  std::vector<int8_t> q(static_cast<size_t>(K));
  const int64_t full = K / grouped::kBlock;
  for (int64_t r = r0; r < r1; ++r) {
    load_row_f32(row_ptr(x, d, ldx, r), d, K, xf.data());
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t k0 = g * group, len = std::min(group, K - k0);
      float s = k.quantize_row_int8(xf.data() + k0, len, q.data() + k0);
      if (f == kQNF4) s = s / nf4::kInt8Scale;
      sa[r * groups + g] = s;
      if (atot != nullptr) atot[r * groups + g] = sum_codes(q.data() + k0, len);
    }
    int8_t* dst = panel + r * ldp;
    for (int64_t b = 0; b < full; ++b)
      for (int p = 0; p < grouped::kBlock; ++p)
        dst[b * grouped::kBlock + p] = q[b * grouped::kBlock + src[p]];
    for (int64_t i = full * grouped::kBlock; i < ldp; ++i) {  // the short last block, padding
      const int64_t from = (i / grouped::kBlock) * grouped::kBlock + src[i % grouped::kBlock];
      dst[i] = i / grouped::kBlock == full && from < K ? q[from] : 0;
    }
    if (atot != nullptr) continue;
    // Lane sums of the panel per group (kernels.h: asum), in panel order like the dot products.
    for (int64_t g = 0; g < groups; ++g) {
      int32_t lanes[8] = {};
      const int64_t b0 = g * (group / grouped::kBlock);
      const int64_t b1 = std::min(grouped::blocks_per_row(K), b0 + group / grouped::kBlock);
      for (int64_t i = b0 * grouped::kBlock; i < b1 * grouped::kBlock; ++i)
        lanes[(i % 32) / 4] += dst[i];
      for (int l = 0; l < 8; ++l) asum[(r * groups + g) * 8 + l] = static_cast<float>(lanes[l]);
    }
  }
}

}  // namespace

qk_status linear_q(QFormat f, const void* x, qk_dtype x_dtype, int64_t ldx, const uint8_t* packed,
                   const float* scales, const uint8_t* zeros, int64_t group_size, const float* bias,
                   void* y, int64_t ldy, int64_t M, int64_t N, int64_t K, int threads) {
  QK_TRY(check_args(f, x, x_dtype, ldx, packed, scales, zeros, group_size, y, ldy, M, N, K));
  const FormatInfo& fi = info(f);
  return guarded(fi.fn, [&]() -> qk_status {
    if (M == 0 || N == 0) return ok();
    const KernelTable& k = active_kernels();
    const int64_t gblocks = grouped::group_blocks(group_size, K);
    const int64_t groups = grouped::groups_per_row(K, gblocks);
    const int64_t group = gblocks * grouped::kBlock;
    const QWeights w{packed, fi.row_bytes(K), scales, zeros, fi.sym_zero, groups, gblocks, K};
    const int nt = threads_for(M, N, K, threads);
    const int64_t ldp =
        round_up(std::max<int64_t>(grouped::blocks_per_row(K), 1) * grouped::kBlock, kPanelAlign);
    auto panel = aligned_buffer<int8_t>(M * ldp);
    auto sa = aligned_buffer<float>(M * groups);
    const bool use_panel = k.gemm_panel != nullptr && M >= k.panel_min_m[f];
    auto asum = aligned_buffer<float>(use_panel ? 0 : M * groups * 8);
    auto atot = aligned_buffer<float>(use_panel ? M * groups : 0);
    const int64_t rows_per_task = 16;
    parallel_for((M + rows_per_task - 1) / rows_per_task, nt, [&](int64_t t) {
      const int64_t r0 = t * rows_per_task, r1 = std::min(M, r0 + rows_per_task);
      stage_rows(k, f, x, x_dtype, ldx, K, group, groups, r0, r1, panel.get(), ldp, sa.get(),
                 asum.get(), use_panel ? atot.get() : nullptr);
    });
    const Tiling t = use_panel ? make_panel_tiling(M, N, nt) : make_tiling(M, N, K, ldp, threads);
    parallel_for(t.tasks(), nt, [&](int64_t task) {
      const int64_t m0 = t.m0(task), n0 = t.n0(task);
      const int64_t mb = std::min(t.mb, M - m0), nb = std::min(t.nb, N - n0);
      QWeights wt = w;
      wt.packed += n0 * w.row_bytes;
      wt.scales += n0 * groups;
      if (wt.zeros != nullptr) wt.zeros += n0 * groups;
      auto out = aligned_buffer<float>(mb * nb);  // written whole by the kernel
      if (use_panel)
        k.gemm_panel[f](wt, panel.get() + m0 * ldp, ldp, sa.get() + m0 * groups,
                        atot.get() + m0 * groups, groups, out.get(), nb, mb, nb);
      else
        k.gemm_q[f](wt, panel.get() + m0 * ldp, ldp, sa.get() + m0 * groups,
                    asum.get() + m0 * groups * 8, groups, out.get(), nb, mb, nb);
      store_block(out.get(), mb, nb, nullptr, bias, y, x_dtype, ldy, m0, n0);
    });
    return ok();
  });
}

}  // namespace qk
