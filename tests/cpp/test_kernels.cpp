// Kernel-table test (csrc/core/kernels.h): the scalar generic table against loops written here and
// the int8 rule of csrc/formats/int8.h, then every SIMD table this machine runs against generic.
//
// quantize_row_int8 and gemm_s8 must agree bit for bit: codes and scales over all 255 codes, ties
// and non-finite rows; int32 products over ragged M/N/K with every value of [-127, 127] in both
// operands. gemm_f32_s8 may sum in any order, so it is held to K * eps * sum|x||w| around a double
// sum. Buffers end exactly where the kernels' ranges end, so reading past them is an ASan error;
// padding inside the buffers holds values that would change the result if a kernel used them.
//
// gemm_q (int4, int3, nf4) is checked against sums computed here from the spec's bit layout,
// written out independently of the format headers' accessors: exact integer group sums, scaled in
// double, with a tolerance of (groups + 8) * eps * sum|products| for the fp32 sums over lanes and
// groups.
//
// QKERNELS_ISA=<name> limits the run to that table (generic stays the reference). When this machine
// cannot run it, the program exits with 77, the code CTest and automake read as "skipped".
// The last line printed is "N passed, M failed"; the exit status is nonzero on failure.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "core/kernels.h"
#include "formats/grouped.h"
#include "formats/int3.h"
#include "formats/int4.h"
#include "formats/int8.h"
#include "formats/nf4.h"
#include "formats/vq.h"

namespace {

using qk::KernelTable;

int g_passed = 0, g_failed = 0;
std::string g_ctx;  // what is being tested, printed with each failure

// Counts one check; prints the first failures (a broken kernel fails thousands at once).
void check(bool ok, int line, const std::string& what) {
  if (ok) {
    ++g_passed;
    return;
  }
  if (++g_failed <= 40)
    std::fprintf(stderr, "FAIL line %d [%s]: %s\n", line, g_ctx.c_str(), what.c_str());
}
#define CHECK(cond, what) check((cond), __LINE__, (what))

std::string str(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

// xorshift64: reproducible across platforms.
struct Rng {
  uint64_t s = 0x2545f4914f6cdd1dull;
  uint32_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return static_cast<uint32_t>(s >> 32);
  }
  float uniform(float lo, float hi) {
    return lo + (hi - lo) * static_cast<float>(next() >> 8) / 16777216.0f;
  }
  int8_t code() { return static_cast<int8_t>(static_cast<int>(next() % 255) - 127); }
};

// The int8 activation panel that gemm_s8 expects: 64-byte aligned rows of lda bytes.
struct AlignedFree {
  void operator()(int8_t* p) const { ::operator delete[](p, std::align_val_t{64}); }
};
using Panel = std::unique_ptr<int8_t[], AlignedFree>;
Panel make_panel(int64_t bytes) {
  return Panel(
      static_cast<int8_t*>(::operator new[](static_cast<size_t>(bytes), std::align_val_t{64})));
}

bool same_float(float a, float b) {
  return (std::isnan(a) && std::isnan(b)) || std::memcmp(&a, &b, sizeof a) == 0;
}

// Checks an fp32 output block c [M, ldc] against reference(m, n) -> {value, tolerance} for n < N;
// the columns from N to ldc must still hold `guard` (nothing written past the block).
struct Expected {
  double value, tol;
};
template <typename Reference>
void check_block(const std::vector<float>& c, int64_t ldc, int64_t M, int64_t N, float guard,
                 int line, const Reference& reference) {
  int bad = 0;
  std::string first;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < ldc; ++n) {
      const float got = c[m * ldc + n];
      Expected e{guard, 0.0};
      bool ok;
      if (n < N) {
        e = reference(m, n);
        ok = std::fabs(got - e.value) <= e.tol;
      } else {
        ok = same_float(got, guard);
      }
      if (!ok && bad++ == 0)
        first = "c[" + std::to_string(m) + ", " + std::to_string(n) + "] = " + str(got) +
                ", expected " + str(e.value) + " within " + str(e.tol);
    }
  check(bad == 0, line, std::to_string(bad) + " wrong, first " + first);
}

// ---- quantize_row_int8 --------------------------------------------------------------------------

