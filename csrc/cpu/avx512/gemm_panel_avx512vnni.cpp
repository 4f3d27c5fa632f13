// AVX-512 VNNI panel GEMM for batches: int8 (W8A8), int4, int3 and nf4 weights, one kernel.
//
// The dot-product kernels (gemm_s8, gemm_q) give every output its own vector accumulator and a
// horizontal sum, and decode each weight block once per register tile of activation rows. Here
// the weights of a task are decoded once per K block into a panel in the layout vpdpbusd wants,
// and every activation row of the task reuses it:
//
// - Panel: per 16 output columns and per 4 consecutive k, one 64-byte vector whose dword j holds
//   the 4 weights of column j (VNNI layout), as unsigned bytes u = v + 128 (v: the signed weight
//   value: int8 code, int4/int3 code minus zero point, or nf4's int8 table value). K blocks are
//   up to kKcBlocks x 32 weights (256), whole groups when a group is shorter, so the panel of a
//   task (<= 192 columns) is <= 48 KiB.
// - Register tile: 8 activation rows x 3 column vectors (48 columns) = 24 int32 accumulators.
//   vpdpbusd multiplies the unsigned panel bytes by the signed activations, which come straight
//   from the activation panel as a 4-byte broadcast memory operand. The +128 is removed by
//   starting each group's sums at -128 * sum a (per row and group, from the driver). The
//   int32 lanes may wrap (a * u reaches 4 * 127 * 255 per step), but the true sum fits int32 and
//   arithmetic modulo 2^32 gives it exactly.
// - Groups: a group's integer sum is converted once: the first group writes
//   c = float(isum) * (sa * scale) (W8A8's single group thus rounds as its oracle), later ones add
//   c = fma(float(isum), sa * scale, c). A group longer than a K block (W8A8: the whole row) keeps
//   its int32 sums in a scratch tile between blocks, so the integer result stays exact.
//
// Both operands use the same order of k inside a 32-block (the format's panel order), so the
// nibble formats need no shuffle. Limitations: needs AVX-512 F/BW/VL + VNNI.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/kernels.h"
#include "cpu/prefetch_x86.h"
#include "cpu/tile_loop.h"
#include "formats/grouped.h"
#include "formats/int3.h"
#include "formats/int4.h"
#include "formats/nf4.h"

namespace qk {
namespace {
#include "cpu/avx512/panel_avx512.h"
#include "cpu/x86/gemm_q_x86.h"

// int8 rows (W8A8): 32 signed weights per block, already in element order.
struct S8Dec {
  static constexpr int64_t kBytes = grouped::kBlock;
  static constexpr bool kZeroPoint = false;
  static __m256i codes(const uint8_t* p) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  }
};

constexpr int64_t kK4 = grouped::kBlock / 4;  // 4-byte k steps per 32-block
constexpr int64_t kKcBlocks = 8;              // 32-blocks per K block, at most

// 32-blocks per K block: whole groups where a group is shorter than kKcBlocks blocks (so only
// longer groups carry int32 sums from one K block to the next).
constexpr int64_t kc_blocks(int64_t gblocks) {
  return gblocks <= kKcBlocks ? kKcBlocks / gblocks * gblocks : kKcBlocks;
}
constexpr int64_t kVec = 64;  // bytes of one panel vector

struct Scratch {
  std::vector<uint8_t> panel;  // [vectors, blocks * kK4, 64]
  std::vector<float> wscale;   // [groups in the K block, vectors * 16]
  std::vector<int32_t> isum;   // [M, vectors * 16] int32 sums of groups longer than a K block
};

// The gemm_q arguments (asum as GemmPanelFn reads it), the sizes and the scratch of one call.
template <typename Dec>
struct Panel : QTileArgs {
  int64_t M, N;
  int64_t vecs;  // column vectors: ceil(N / 16)
  int64_t nblocks, gblocks;
  Scratch& s;

  uint8_t* panel() const { return aligned_panel(s.panel); }

