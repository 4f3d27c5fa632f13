// Lab: decode cost of three int3 packings on AVX2, from the packed bytes to one byte per code in
// element order (the form the int3 GEMM feeds to vpmaddubsw).
//
//   planes  2+1 bit planes, 32 codes in 12 bytes (csrc/formats/int3.h); decoder = the instruction
//           sequence of Int3Dec::codes in csrc/cpu/x86/gemm_q_x86.h.
//   dense   little-endian bitstream, code i at bits 3i..3i+2: 32 codes in 12 bytes.
//   word10  10 codes per little-endian uint32 at bits 3j..3j+2 (bits 30, 31 zero): 3.2 bits a code.
//
// Decoders:
//   planes         vpbroadcastq, vpsrlvq, vpand | vpbroadcastd, vpshufb, vpand, vpcmpeqb, vpand |
//   vpor dense/srlvd    one code per dword: 4 x (vpshufb, vpsrlvd, vpand), vpackusdw x2, vpackuswb
//   dense/pair     two codes per word: vpshufb brings the two bytes holding codes 2k, 2k+1 into
//   word
//                  k, vpmullw by 2^(6 - offset) is the per-word left shift that AVX2 lacks (no
//                  vpsllvw), then (z >> 6) & 7 | (z >> 1) & 0x700 splits the pair into two bytes
//   word10/pair    the same as dense/pair; its tables repeat every 5 blocks (160 codes, 64 bytes)
//
// Method: every SIMD decoder is first checked for exact equality against a scalar decoder of its
// layout (and each scalar decoder against the codes that were packed), over every code of both
// sizes. Timed loops decode each block into a register and add it into an accumulator (one vpaddb,
// the same for every decoder), as a GEMM consumes decoded codes without storing them. Two sizes:
// 16 Ki codes (6 KiB packed, L1-resident: the decode cost) and 256 Mi codes (96 MiB packed, 3x the
// 32 MiB L3: decode plus the memory stream). A "read" row sums the packed
// bytes with one 32-byte load and one vpaddb per 32 bytes: the read roofline of the same buffer.
// The decoders take turns within every run; each cell is the median over the runs (101 of 16 Mi
// codes for the L1 size, 21 single passes for the other), and the best run is shown too.
//
// Build and run: g++ -O3 -mavx2 -mfma -Icsrc bench/lab/decode_int3.cpp -o /tmp/decode_int3 &&
// /tmp/decode_int3
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#include "formats/int3.h"

// Every timed loop starts on a 64-byte line: left to chance, the 9-instruction planes loop ran at
// 33 codes/ns from one offset and 41 from another, a front-end effect as large as the differences
// between the decoders.
#pragma GCC optimize("align-loops=64")

