// How the int8 drivers cut an [M, N] output into thread tasks.
#pragma once

#include <algorithm>
#include <cstdint>

#include "kernels.h"

namespace qk {

struct Tiling {
  int64_t mb, nb;  // block sizes
  int64_t m_blocks, n_blocks;
  int64_t tasks() const { return m_blocks * n_blocks; }
  // Consecutive tasks walk down M within one block of weight rows, so that block stays in cache.
  int64_t m0(int64_t t) const { return (t % m_blocks) * mb; }
  int64_t n0(int64_t t) const { return (t / m_blocks) * nb; }
};

// At large batch: weight blocks of about 256 KiB (a quarter of the per-core L2 of current x86
// parts) against up to 64 activation rows, fewer when those rows would not fit in 512 KiB:
// every weight strip re-reads the whole activation block, which must stay in L2 beside the weight
// block (measured: 64/128 rows, 256/512 KiB; 64 fp32 rows of K = 11008 from L3: 121 GFLOP/s,
// 8 rows: 137). At small batch (memory bound): enough weight blocks for every thread to get
// several. a_row_bytes: bytes of one staged activation row (K for the int8 panel, 4 K for fp32).
inline Tiling make_tiling(int64_t M, int64_t N, int64_t K, int64_t a_row_bytes, int threads) {
  Tiling t{};
  const int64_t fit =
      std::max<int64_t>((int64_t{512} << 10) / std::max<int64_t>(a_row_bytes, 1) / 4 * 4, 4);
  t.mb = std::min<int64_t>(std::max<int64_t>(M, 1), std::min<int64_t>(64, fit));
  int64_t nb;
  if (M <= 4) {
    nb = round_up(std::max<int64_t>(N / (int64_t{threads} * 8), 1), 16);
    nb = std::clamp<int64_t>(nb, 16, 512);
  } else {
    nb = round_up(std::max<int64_t>((int64_t{256} << 10) / std::max<int64_t>(K, 1), 1), 16);
    nb = std::clamp<int64_t>(nb, 16, 256);
  }
  t.nb = nb;
  t.m_blocks = (std::max<int64_t>(M, 1) + t.mb - 1) / t.mb;
  t.n_blocks = (std::max<int64_t>(N, 1) + nb - 1) / nb;
  return t;
}

// Tasks of the panel GEMM (kernels.h: GemmPanelFn): each decodes its weight rows once for up to
// 512 activation rows (a 512-row K block of the activation panel is 128 KiB, beside a weight
// panel of at most 192 x 256 bytes in L2; 512 rows ran 5-10 % faster than 256 on 384 x 1536,
// 1536 x 384 and 11008 x 4096), with weight blocks of 48..192 rows (multiples of the kernel's
// 48-column register tile) so that every thread gets about four.
inline Tiling make_panel_tiling(int64_t M, int64_t N, int threads) {
  Tiling t{};
  t.mb = std::min<int64_t>(std::max<int64_t>(M, 1), 512);
  const int64_t per_task = (N + int64_t{threads} * 4 - 1) / (int64_t{threads} * 4);
  t.nb = std::clamp<int64_t>(round_up(std::max<int64_t>(per_task, 1), 48), 48, 192);
  t.m_blocks = (std::max<int64_t>(M, 1) + t.mb - 1) / t.mb;
  t.n_blocks = (std::max<int64_t>(N, 1) + t.nb - 1) / t.nb;
  return t;
}

// Below this many multiply-adds a call runs on the calling thread: waking the pool costs more.
inline constexpr int64_t kSerialWork = int64_t{1} << 18;

inline int threads_for(int64_t M, int64_t N, int64_t K, int requested) {
  return M * N * std::max<int64_t>(K, 1) < kSerialWork ? 1 : std::max(requested, 1);
}

}  // namespace qk