// Lengths around every vector width (4, 8, 16, 32, 64 lanes) plus long rows with tails.
constexpr int64_t kLengths[] = {0,  1,  3,  7,  8,  9,   15,  16,   17,  31,
                                32, 33, 63, 64, 65, 255, 256, 1000, 4097};

// Finite rows: each code times a scale (in a permuted order, so every lane sees every code), exact
// ties (k + 0.5) * 2^e and their float neighbours, random rows with the maximum placed at the
// start, the end and inside the vector body, zeros and negative zeros.
std::vector<std::vector<float>> finite_rows(Rng& rng) {
  std::vector<std::vector<float>> rows;
  const float scales[] = {1.0f,    0.5f,   0.1f,  3.7e-3f,
                          1234.5f, 1e-30f, 1e30f, 1.5e-41f /* subnormal */};
  for (float s : scales)
    for (int64_t n : {255, 273}) {
      std::vector<float> r(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) r[i] = static_cast<float>(i * 7 % 255 - 127) * s;
      rows.push_back(r);
    }
  for (int e : {-3, 0, 10, -130}) {
    const float s = std::ldexp(1.0f, e);  // scale = 127 s / 127 = s exactly, so each value is a tie
    for (float dir : {0.0f, 1.0f, -1.0f}) {
      std::vector<float> r{127.0f * s, -127.0f * s};
      for (int k = -127; k <= 126; ++k) {
        const float tie = (static_cast<float>(k) + 0.5f) * s;
        r.push_back(dir == 0.0f ? tie : std::nextafter(tie, dir * INFINITY));
      }
      rows.push_back(r);
    }
  }
  // Multiples of 2^-149: absmax / 127 rounds to 2^-149 from 64 * 2^-149 up, and underflows to 0
  // (scale 1, all codes 0) from 63 * 2^-149 down.
  for (int top : {127, 64, 63, 1}) {
    std::vector<float> r;
    for (int k = -top; k <= top; ++k) r.push_back(std::ldexp(static_cast<float>(k), -149));
    rows.push_back(r);
  }
  for (int64_t n : kLengths) {
    for (int64_t at : {int64_t{0}, n - 1, n / 2, int64_t{8}}) {
      if (at < 0 || at >= n) continue;
      const float mag = std::ldexp(1.0f, static_cast<int>(rng.next() % 60) - 30);
      std::vector<float> r(static_cast<size_t>(n));
      for (float& v : r) v = rng.uniform(-mag, mag);
      r[at] = (at % 2 ? -3.0f : 3.0f) * mag;
      rows.push_back(r);
    }
    rows.push_back(std::vector<float>(static_cast<size_t>(n), 0.0f));
    rows.push_back(std::vector<float>(static_cast<size_t>(n), -0.0f));
  }
  return rows;
}

// Runs quantize_row_int8 on a row copied into a buffer of exactly its length, with guard bytes
// after the codes; checks the guard and returns the scale.
float quantize(const KernelTable& t, const std::vector<float>& row, std::vector<int8_t>& q) {
  const auto n = static_cast<int64_t>(row.size());
  const std::unique_ptr<float[]> x(new float[static_cast<size_t>(n)]);
  std::copy(row.begin(), row.end(), x.get());
  q.assign(static_cast<size_t>(n + 64), 0x55);
  const float scale = t.quantize_row_int8(x.get(), n, q.data());
  bool guard = true;
  for (int64_t i = n; i < n + 64; ++i) guard = guard && q[i] == 0x55;
  CHECK(guard, "wrote past the end of q");
  q.resize(static_cast<size_t>(n));
  return scale;
}