namespace {

// Loads of 16 bytes at a block start read up to 4 bytes past the packed data; a GEMM row would go
// through the zero-padded copy that QTile::values already makes for a short last block.
constexpr size_t kPad = 64;

// ---------------------------------------------------------------------------------------------
// Packing and scalar decoders.

// Bit position of code i in the dense and word10 layouts.
inline uint64_t pos_dense(uint64_t i) { return 3 * i; }
inline uint64_t pos_word10(uint64_t i) { return 32 * (i / 10) + 3 * (i % 10); }

size_t bytes_planes(size_t n) { return n / 32 * qk::int3::kBlockBytes; }
size_t bytes_dense(size_t n) { return (3 * n + 7) / 8; }
size_t bytes_word10(size_t n) { return (n + 9) / 10 * 4; }

void pack_planes(const uint8_t* codes, size_t n, uint8_t* out) {
  std::memset(out, 0, bytes_planes(n));
  for (size_t i = 0; i < n; ++i) qk::int3::set_code(out, static_cast<int64_t>(i), codes[i]);
}

template <uint64_t (*Pos)(uint64_t)>
void pack_bits(const uint8_t* codes, size_t n, uint8_t* out, size_t nbytes) {
  std::memset(out, 0, nbytes);
  for (size_t i = 0; i < n; ++i) {
    const uint64_t p = Pos(i);
    const unsigned v = static_cast<unsigned>(codes[i]) << (p % 8);
    out[p / 8] |= static_cast<uint8_t>(v);
    if (v >> 8) out[p / 8 + 1] |= static_cast<uint8_t>(v >> 8);
  }
}

void scalar_planes(const uint8_t* src, size_t n, uint8_t* dst) {
  for (size_t i = 0; i < n; ++i) dst[i] = qk::int3::get_code(src, static_cast<int64_t>(i));
}

template <uint64_t (*Pos)(uint64_t)>
void scalar_bits(const uint8_t* src, size_t n, uint8_t* dst) {
  for (size_t i = 0; i < n; ++i) {
    const uint64_t p = Pos(i);
    const unsigned two = src[p / 8] | (static_cast<unsigned>(src[p / 8 + 1]) << 8);
    dst[i] = static_cast<uint8_t>((two >> (p % 8)) & 7);
  }
}

// ---------------------------------------------------------------------------------------------
// SIMD decoders: each returns the 32 codes of block b in element order.

// Int3Dec::codes, instruction for instruction.
struct Planes {
  static __m256i block(const uint8_t* src, size_t b) {
    const uint8_t* p = src + b * qk::int3::kBlockBytes;
    uint64_t q64;
    std::memcpy(&q64, p, 8);
    const __m256i q = _mm256_set1_epi64x(static_cast<long long>(q64));
    const __m256i lo =
        _mm256_and_si256(_mm256_srlv_epi64(q, _mm256_setr_epi64x(0, 2, 4, 6)), _mm256_set1_epi8(3));
    uint32_t h32;
    std::memcpy(&h32, p + 8, 4);
    const __m256i sel = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,  //
                                         2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit =
        _mm256_setr_epi8(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16,
                         32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128);
    const __m256i h = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(h32)), sel);
    const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(h, bit), bit);
    return _mm256_or_si256(lo, _mm256_and_si256(set, _mm256_set1_epi8(4)));
  }
};

inline __m256i load16x2(const uint8_t* p) {
  return _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// Tables for one block phase of a bitstream layout: the block's 16-byte window starts at byte
// `start`, broadcast to both 128-bit halves, so every shuffle index is relative to it.
struct PairTables {
  uint64_t start;
  __m256i shuf;  // word k <- the two window bytes that hold codes 2k, 2k+1
  __m256i mul;   // word k *= 2^(6 - bit offset of code 2k in that byte pair)
};
struct DwordTables {
  uint64_t start;
  __m256i shuf[4];   // dword j of vector v <- the two window bytes holding its code
  __m256i shift[4];  // dword j of vector v >>= the bit offset of its code
};

template <uint64_t (*Pos)(uint64_t)>
PairTables make_pair_tables(uint64_t block) {
  PairTables t;
  t.start = Pos(32 * block) / 8;
  alignas(32) int8_t shuf[32];
  alignas(32) int16_t mul[16];
  for (int k = 0; k < 16; ++k) {
    const uint64_t p0 = Pos(32 * block + 2 * k), p1 = Pos(32 * block + 2 * k + 1);
    const uint64_t rel = p0 - 8 * t.start, off = rel % 8;
    // The pair must be 6 contiguous bits at an even offset inside a byte pair of the window.
    if (p1 != p0 + 3 || off % 2 != 0 || rel / 8 + 1 > 15) std::abort();
    shuf[2 * k] = static_cast<int8_t>(rel / 8);
    shuf[2 * k + 1] = static_cast<int8_t>(rel / 8 + 1);
    mul[k] = static_cast<int16_t>(1 << (6 - off));
  }
  t.shuf = _mm256_load_si256(reinterpret_cast<const __m256i*>(shuf));
  t.mul = _mm256_load_si256(reinterpret_cast<const __m256i*>(mul));
  return t;
}

template <uint64_t (*Pos)(uint64_t)>
DwordTables make_dword_tables(uint64_t block) {
  DwordTables t;
  t.start = Pos(32 * block) / 8;
  for (int v = 0; v < 4; ++v) {
    alignas(32) int8_t shuf[32];
    alignas(32) int32_t shift[8];
    for (int lane = 0; lane < 8; ++lane) {
      // vpackusdw then vpackuswb put dword j (of 4) in half h of vector v at byte 16h + 4v + j.
      const int h = lane / 4, j = lane % 4;
      const uint64_t rel = Pos(32 * block + 16 * h + 4 * v + j) - 8 * t.start;
      if (rel / 8 + 1 > 15) std::abort();
      shuf[4 * lane] = static_cast<int8_t>(rel / 8);
      shuf[4 * lane + 1] = static_cast<int8_t>(rel / 8 + 1);
      shuf[4 * lane + 2] = shuf[4 * lane + 3] = -128;
      shift[lane] = static_cast<int32_t>(rel % 8);
    }
    t.shuf[v] = _mm256_load_si256(reinterpret_cast<const __m256i*>(shuf));
    t.shift[v] = _mm256_load_si256(reinterpret_cast<const __m256i*>(shift));
  }
  return t;
}

inline __m256i pair_decode(const uint8_t* window, const PairTables& t) {
  const __m256i x = _mm256_shuffle_epi8(load16x2(window), t.shuf);
  // Codes 2k, 2k+1 now sit at bits 6..8 and 9..11 of word k, whatever their offset was.
  const __m256i z = _mm256_mullo_epi16(x, t.mul);
  return _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(z, 6), _mm256_set1_epi16(0x0007)),
                         _mm256_and_si256(_mm256_srli_epi16(z, 1), _mm256_set1_epi16(0x0700)));
}