  // Decodes blocks [b0, b1) of every column into the panel, and the groups' weight scales.
  void pack(int64_t b0, int64_t b1) const {
    const int64_t nb = b1 - b0, full = w.row_bytes / Dec::kBytes;
    const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
    alignas(64) __m256i rows[kKcBlocks][16];
    // The short last block of a row, copied out so nothing past the row is read; every copy
    // writes the same leading bytes, so the zeros after them are set once.
    alignas(32) uint8_t tail[Dec::kBytes] = {};
    for (int64_t v = 0; v < vecs; ++v) {
      for (int r = 0; r < 16; ++r) {
        const int64_t n = v * 16 + r;
        if (n >= N) {
          for (int64_t b = 0; b < nb; ++b) rows[b][r] = _mm256_setzero_si256();
          continue;
        }
        const uint8_t* row = w.packed + n * w.row_bytes;
        // The row's next K block, which the next pack reads: to L2 while this panel is in use.
        for (int64_t off = 0; off < nb * Dec::kBytes; off += 64)
          cpu::prefetch_strip<2>(row + b1 * Dec::kBytes + off);
        for (int64_t b = b0; b < b1; ++b) {
          const uint8_t* p = row + b * Dec::kBytes;
          if (b >= full) {
            std::memcpy(tail, p, static_cast<size_t>(w.row_bytes - full * Dec::kBytes));
            p = tail;
          }
          __m256i val = Dec::codes(p);
          if constexpr (Dec::kZeroPoint) {
            const int64_t g = b / gblocks;
            const int z = w.zeros != nullptr ? w.zeros[n * w.groups + g] : w.zero;
            val = _mm256_sub_epi8(val, _mm256_set1_epi8(static_cast<char>(z)));
          }
          rows[b - b0][r] = _mm256_xor_si256(val, flip);  // v + 128 as an unsigned byte
        }
      }
      uint8_t* dst = panel() + v * nb * kK4 * kVec;
      for (int64_t b = 0; b < nb; ++b) {
        __m512i out[8];
        transpose_16x8(rows[b], out);
        for (int q = 0; q < 8; ++q)
          _mm512_store_si512(reinterpret_cast<__m512i*>(dst + (b * kK4 + q) * kVec), out[q]);
      }
    }
    const int64_t g0 = b0 / gblocks, g1 = (b1 - 1) / gblocks + 1, ld = vecs * 16;
    for (int64_t g = g0; g < g1; ++g)
      for (int64_t n = 0; n < ld; ++n)
        s.wscale[(g - g0) * ld + n] = n < N ? w.scales[n * w.groups + g] : 0.0f;
  }

