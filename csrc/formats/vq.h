// vq format: additive codebooks over groups of 8 weights (AQLM style). Spec: docs/formats.md#vq.
// Mirrored in python/qkernels/formats/vq.py.
//
//   codes      [N, K/8, Mc]       uint8 (B = 8) or uint16 (B = 16) indices, Mc in {1, 2}
//   codebooks  [Mc, 2^B, 8]       stored fp16; the kernels take them widened to fp32 at load time
//   scales     fp32 [N]           w[n, 8j + i] = scales[n] * sum_c codebooks[c, codes[n, j, c], i]
#pragma once

#include <cstdint>

#include "formats/hd.h"

namespace qk::vq {

inline constexpr int64_t kGroup = 8;
inline constexpr int kMaxCodebooks = 2;

// The four instantiated configurations, in kernel-table order: 1x8, 1x16, 2x8, 2x16.
inline constexpr int kVariants = 4;
QK_HD inline constexpr int variant(int num_codebooks, int codebook_bits) {
  return (num_codebooks - 1) * 2 + (codebook_bits == 16 ? 1 : 0);
}
QK_HD inline constexpr bool valid_config(int num_codebooks, int codebook_bits) {
  return (num_codebooks == 1 || num_codebooks == 2) && (codebook_bits == 8 || codebook_bits == 16);
}
QK_HD inline constexpr int64_t codebook_entries(int codebook_bits) {
  return int64_t{1} << codebook_bits;
}
static_assert(variant(2, 8) == 2 && variant(1, 16) == 1, "table order");

// Index of codebook c for group j of a row (codes of one row: [K/8, Mc]).
template <typename Code>
QK_HD inline int64_t code_at(const Code* row_codes, int64_t j, int c, int num_codebooks) {
  return static_cast<int64_t>(row_codes[j * num_codebooks + c]);
}

}  // namespace qk::vq
