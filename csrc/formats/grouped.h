// Shared geometry of the group-wise sub-byte formats (int4, int3, nf4): codes run along K in
// blocks of 32 (the unit every decoder produces), and a scale covers a group of whole blocks.
// Spec: docs/formats.md (int4, int3, nf4).
#pragma once

#include <cstdint>

#include "formats/hd.h"

namespace qk::grouped {

// Decoders produce 32 weights at a time; group sizes are whole numbers of blocks so that one
// integer dot product never straddles two scales.
inline constexpr int64_t kBlock = 32;

QK_HD inline constexpr int64_t blocks_per_row(int64_t K) { return (K + kBlock - 1) / kBlock; }

// group_size: a positive multiple of 32, or -1 for the whole row. Returns blocks per group, or 0
// when group_size is not valid for K.
QK_HD inline constexpr int64_t group_blocks(int64_t group_size, int64_t K) {
  if (group_size == -1) return blocks_per_row(K) > 0 ? blocks_per_row(K) : 1;
  if (group_size <= 0 || group_size % kBlock != 0) return 0;
  return group_size / kBlock;
}

QK_HD inline constexpr int64_t groups_per_row(int64_t K, int64_t gblocks) {
  return (blocks_per_row(K) + gblocks - 1) / gblocks;
}

static_assert(group_blocks(128, 4096) == 4 && groups_per_row(4096, 4) == 32, "g128");
static_assert(group_blocks(-1, 100) == 4 && groups_per_row(100, 4) == 1, "whole row");
static_assert(group_blocks(64, 100) == 2 && groups_per_row(100, 2) == 2, "partial last group");
static_assert(group_blocks(48, 4096) == 0, "48 is not a whole number of blocks");

}  // namespace qk::grouped