  // Rows [m, m + MR) x column vectors [v, v + NR) over the packed K block [kb0, kb1).
  template <int MR, int NR>
  void tile(int64_t m, int64_t v, int64_t kb0, int64_t kb1) const {
    const int64_t ld = vecs * 16;
    const uint8_t* bp[NR];
    __mmask16 cols[NR];
    _Pragma("GCC unroll 8") for (int j = 0; j < NR; ++j) {
      bp[j] = panel() + (v + j) * (kb1 - kb0) * kK4 * kVec;
      cols[j] = column_mask(N - (v + j) * 16);
    }
    const int64_t g0 = kb0 / gblocks;
    for (int64_t g = g0; g * gblocks < kb1; ++g) {
      const int64_t s0 = std::max(kb0, g * gblocks), s1 = std::min(kb1, (g + 1) * gblocks);
      const bool first = s0 == g * gblocks;
      const bool last = s1 == std::min(nblocks, (g + 1) * gblocks);
      // A group starts from -128 * sum a, which removes the +128 of the panel bytes in passing.
      // asum holds integers below 2^24 as fp32: the conversion is exact.
      __m512i acc[MR][NR];
      _Pragma("GCC unroll 8") for (int i = 0; i < MR; ++i) {
        const __m512i start =
            _mm512_set1_epi32(-128 * static_cast<int32_t>(asum[(m + i) * ldsa + g]));
        _Pragma("GCC unroll 8") for (int j = 0; j < NR; ++j) acc[i][j] =
            first ? start : _mm512_loadu_si512(s.isum.data() + (m + i) * ld + (v + j) * 16);
      }
      const int8_t* ap = a + m * lda;
      for (int64_t k4 = s0 * kK4; k4 < s1 * kK4; ++k4) {
        __m512i bv[NR];
        _Pragma("GCC unroll 8") for (int j = 0; j < NR; ++j) bv[j] =
            _mm512_load_si512(bp[j] + (k4 - kb0 * kK4) * kVec);
        _Pragma("GCC unroll 8") for (int i = 0; i < MR; ++i) {
          int32_t a4;  // 4 activations, broadcast (vpdpbusd's m32bcst operand)
          std::memcpy(&a4, ap + i * lda + k4 * 4, 4);
          const __m512i av = _mm512_set1_epi32(a4);
          _Pragma("GCC unroll 8") for (int j = 0; j < NR; ++j) acc[i][j] =
              _mm512_dpbusd_epi32(acc[i][j], bv[j], av);
        }
      }
      if (!last) {
        _Pragma("GCC unroll 8") for (int i = 0; i < MR; ++i)
            _Pragma("GCC unroll 8") for (int j = 0; j < NR; ++j)
                _mm512_storeu_si512(s.isum.data() + (m + i) * ld + (v + j) * 16, acc[i][j]);
        continue;
      }
      // The first group writes c (a multiply: W8A8's single group rounds as its oracle does),
      // later ones add with one multiply-add. c needs no zeroing beforehand.
      _Pragma("GCC unroll 8") for (int i = 0; i < MR; ++i) {
        const __m512 sx = _mm512_set1_ps(sa[(m + i) * ldsa + g]);
        _Pragma("GCC unroll 8") for (int j = 0; j < NR; ++j) {
          const __m512 sw = _mm512_loadu_ps(s.wscale.data() + (g - g0) * ld + (v + j) * 16);
          const __m512 dot = _mm512_cvtepi32_ps(acc[i][j]);
          float* cp = c + (m + i) * ldc + (v + j) * 16;
          const __m512 sum = g == 0 ? _mm512_mul_ps(dot, _mm512_mul_ps(sx, sw))
                                    : _mm512_fmadd_ps(dot, _mm512_mul_ps(sx, sw),
                                                      _mm512_maskz_loadu_ps(cols[j], cp));
          _mm512_mask_storeu_ps(cp, cols[j], sum);
        }
      }
    }
  }

  void run() const {
    const int64_t kc = kc_blocks(gblocks);
    for (int64_t kb0 = 0; kb0 < nblocks; kb0 += kc) {
      const int64_t kb1 = std::min(nblocks, kb0 + kc);
      pack(kb0, kb1);
      panel_tiles(*this, M, vecs, kb0, kb1);
    }
  }
};

template <typename Dec>
void gemm_panel(const QWeights& w, const int8_t* a, int64_t lda, const float* sa, const float* asum,
                int64_t ldsa, float* c, int64_t ldc, int64_t M, int64_t N) {
  if (M == 0 || N == 0) return;
  const int64_t vecs = (N + 15) / 16;
  const int64_t nblocks = grouped::blocks_per_row(w.K);
  if (nblocks == 0) {  // K = 0: no group writes c
    for (int64_t m = 0; m < M; ++m) std::fill_n(c + m * ldc, N, 0.0f);
    return;
  }
  const int64_t kblocks = std::min(nblocks, kc_blocks(w.group_blocks));
  thread_local Scratch s;
  s.panel.resize(static_cast<size_t>(vecs * kblocks * kK4 * kVec + kVec));
  s.wscale.resize(static_cast<size_t>((kblocks + 1) * vecs * 16));
  if (w.group_blocks > kKcBlocks) s.isum.resize(static_cast<size_t>(M * vecs * 16));
  const Panel<Dec> p{{w, a, lda, sa, asum, ldsa, c, ldc}, M, N, vecs, nblocks, w.group_blocks, s};
  p.run();
}

}  // namespace

const GemmPanelFn kGemmPanelAvx512Vnni[kPanelFormatCount] = {
    gemm_panel<Int4Dec>, gemm_panel<Int3Dec>, gemm_panel<NF4Dec>, gemm_panel<S8Dec>};

}  // namespace qk
