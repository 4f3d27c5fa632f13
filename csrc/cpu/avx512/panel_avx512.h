// What the AVX-512 panel GEMMs (gemm_panel_avx512vnni.cpp, gemm_f32_panel_avx512.cpp) share: the
// 16 x 8 dword transpose that builds their panels, the panel's alignment, the column mask of an
// output vector, and the walk over one K block's register tiles.
// Included inside each unit's anonymous namespace (after <immintrin.h>, <vector> and
// cpu/tile_loop.h), so every copy stays private to that unit's flags.
#pragma once

// The first 64-byte aligned address in a scratch vector (sized with 64 bytes of slack), where the
// panel starts: its vectors are read with aligned loads.
template <typename T>
inline T* aligned_panel(std::vector<T>& scratch) {
  const auto p = reinterpret_cast<uintptr_t>(scratch.data());
  return reinterpret_cast<T*>((p + 63) / 64 * 64);
}

// The outputs of the 16-column vector that starts `left` columns before the end of the block.
inline __mmask16 column_mask(int64_t left) {
  return left >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << left) - 1);
}

// 16 rows x one 32-byte block each -> 8 panel vectors: vector q holds dword q of rows 0..15.
// Rows r and r + 8 share a zmm, then an 8 x 8 dword transpose runs in each 256-bit half.
inline void transpose_16x8(const __m256i u[16], __m512i out[8]) {
  __m512i z[8], t[8], s[8];
  for (int i = 0; i < 8; ++i) z[i] = _mm512_inserti64x4(_mm512_castsi256_si512(u[i]), u[i + 8], 1);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm512_unpacklo_epi32(z[i], z[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(z[i], z[i + 1]);
  }
  // s[d] (rows 0-3) and s[4 + d] (rows 4-7): in each 128-bit lane, dword d of that lane's rows.
  for (int h = 0; h < 8; h += 4) {
    s[h + 0] = _mm512_unpacklo_epi64(t[h + 0], t[h + 2]);
    s[h + 1] = _mm512_unpackhi_epi64(t[h + 0], t[h + 2]);
    s[h + 2] = _mm512_unpacklo_epi64(t[h + 1], t[h + 3]);
    s[h + 3] = _mm512_unpackhi_epi64(t[h + 1], t[h + 3]);
  }
  // Lanes 0/2 hold dwords 0-3 of rows r / r + 8, lanes 1/3 dwords 4-7: gather rows 0-3, 4-7,
  // 8-11, 12-15 of one dword into the four lanes.
  const __m512i lo = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13);
  const __m512i hi = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
  for (int d = 0; d < 4; ++d) {
    out[d] = _mm512_permutex2var_epi64(s[d], lo, s[4 + d]);
    out[4 + d] = _mm512_permutex2var_epi64(s[d], hi, s[4 + d]);
  }
}

// Runs p.tile<R, C>(m, v, k0, k1), one register tile of R rows x C column vectors, over every row
// of the task and every column vector for the K block [k0, k1): 8-row tiles down M (one shorter
// tile for the rows left over) against 3 column vectors at a time (then the 2 or 1 left over).
template <typename P>
struct PanelTiles {
  const P& p;
  int64_t k0, k1;
  template <int R, int C>
  void run(int64_t m, int64_t v) const {
    p.template tile<R, C>(m, v, k0, k1);
  }
  template <int C>
  void rows(int64_t M, int64_t v) const {
    int64_t m = 0;
    for (; m + 8 <= M; m += 8) run<8, C>(m, v);
    qk::cpu::run_ragged_rows<8, C>(M - m, m, v, *this);
  }
};

template <typename P>
inline void panel_tiles(const P& p, int64_t M, int64_t vecs, int64_t k0, int64_t k1) {
  const PanelTiles<P> t{p, k0, k1};
  int64_t v = 0;
  for (; v + 3 <= vecs; v += 3) t.template rows<3>(M, v);
  if (vecs - v == 2) t.template rows<2>(M, v);
  if (vecs - v == 1) t.template rows<1>(M, v);
}
