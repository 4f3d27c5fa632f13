// Walks an [M, N] output block in MR x NR register tiles, with narrower tiles for the ragged
// edges. Included by the per-ISA kernel files; `Tile` is a functor type from the including
// translation unit's anonymous namespace, so every instantiation stays private to that unit and
// its compiler flags (no AVX-512 code can be merged into a generic caller).
#pragma once

#include <cstdint>

namespace qk::cpu {

// The arguments of one gemm_s8 / gemm_f32_s8 call (csrc/core/kernels.h), as the per-ISA tile
// functors see them. The functors derive from these inside their own anonymous namespaces.
struct S8Args {
  const int8_t* a;
  int64_t lda;
  const int8_t* b;
  int64_t ldb;
  int32_t* c;
  int64_t ldc, K;
};

struct F32S8Args {
  const float* x;
  int64_t ldx;
  const int8_t* w;
  int64_t ldw;
  float* c;
  int64_t ldc, K;
};

// Runs the tile of R x C outputs at (m, n) for a runtime R < MR (the ragged rows of a block), so
// the leftover rows share one pass over the weight strip instead of taking one pass each.
template <int MR, int C, typename Tile>
inline void run_ragged_rows(int64_t rows, int64_t m, int64_t n, const Tile& tile) {
  if constexpr (MR > 1) {
    if (rows == MR - 1) return tile.template run<MR - 1, C>(m, n);
    run_ragged_rows<MR - 1, C>(rows, m, n, tile);
  }
}

// tile.template run<mr, nr>(m, n) computes outputs [m, m + mr) x [n, n + nr).
// Weight rows (n) are the outer loop so an NR-row strip of weights stays in L1 while every row of
// activations streams past it; ragged weight rows are taken one at a time.
template <int MR, int NR, typename Tile>
inline void for_each_tile(int64_t M, int64_t N, const Tile& tile) {
  const int64_t m_full = M - M % MR;
  int64_t n = 0;
  for (; n + NR <= N; n += NR) {
    for (int64_t m = 0; m < m_full; m += MR) tile.template run<MR, NR>(m, n);
    run_ragged_rows<MR, NR>(M - m_full, m_full, n, tile);
  }
  for (; n < N; ++n) {
    for (int64_t m = 0; m < m_full; m += MR) tile.template run<MR, 1>(m, n);
    run_ragged_rows<MR, 1>(M - m_full, m_full, n, tile);
  }
}

}  // namespace qk::cpu