inline __m256i dword_decode(const uint8_t* window, const DwordTables& t) {
  const __m256i w = load16x2(window);
  const __m256i m = _mm256_set1_epi32(7);
  __m256i c[4];
  for (int v = 0; v < 4; ++v)
    c[v] = _mm256_and_si256(_mm256_srlv_epi32(_mm256_shuffle_epi8(w, t.shuf[v]), t.shift[v]), m);
  return _mm256_packus_epi16(_mm256_packus_epi32(c[0], c[1]), _mm256_packus_epi32(c[2], c[3]));
}

// The dense layout repeats every block (12 bytes), word10 every 5 blocks (64 bytes).
// Namespace-scope constants, built before main, so the timed loops carry no initialisation guard.
const PairTables kDensePair = make_pair_tables<pos_dense>(0);
const DwordTables kDenseDword = make_dword_tables<pos_dense>(0);
const PairTables kWord10Pair[5] = {make_pair_tables<pos_word10>(0), make_pair_tables<pos_word10>(1),
                                   make_pair_tables<pos_word10>(2), make_pair_tables<pos_word10>(3),
                                   make_pair_tables<pos_word10>(4)};

struct DensePair {
  static __m256i block(const uint8_t* src, size_t b) {
    return pair_decode(src + 12 * b, kDensePair);
  }
};
struct DenseDword {
  static __m256i block(const uint8_t* src, size_t b) {
    return dword_decode(src + 12 * b, kDenseDword);
  }
};
struct Word10Pair {
  static __m256i block(const uint8_t* src, size_t b) {
    const PairTables& t = kWord10Pair[b % 5];
    return pair_decode(src + 64 * (b / 5) + t.start, t);
  }
};

// Store every block: the self-check.
template <class D>
void decode_store(const uint8_t* src, size_t nblocks, uint8_t* dst) {
  for (size_t b = 0; b < nblocks; ++b)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 32 * b), D::block(src, b));
}