void test_quantize(const KernelTable& t, const KernelTable& generic) {
  Rng rng;
  bool seen[256] = {};
  std::vector<int8_t> q, want;
  for (const std::vector<float>& row : finite_rows(rng)) {
    const auto n = static_cast<int64_t>(row.size());
    g_ctx = std::string(qk_isa_name(t.isa)) + " quantize_row_int8 n=" + std::to_string(n);
    const float scale = quantize(t, row, q);
    if (t.isa == QK_ISA_GENERIC) {
      // The rule of formats/int8.h, written out.
      float absmax = 0.0f;
      for (float v : row) absmax = std::max(absmax, std::fabs(v));
      const float want_scale = qk::int8::scale_from_absmax(absmax);
      want.resize(row.size());
      for (int64_t i = 0; i < n; ++i) want[i] = qk::int8::quantize_value(row[i], want_scale);
      CHECK(same_float(scale, want_scale), "scale " + str(scale) + ", expected " + str(want_scale));
    } else {
      const float want_scale = quantize(generic, row, want);
      CHECK(same_float(scale, want_scale), "scale " + str(scale) + ", generic " + str(want_scale));
    }
    int64_t bad = -1;
    for (int64_t i = 0; i < n && bad < 0; ++i)
      if (q[i] != want[i]) bad = i;
    CHECK(bad < 0, bad < 0
                       ? ""
                       : "x[" + std::to_string(bad) + "] = " + str(row[bad]) + ": code " +
                             std::to_string(q[bad]) + ", expected " + std::to_string(want[bad]));
    for (int8_t c : q) seen[static_cast<uint8_t>(c)] = true;
  }
  g_ctx = std::string(qk_isa_name(t.isa)) + " quantize_row_int8 codes";
  for (int c = -127; c <= 127; ++c)
    CHECK(seen[static_cast<uint8_t>(c)], "code " + std::to_string(c) + " never produced");
  CHECK(!seen[0x80], "produced -128");

  // NaN or Inf anywhere (first, middle, last, vector body or tail): NaN scale, all codes zero.
  for (int64_t n : kLengths) {
    for (float bad : {NAN, INFINITY, -INFINITY})
      for (int64_t at : {int64_t{0}, n / 2, n - 1}) {
        if (at < 0 || at >= n) continue;
        g_ctx = std::string(qk_isa_name(t.isa)) + " quantize_row_int8 n=" + std::to_string(n) +
                " x[" + std::to_string(at) + "]=" + str(bad);
        std::vector<float> row(static_cast<size_t>(n));
        for (float& v : row) v = rng.uniform(-100.0f, 100.0f);
        row[at] = bad;
        const float scale = quantize(t, row, q);
        bool zeros = true;
        for (int8_t c : q) zeros = zeros && c == 0;
        CHECK(std::isnan(scale), "scale " + str(scale) + ", expected NaN");
        CHECK(zeros, "codes of a non-finite row must be zero");
      }
  }
}

// ---- gemm_s8 ------------------------------------------------------------------------------------

constexpr int64_t kMs[] = {1, 2, 3, 4, 5, 7, 17};
constexpr int64_t kNs[] = {1, 2, 3, 4, 5, 8, 9, 17};
constexpr int64_t kKs[] = {1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 4097};

// Values walk [-127, 127] with strides coprime to 255, so a row of 255 or more holds each value
// once per period; some rows are all -127 or all 127, the largest sums of products.
int8_t a_value(int64_t m, int64_t k) {
  if (m % 5 == 3) return -127;
  return static_cast<int8_t>((m * 101 + k * 11) % 255 - 127);
}
int8_t b_value(int64_t n, int64_t k) {
  if (n % 4 == 2) return n % 8 == 2 ? -127 : 127;
  return static_cast<int8_t>((n * 53 + k * 7 + 3) % 255 - 127);
}

