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

// At large batch: up to 64 activation rows against weight blocks of about 256 KiB (a quarter of
// the per-core L2 of current x86 parts; measured best of 64/128 rows and 256/512 KiB). At small
// batch (memory bound): enough weight blocks for every thread to get several.
inline Tiling make_tiling(int64_t M, int64_t N, int64_t K, int threads) {
  Tiling t{};
  t.mb = std::min<int64_t>(std::max<int64_t>(M, 1), 64);
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

// Below this many multiply-adds a call runs on the calling thread: waking the pool costs more.
inline constexpr int64_t kSerialWork = int64_t{1} << 18;

inline int threads_for(int64_t M, int64_t N, int64_t K, int requested) {
  return M * N * std::max<int64_t>(K, 1) < kSerialWork ? 1 : std::max(requested, 1);
}

}  // namespace qk