// Consume every block in a register: the timed loop. The word10 loop is unrolled by its 5 phases
// so that each phase's tables are loop constants, as a GEMM kernel would hold them; the others
// by 4.
template <class D>
__attribute__((noinline)) __m256i decode_sum(const uint8_t* src, size_t nblocks) {
  __m256i acc = _mm256_setzero_si256();
#pragma GCC unroll 4
  for (size_t b = 0; b < nblocks; ++b) acc = _mm256_add_epi8(acc, D::block(src, b));
  return acc;
}
template <>
__attribute__((noinline)) __m256i decode_sum<Word10Pair>(const uint8_t* src, size_t nblocks) {
  const PairTables &t0 = kWord10Pair[0], &t1 = kWord10Pair[1], &t2 = kWord10Pair[2],
                   &t3 = kWord10Pair[3], &t4 = kWord10Pair[4];
  __m256i acc = _mm256_setzero_si256();
  const uint8_t* p = src;
  size_t b = 0;
  for (; b + 5 <= nblocks; b += 5, p += 64) {
    acc = _mm256_add_epi8(acc, pair_decode(p + t0.start, t0));
    acc = _mm256_add_epi8(acc, pair_decode(p + t1.start, t1));
    acc = _mm256_add_epi8(acc, pair_decode(p + t2.start, t2));
    acc = _mm256_add_epi8(acc, pair_decode(p + t3.start, t3));
    acc = _mm256_add_epi8(acc, pair_decode(p + t4.start, t4));
  }
  for (; b < nblocks; ++b) acc = _mm256_add_epi8(acc, Word10Pair::block(src, b));
  return acc;
}

// The read roofline: one 32-byte load and one vpaddb per 32 packed bytes.
__attribute__((noinline)) __m256i read_sum(const uint8_t* src, size_t nbytes) {
  __m256i acc = _mm256_setzero_si256();
  for (size_t i = 0; i + 32 <= nbytes; i += 32)
    acc = _mm256_add_epi8(acc, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)));
  return acc;
}

// ---------------------------------------------------------------------------------------------
// Harness.

// Every decoded sum lands here, so the compiler cannot drop a timed loop.
volatile uint64_t sink = 0;
void keep(__m256i v) {
  alignas(32) uint64_t x[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(x), v);
  sink += x[0] ^ x[1] ^ x[2] ^ x[3];
}

struct Stat {
  double median, lo, hi;
};

// Seconds per pass for each of `fns`, median and extremes over `runs` runs of `reps` passes. The
// functions take turns inside every run, so a neighbour's load on the shared cores lands on all of
// them alike instead of on whichever ran during it.
template <class F>
std::vector<Stat> time_all(const std::vector<F>& fns, int reps, int runs) {
  for (const F& f : fns) f();
  std::vector<std::vector<double>> t(fns.size());
  for (int r = 0; r < runs; ++r)
    for (size_t k = 0; k < fns.size(); ++k) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < reps; ++i) fns[k]();
      const auto t1 = std::chrono::steady_clock::now();
      t[k].push_back(std::chrono::duration<double>(t1 - t0).count() / reps);
    }
  std::vector<Stat> out;
  for (auto& v : t) {
    std::sort(v.begin(), v.end());
    out.push_back({v[v.size() / 2], v.front(), v.back()});
  }
  return out;
}

struct Case {
  const char* name;
  int layout;  // 0 planes, 1 dense, 2 word10
  double bytes_per_32;
  int instrs;  // per 32 codes, counted by hand: decode only, loads included, vpaddb and loop not
  __m256i (*sum)(const uint8_t*, size_t);
  void (*store)(const uint8_t*, size_t, uint8_t*);
};

int check(const char* what, const uint8_t* got, const uint8_t* want, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (got[i] != want[i]) {
      std::printf("FAIL %s: code %zu is %d, expected %d\n", what, i, got[i], want[i]);
      return 1;
    }
  return 0;
}

}  // namespace