// Runs t.gemm_s8 on one shape; lda_extra widens the panel past round_up(K, 64).
void run_gemm_s8(const KernelTable& t, const KernelTable& generic, int64_t M, int64_t N, int64_t K,
                 int64_t lda_extra, bool (&seen_a)[256], bool (&seen_b)[256]) {
  g_ctx = std::string(qk_isa_name(t.isa)) + " gemm_s8 M=" + std::to_string(M) +
          " N=" + std::to_string(N) + " K=" + std::to_string(K) +
          " lda+=" + std::to_string(lda_extra);
  // The panel contract: lda >= round_up(K, kPanelAlign), zeros in the padding.
  const int64_t lda = qk::round_up(K, qk::kPanelAlign) + lda_extra, ldb = K + 5, ldc = N + 3;
  Panel a = make_panel(M * lda);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < lda; ++k) {
      a[m * lda + k] = k < K ? a_value(m, k) : 0;
      if (k < K) seen_a[static_cast<uint8_t>(a[m * lda + k])] = true;
    }
  // b ends at its last element; its row padding holds -128, which would break the SIMD sign
  // tricks if a kernel read it.
  std::vector<int8_t> b(static_cast<size_t>((N - 1) * ldb + K));
  for (int64_t i = 0; i < static_cast<int64_t>(b.size()); ++i) {
    b[i] = i % ldb < K ? b_value(i / ldb, i % ldb) : -128;
    if (i % ldb < K) seen_b[static_cast<uint8_t>(b[i])] = true;
  }
  constexpr int32_t kGuard = 0x7f7f7f7f;
  std::vector<int32_t> c(static_cast<size_t>(M * ldc), kGuard), want(c);
  t.gemm_s8(a.get(), lda, b.data(), ldb, c.data(), ldc, M, N, K);
  if (t.isa == QK_ISA_GENERIC) {
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        int64_t s = 0;
        for (int64_t k = 0; k < K; ++k) s += int64_t{a[m * lda + k]} * b[n * ldb + k];
        want[m * ldc + n] = static_cast<int32_t>(s);
      }
  } else {
    generic.gemm_s8(a.get(), lda, b.data(), ldb, want.data(), ldc, M, N, K);
  }
  int64_t bad = -1;
  for (int64_t i = 0; i < M * ldc && bad < 0; ++i)
    if (c[i] != want[i]) bad = i;
  CHECK(bad < 0, bad < 0 ? ""
                         : "c[" + std::to_string(bad / ldc) + ", " + std::to_string(bad % ldc) +
                               "] = " + std::to_string(c[bad]) + ", expected " +
                               std::to_string(want[bad]) + (bad % ldc >= N ? " (guard)" : ""));
}

void test_gemm_s8(const KernelTable& t, const KernelTable& generic) {
  bool seen_a[256] = {}, seen_b[256] = {};
  for (int64_t M : kMs)
    for (int64_t N : kNs)
      for (int64_t K : kKs)
        run_gemm_s8(t, generic, M, N, K, (M + N) % 3 == 0 ? 64 : 0, seen_a, seen_b);
  // K = 2^17 holds the largest sums that int32 must represent (127^2 * 2^17 < 2^31).
  run_gemm_s8(t, generic, 4, 3, qk::int8::kMaxK, 0, seen_a, seen_b);
  g_ctx = std::string(qk_isa_name(t.isa)) + " gemm_s8 inputs";
  for (int v = -127; v <= 127; ++v) {
    CHECK(seen_a[static_cast<uint8_t>(v)], "a never holds " + std::to_string(v));
    CHECK(seen_b[static_cast<uint8_t>(v)], "b never holds " + std::to_string(v));
  }
}

// ---- gemm_f32_s8 --------------------------------------------------------------------------------

// The dot-product kernel on its grid; the panel kernel (where the path has one) on rows around
// its 8-row tile, columns around its 16-column vectors and 48-column tile, K around its 256-k
// blocks and 4-k quads.
void test_gemm_f32_s8(const KernelTable& t, bool panel) {
  if (panel && t.gemm_f32_s8_panel == nullptr) return;
  const auto gemm = panel ? t.gemm_f32_s8_panel : t.gemm_f32_s8;
  const auto Ms =
      panel ? std::vector<int64_t>{1, 7, 8, 9, 17} : std::vector<int64_t>{1, 2, 3, 4, 5, 17};
  const auto Ns =
      panel ? std::vector<int64_t>{1, 15, 16, 17, 47, 49, 97} : std::vector<int64_t>{1, 3, 4, 5, 9};
  const auto Ks = panel ? std::vector<int64_t>{1, 3, 33, 255, 256, 257, 600}
                        : std::vector<int64_t>{1, 7, 8, 9, 15, 16, 17, 31, 33, 64, 65, 4097};
  Rng rng;
  for (int64_t M : Ms)
    for (int64_t N : Ns)
      for (int64_t K : Ks) {
        g_ctx = std::string(qk_isa_name(t.isa)) + (panel ? " gemm_f32_s8_panel" : " gemm_f32_s8") +
                " M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K);
        const int64_t ldx = K + 3, ldw = K + 5, ldc = N + 2;
        // x ends at its last element and holds NaN in its row padding; mixed magnitudes make the
        // sums cancel, which the bound (taken over |terms|) allows for.
        std::vector<float> x(static_cast<size_t>((M - 1) * ldx + K));
        for (int64_t i = 0; i < static_cast<int64_t>(x.size()); ++i)
          x[i] = i % ldx < K
                     ? std::ldexp(rng.uniform(-1.0f, 1.0f), static_cast<int>(rng.next() % 17) - 8)
                     : NAN;
        std::vector<int8_t> w(static_cast<size_t>((N - 1) * ldw + K));
        for (int8_t& v : w) v = rng.code();
        const float guard = -1234.5f;
        std::vector<float> c(static_cast<size_t>(M * ldc), guard);
        gemm(x.data(), ldx, w.data(), ldw, c.data(), ldc, M, N, K);
        check_block(c, ldc, M, N, guard, __LINE__, [&](int64_t m, int64_t n) {
          double sum = 0.0, mag = 0.0;
          for (int64_t k = 0; k < K; ++k) {
            const double p = double{x[m * ldx + k]} * w[n * ldw + k];
            sum += p;
            mag += std::fabs(p);
          }
          return Expected{sum,
                          static_cast<double>(K) * std::numeric_limits<float>::epsilon() * mag};
        });
      }
}

// ---- gemm_q
// ---------------------------------------------------------------------------------------

// The code of element k of a packed row, straight from docs/formats.md (not via formats/*.h);
// for the panel GEMM's int8 rows (kPanelS8), the signed byte itself.
int spec_code(int f, const uint8_t* row, int64_t k) {
  if (f == qk::kPanelS8) return static_cast<int8_t>(row[k]);
  if (f != qk::kQInt3) return k % 2 == 0 ? row[k / 2] & 0xF : row[k / 2] >> 4;
  const uint8_t* blk = row + (k / 32) * 12;
  const int i = static_cast<int>(k % 32);
  const int lo = (blk[i % 8] >> (2 * (i / 8))) & 3;
  const uint32_t hi =
      uint32_t{blk[8]} | uint32_t{blk[9]} << 8 | uint32_t{blk[10]} << 16 | uint32_t{blk[11]} << 24;
  return lo | static_cast<int>((hi >> i) & 1) << 2;
}

// Panel position of element k (panel order: int4/nf4 put even elements of a 32-block first).
int64_t spec_panel_pos(int f, int64_t k) {
  const int64_t b = k / 32, i = k % 32;
  if (f == qk::kQInt3 || f == qk::kPanelS8) return k;
  return b * 32 + (i % 2 == 0 ? i / 2 : 16 + i / 2);
}