int main() {
  const size_t sizes[2] = {size_t{16} << 10, size_t{256} << 20};
  // Passes per run: 16 Mi codes (about a millisecond) for the L1 size, one pass for the other.
  const int reps[2] = {1024, 1};
  const int runs[2] = {101, 21};

  const Case cases[] = {
      {"planes (Int3Dec)", 0, 12.0, 9, decode_sum<Planes>, decode_store<Planes>},
      {"dense/srlvd", 1, 12.0, 16, decode_sum<DenseDword>, decode_store<DenseDword>},
      {"dense/pair", 1, 12.0, 8, decode_sum<DensePair>, decode_store<DensePair>},
      {"word10/pair", 2, 12.8, 8, decode_sum<Word10Pair>, decode_store<Word10Pair>},
  };

  Stat res[2][5];
  uint64_t state = 0x9E3779B97F4A7C15ull;
  for (int s = 0; s < 2; ++s) {
    const size_t n = sizes[s], nblocks = n / 32;
    std::vector<uint8_t> codes(n), want(n), got(n + 32);
    for (auto& c : codes) {
      state ^= state << 13, state ^= state >> 7, state ^= state << 17;
      c = static_cast<uint8_t>(state >> 61);
    }
    std::vector<uint8_t> packed[3] = {std::vector<uint8_t>(bytes_planes(n) + kPad),
                                      std::vector<uint8_t>(bytes_dense(n) + kPad),
                                      std::vector<uint8_t>(bytes_word10(n) + kPad)};
    pack_planes(codes.data(), n, packed[0].data());
    pack_bits<pos_dense>(codes.data(), n, packed[1].data(), bytes_dense(n));
    pack_bits<pos_word10>(codes.data(), n, packed[2].data(), bytes_word10(n));

    int fails = 0;
    scalar_planes(packed[0].data(), n, want.data());
    fails += check("scalar planes", want.data(), codes.data(), n);
    scalar_bits<pos_dense>(packed[1].data(), n, want.data());
    fails += check("scalar dense", want.data(), codes.data(), n);
    scalar_bits<pos_word10>(packed[2].data(), n, want.data());
    fails += check("scalar word10", want.data(), codes.data(), n);
    for (const Case& c : cases) {
      const uint8_t* src = packed[c.layout].data();
      if (c.layout == 0) scalar_planes(src, n, want.data());
      if (c.layout == 1) scalar_bits<pos_dense>(src, n, want.data());
      if (c.layout == 2) scalar_bits<pos_word10>(src, n, want.data());
      c.store(src, nblocks, got.data());
      fails += check(c.name, got.data(), want.data(), n);
      // The timed loop adds the same vectors that were stored: its sum must match the stored bytes.
      alignas(32) uint8_t acc[32] = {};
      for (size_t i = 0; i < n; ++i) acc[i % 32] = static_cast<uint8_t>(acc[i % 32] + got[i]);
      alignas(32) uint8_t sum[32];
      _mm256_store_si256(reinterpret_cast<__m256i*>(sum), c.sum(src, nblocks));
      fails += check(c.name, sum, acc, 32);
    }
    if (fails) return 1;
    std::printf("size %zu codes: every decoder matches its scalar reference and the packed codes\n",
                n);

    std::vector<std::function<void()>> fns;
    for (const Case& c : cases) {
      const uint8_t* src = packed[c.layout].data();
      fns.push_back([=] { keep(c.sum(src, nblocks)); });
    }
    const uint8_t* src = packed[0].data();
    fns.push_back([=] { keep(read_sum(src, bytes_planes(n))); });
    const std::vector<Stat> st = time_all(fns, reps[s], runs[s]);
    std::copy(st.begin(), st.end(), res[s]);
  }

  // Columns: median codes/ns and GB/s of packed input, then the best run's GB/s (a neighbour on the
  // shared cores can only slow a run down, so the best run is the closest to the decoder's own
  // cost).
  std::printf("\n%-18s %5s %5s | %-26s | %-26s\n", "decoder", "B/32", "instr", "16 Ki codes (L1)",
              "256 Mi codes (DRAM)");
  std::printf("%-18s %5s %5s | %-26s | %-26s\n", "", "codes", "/32", "codes/ns  GB/s  best GB/s",
              "codes/ns  GB/s  best GB/s");
  auto row = [&](const char* name, double bpc, const char* instr, int k) {
    std::printf("%-18s %5.1f %5s", name, bpc, instr);
    for (int s = 0; s < 2; ++s) {
      const double n = static_cast<double>(sizes[s]), bytes = n / 32 * bpc;
      const Stat& r = res[s][k];
      std::printf(" | %8.2f %5.1f %9.1f  ", n / r.median * 1e-9, bytes / r.median * 1e-9,
                  bytes / r.lo * 1e-9);
    }
    std::printf("\n");
  };
  char buf[16];
  for (int k = 0; k < 4; ++k) {
    std::snprintf(buf, sizeof buf, "%d", cases[k].instrs);
    row(cases[k].name, cases[k].bytes_per_32, buf, k);
  }
  row("read (no decode)", 12.0, "-", 4);
  return 0;
}