// extreme: every byte 0xFF (the largest code: int4 15, int3 7, nf4 127; int8 rows: -1) and
// activations +-127 (the sign of row m), so that every int16 pair sum in the kernels is as large
// as it gets. panel: the panel GEMM (f may be kPanelS8) with its asum (plain group sums) and c
// starting at zero.
void run_gemm_q(const KernelTable& t, int f, int64_t M, int64_t N, int64_t K, int64_t gblocks,
                bool asym, Rng& rng, bool extreme = false, bool panel = false) {
  static const char* const names[] = {"int4", "int3", "nf4", "int8"};
  g_ctx = std::string(qk_isa_name(t.isa)) + (panel ? " gemm_panel " : " gemm_q ") + names[f] +
          " M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K) +
          " gb=" + std::to_string(gblocks) + (asym ? " asym" : " sym") +
          (extreme ? " extreme" : "");
  const int64_t nblocks = (K + 31) / 32;
  const int64_t groups = (nblocks + gblocks - 1) / gblocks;
  const int64_t rb = f == qk::kQInt3 ? nblocks * 12 : f == qk::kPanelS8 ? K : K / 2;
  const int codes = f == qk::kQInt3 ? 8 : 16;
  // Exactly N rows: a kernel reading past the last row is an ASan error.
  std::vector<uint8_t> packed(static_cast<size_t>(N * rb));
  for (uint8_t& b : packed)
    b = extreme             ? 0xFF
        : f == qk::kPanelS8 ? static_cast<uint8_t>(rng.code())
                            : static_cast<uint8_t>(rng.next());
  if (f == qk::kQInt3)  // padding codes of a partial last block are 0 in the spec
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = K; k < nblocks * 32; ++k) {
        uint8_t* blk = packed.data() + n * rb + (k / 32) * 12;
        const int i = static_cast<int>(k % 32);
        blk[i % 8] = static_cast<uint8_t>(blk[i % 8] & ~(3 << (2 * (i / 8))));
        blk[8 + i / 8] = static_cast<uint8_t>(blk[8 + i / 8] & ~(1 << (i % 8)));
      }
  std::vector<float> scales(static_cast<size_t>(N * groups));
  for (float& v : scales)
    v = std::ldexp(rng.uniform(-1.0f, 1.0f), static_cast<int>(rng.next() % 9) - 4);
  std::vector<uint8_t> zeros(static_cast<size_t>(N * groups));
  for (uint8_t& z : zeros) z = static_cast<uint8_t>(rng.next() % static_cast<uint32_t>(codes));
  const int sym_zero = f == qk::kQInt3 ? 4 : 8;
  const int64_t lda = (nblocks * 32 + 63) / 64 * 64;
  Panel a = make_panel(M * lda);
  std::vector<int8_t> xa(static_cast<size_t>(M * K));  // activation codes in element order
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t i = 0; i < lda; ++i) a[m * lda + i] = 0;
    for (int64_t k = 0; k < K; ++k) {
      xa[m * K + k] = extreme ? static_cast<int8_t>(m % 2 ? -127 : 127) : rng.code();
      a[m * lda + spec_panel_pos(f, k)] = xa[m * K + k];
    }
  }
  std::vector<float> sa(static_cast<size_t>(M * groups)), asum(sa.size() * 8, 0.0f);
  for (float& v : sa) v = rng.uniform(0.001f, 0.02f);
  for (int64_t m = 0; m < M; ++m)  // lane l: panel bytes 4l..4l+3 of every block of the group
    for (int64_t i = 0; i < nblocks * 32; ++i)
      asum[(m * groups + i / 32 / gblocks) * 8 + (i % 32) / 4] += a[m * lda + i];
  const bool zero_point = f == qk::kQInt4 || f == qk::kQInt3;
  const qk::QWeights w{packed.data(),
                       rb,
                       scales.data(),
                       asym ? zeros.data() : nullptr,
                       zero_point ? sym_zero : 0,
                       groups,
                       gblocks,
                       K};
  const int64_t ldc = N + 2;
  const float guard = -1234.5f;
  std::vector<float> c(static_cast<size_t>(M * ldc), guard);
  if (panel) {
    std::vector<float> total(sa.size());
    for (size_t i = 0; i < total.size(); ++i)
      for (int l = 0; l < 8; ++l) total[i] += asum[i * 8 + l];
    // Garbage where the kernel writes: it must write, not accumulate.
    for (int64_t m = 0; m < M; ++m) std::fill_n(c.begin() + m * ldc, N, NAN);
    t.gemm_panel[f](w, a.get(), lda, sa.data(), total.data(), groups, c.data(), ldc, M, N);
  } else {
    t.gemm_q[f](w, a.get(), lda, sa.data(), asum.data(), groups, c.data(), ldc, M, N);
  }
  check_block(c, ldc, M, N, guard, __LINE__, [&](int64_t m, int64_t n) {
    double sum = 0.0, mag = 0.0;
    for (int64_t g = 0; g < groups; ++g) {
      const int zero = !zero_point ? 0 : asym ? zeros[n * groups + g] : sym_zero;
      int64_t isum = 0, iabs = 0;
      for (int64_t k = g * gblocks * 32; k < std::min(K, (g + 1) * gblocks * 32); ++k) {
        const int code = spec_code(f, packed.data() + n * rb, k);
        const int v = f == qk::kQNF4 ? qk::nf4::kTableInt8[code] : code - zero;
        isum += int64_t{xa[m * K + k]} * v;
        iabs += std::abs(int64_t{xa[m * K + k]} * v);
      }
      const double s = double{sa[m * groups + g]} * double{scales[n * groups + g]};
      sum += static_cast<double>(isum) * s;
      // Kernels may split a group's integer sum into lanes and scale each: bound by |terms|.
      mag += static_cast<double>(iabs) * std::fabs(s);
    }
    // Each lane's partial sum is rounded once per group and once in the final reduction.
    return Expected{sum,
                    static_cast<double>(groups + 8) * std::numeric_limits<float>::epsilon() * mag};
  });
}

void test_gemm_q(const KernelTable& t) {
  Rng rng;
  for (qk::QFormat f : {qk::kQInt4, qk::kQInt3, qk::kQNF4})
    for (int64_t M : {1, 2, 3, 4, 5, 17})
      for (int64_t N : {1, 3, 4, 5, 9})
        for (int64_t K : {2, 30, 32, 34, 64, 100, 130, 4098})
          for (int64_t gb : {1, 2, 4, 1000})
            for (bool asym : {false, true}) {
              if (f == qk::kQNF4 && (asym || gb > 8)) continue;  // nf4: no zeros, blocks <= 256
              run_gemm_q(t, f, M, N, K, std::min<int64_t>(gb, (K + 31) / 32), asym, rng);
            }
  // The largest products: a vpmaddubsw pair sum reaches 2 * 15 * 127 (int4) and 2 * 127 * 127 =
  // 32258 (nf4, just under int16's limit), and the raw codes meet the zero point only afterwards;
  // groups of 1 to 40 blocks.
  for (qk::QFormat f : {qk::kQInt4, qk::kQInt3, qk::kQNF4})
    for (int64_t gb : {1, 8, 9, 18, 19, 40})
      for (bool asym : {false, true}) {
        if (f == qk::kQNF4 && (asym || gb > 8)) continue;
        run_gemm_q(t, f, 4, 5, 40 * 32, gb, asym, rng, true);
      }
}

// The panel GEMM (where the path has one): row counts around its 8-row register tile and past
// its 256-row task; columns around its 16-column vectors and 48-column tile; K blocks of 256
// with groups inside one, across several and ending mid-block; whole-row int8 groups.
void test_gemm_panel(const KernelTable& t) {
  if (t.gemm_panel == nullptr) return;
  Rng rng;
  for (int f : {int{qk::kQInt4}, int{qk::kQInt3}, int{qk::kQNF4}, qk::kPanelS8})
    for (int64_t M : {1, 7, 8, 9, 17})
      for (int64_t N : {1, 15, 16, 17, 47, 49, 97})
        for (int64_t K : {2, 34, 256, 258, 800})
          for (int64_t gb : {1, 3, 8, 9, 1000})
            for (bool asym : {false, true}) {
              if (f == qk::kQNF4 && (asym || gb > 8)) continue;
              if (f == qk::kPanelS8 && (asym || gb != 1000)) continue;
              run_gemm_q(t, f, M, N, K, std::min<int64_t>(gb, (K + 31) / 32), asym, rng, false,
                         true);
            }
  for (int f : {int{qk::kQInt4}, int{qk::kQNF4}, qk::kPanelS8}) {
    run_gemm_q(t, f, 300, 50, 4098, f == qk::kPanelS8 ? 129 : 4, false, rng, false, true);
    run_gemm_q(t, f, 4, 5, 40 * 32, f == qk::kPanelS8 ? 40 : 1, false, rng, true, true);
  }
}

// ---- gemm_vq ------------------------------------------------------------------------------------

template <typename Code>
void run_gemm_vq(const KernelTable& t, bool panel, int mc, int bits, int64_t M, int64_t N,
                 int64_t K, Rng& rng) {
  g_ctx = std::string(qk_isa_name(t.isa)) + (panel ? " gemm_vq_panel " : " gemm_vq ") +
          std::to_string(mc) + "x" + std::to_string(bits) + " M=" + std::to_string(M) +
          " N=" + std::to_string(N) + " K=" + std::to_string(K);
  const int64_t groups = K / 8, entries = int64_t{1} << bits;
  std::vector<float> cb(static_cast<size_t>(mc * entries * 8));
  for (float& v : cb) v = rng.uniform(-1.0f, 1.0f);
  // Exactly N rows of codes; indices include the largest one.
  std::vector<Code> codes(static_cast<size_t>(N * groups * mc));
  for (Code& c : codes) c = static_cast<Code>(rng.next() % static_cast<uint32_t>(entries));
  if (!codes.empty()) codes.back() = static_cast<Code>(entries - 1);
  const int64_t ldx = K + 3, ldc = N + 2;
  std::vector<float> x(static_cast<size_t>((M - 1) * ldx + K));
  for (int64_t i = 0; i < static_cast<int64_t>(x.size()); ++i)
    x[i] = i % ldx < K ? rng.uniform(-2.0f, 2.0f) : NAN;  // NaN padding must never be read
  const float guard = -1234.5f;
  std::vector<float> c(static_cast<size_t>(M * ldc), guard);
  const qk::VQWeights w{codes.data(), cb.data(), K};
  (panel ? t.gemm_vq_panel : t.gemm_vq)[qk::vq::variant(mc, bits)](w, x.data(), ldx, c.data(), ldc,
                                                                   M, N);
  check_block(c, ldc, M, N, guard, __LINE__, [&](int64_t m, int64_t n) {
    double sum = 0.0, mag = 0.0;
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t k = 0; k < 8; ++k) {
        double wk = 0.0;
        for (int q = 0; q < mc; ++q)
          wk += cb[(q * entries + codes[(n * groups + g) * mc + q]) * 8 + k];
        const double p = double{x[m * ldx + g * 8 + k]} * wk;
        sum += p;
        mag += std::fabs(p);
      }
    return Expected{sum, static_cast<double>(K + 2) * std::numeric_limits<float>::epsilon() * mag};
  });
}

// The dot-product kernel on its grid; the panel kernel (where the path has one) around its 8-row
// tile, 16-column vectors, 48-column tile and 256-k blocks.
void test_gemm_vq(const KernelTable& t, bool panel) {
  if (panel && t.gemm_vq_panel == nullptr) return;
  const auto Ms =
      panel ? std::vector<int64_t>{1, 7, 8, 9, 17} : std::vector<int64_t>{1, 2, 3, 4, 5, 17};
  const auto Ns =
      panel ? std::vector<int64_t>{1, 15, 16, 17, 49} : std::vector<int64_t>{1, 3, 4, 5, 9};
  const auto Ks =
      panel ? std::vector<int64_t>{8, 248, 256, 264, 1000} : std::vector<int64_t>{8, 16, 24, 1000};
  Rng rng;
  for (int mc : {1, 2})
    for (int bits : {8, 16})
      for (int64_t M : Ms)
        for (int64_t N : Ns)
          for (int64_t K : Ks) {
            if (bits == 8)
              run_gemm_vq<uint8_t>(t, panel, mc, bits, M, N, K, rng);
            else
              run_gemm_vq<uint16_t>(t, panel, mc, bits, M, N, K, rng);
          }
}

}  // namespace

int main() {
  const KernelTable* generic = qk::kernels_generic();
  const char* env = std::getenv("QKERNELS_ISA");
  std::vector<qk_isa> selected;
  if (env != nullptr && *env != '\0') {
    int named = -1;
    for (int i = 0; i < QK_ISA_COUNT; ++i)
      if (std::strcmp(env, qk_isa_name(static_cast<qk_isa>(i))) == 0) named = i;
    if (named < 0) {
      std::fprintf(stderr, "QKERNELS_ISA: expected generic, avx2, avx512 or neon, got '%s'\n", env);
      return 2;
    }
    if (!qk_isa_available(static_cast<qk_isa>(named))) {
      std::printf("skipped: QKERNELS_ISA=%s cannot run on this machine or build\n", env);
      return 77;
    }
    selected.push_back(static_cast<qk_isa>(named));
  } else {
    for (int i = 0; i < QK_ISA_COUNT; ++i)
      if (qk_isa_available(static_cast<qk_isa>(i))) selected.push_back(static_cast<qk_isa>(i));
  }
  // Only a runnable path's accessor is called: its translation unit is built for that ISA.
  for (qk_isa isa : selected) {
    const KernelTable* t = isa == QK_ISA_GENERIC  ? generic
                           : isa == QK_ISA_AVX2   ? qk::kernels_avx2()
                           : isa == QK_ISA_AVX512 ? qk::kernels_avx512()
                                                  : qk::kernels_neon();
    g_ctx = qk_isa_name(isa);
    CHECK(t != nullptr && t->isa == isa, "table of a runnable path missing or mislabelled");
    if (t == nullptr) continue;
    std::printf("testing %s\n", qk_isa_name(isa));
    test_quantize(*t, *generic);
    test_gemm_s8(*t, *generic);
    test_gemm_f32_s8(*t, false);
    test_gemm_f32_s8(*t, true);
    test_gemm_q(*t);
    test_gemm_panel(*t);
    test_gemm_vq(*t, false);
    test_gemm_vq(*t, true);
  }
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed != 0;
}
