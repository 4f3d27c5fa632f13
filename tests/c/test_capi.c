/* C ABI test: every entry point of qkernels.h on every ISA path this machine runs, checked against
 * scalar loops written here, then every kind of bad argument.
 *
 * Exact: quantization codes and scales, int32 products and the W8A8 epilogue (qkernels.h defines
 * it bit for bit; this file must build with -ffp-contract=off, as CMakeLists.txt sets). W8A16 sums
 * in fp32 in any order, so it is held to a bound derived from the magnitudes of its terms.
 *
 * QKERNELS_ISA: unset, every available path is tested through qk_set_isa(). Naming a path this
 * machine runs, that path must be the active one and is tested without qk_set_isa(). Naming
 * anything else, every kernel entry point must fail with QK_ERR_UNSUPPORTED until qk_set_isa()
 * succeeds. The last line printed is "N passed, M failed"; the exit status is nonzero on failure.
 */
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qkernels.h"
#include "reference.h"

static int g_passed, g_failed;
static char g_ctx[160]; /* what is being tested, printed with each failure */

/* Counts one check; prints the first failures (a broken kernel fails thousands at once). */
static void check(int ok, int line, const char* fmt, ...) {
  if (ok) {
    ++g_passed;
    return;
  }
  if (++g_failed <= 40) {
    va_list args;
    va_start(args, fmt);
    fprintf(stderr, "FAIL line %d [%s]: ", line, g_ctx);
    vfprintf(stderr, fmt, args);
    fputc('\n', stderr);
    va_end(args);
  }
}
#define CHECK(cond, ...) check((cond) != 0, __LINE__, __VA_ARGS__)

/* A call must return `want` and leave a message that contains `needle` (e.g. "fn: arg:"). */
static void expect_status(qk_status got, qk_status want, const char* needle, const char* call,
                          int line) {
  const char* msg = qk_last_error();
  if (got != want)
    check(0, line, "%s: expected %s, got %s ('%s')", call, qk_status_name(want),
          qk_status_name(got), msg);
  else if (want == QK_OK)
    check(msg[0] == '\0', line, "%s: succeeded but left the message '%s'", call, msg);
  else
    check(strstr(msg, needle) != NULL, line, "%s: message '%s' does not contain '%s'", call, msg,
          needle);
}
#define EXPECT_STATUS(call, want, needle) expect_status((call), (want), (needle), #call, __LINE__)
#define EXPECT_OK(call) expect_status((call), QK_OK, "", #call, __LINE__)

/* msg says "row <r>" (and not "row <r>0"). */
static int names_row(const char* msg, int64_t r) {
  char needle[32];
  snprintf(needle, sizeof needle, "row %lld", (long long)r);
  const char* at = strstr(msg, needle);
  return at != NULL && (at[strlen(needle)] < '0' || at[strlen(needle)] > '9');
}

/* ---- data ------------------------------------------------------------------------------------ */

static uint64_t g_rng = 0x9e3779b97f4a7c15u;
static uint32_t rnd(void) { /* xorshift64: reproducible across platforms */
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return (uint32_t)(g_rng >> 32);
}
static float rnd_float(float lo, float hi) {
  return lo + (hi - lo) * (float)(rnd() >> 8) / 16777216.0f;
}
static int8_t rnd_code(void) { return (int8_t)((int)(rnd() % 255) - 127); }

static void* xmalloc(size_t n) {
  void* p = malloc(n ? n : 1);
  if (p == NULL) {
    fprintf(stderr, "out of memory\n");
    exit(2);
  }
  return p;
}

/* ---- numerical checks, one ISA path ---------------------------------------------------------- */

typedef struct {
  int64_t M, N, K;
} shape;
/* Ragged everywhere; the large ones span several thread tasks and ragged tile edges. */
static const shape kShapes[] = {{1, 1, 1},      {1, 67, 4097},  {3, 13, 31},    {3, 37, 4097},
                                {17, 7, 65},    {17, 67, 1},    {17, 67, 4097}, {118, 13, 31},
                                {118, 37, 130}, {118, 300, 64}, {3, 5, 0}};
#define N_SHAPES (sizeof kShapes / sizeof kShapes[0])
static const qk_dtype kDtypes[] = {QK_F32, QK_BF16, QK_F16};

/* Row kinds: random at a random magnitude, exact ties after scaling, zeros, exact codes. */
static void fill_row(void* x, qk_dtype d, int64_t ld, int64_t r, int64_t n) {
  /* 2^-20 .. 2^19, narrower for f16 so that 127 times it stays finite. */
  const int e = d == QK_F16 ? (int)(rnd() % 20) - 12 : (int)(rnd() % 40) - 20;
  const float mag = ldexpf(1.0f, e), s = 0.125f;
  for (int64_t i = 0; i < n; ++i) {
    float v;
    switch (r % 4) {
      case 0:
        v = rnd_float(-mag, mag);
        break;
      /* absmax 127 * 2^-3 gives scale 2^-3 exactly, so (k + 0.5) * 2^-3 / scale is a tie. */
      case 1:
        v = i == 0 ? 127.0f * s : ((float)(i * 7 % 254) - 126.5f) * s;
        break;
      case 2:
        v = 0.0f;
        break;
      default:
        v = (float)(i * 11 % 255 - 127) * mag;
        break;
    }
    put(x, d, r * ld + i, v);
  }
}

static void test_quantize(qk_dtype d) {
  for (size_t si = 0; si < N_SHAPES; ++si) {
    const int64_t rows = kShapes[si].M, cols = kShapes[si].K, ldw = cols + 3;
    snprintf(g_ctx, sizeof g_ctx, "%s quantize %s rows=%lld cols=%lld",
             qk_isa_name(qk_isa_active()), dtype_name(d), (long long)rows, (long long)cols);
    void* w = xmalloc((size_t)(rows * ldw) * dtype_size(d));
    int8_t* q = xmalloc((size_t)(rows * cols + 16));
    int8_t* want_q = xmalloc((size_t)(cols + 1));
    float* scales = xmalloc((size_t)rows * sizeof(float));
    float* row = xmalloc((size_t)(cols + 1) * sizeof(float));
    for (int64_t r = 0; r < rows; ++r) {
      fill_row(w, d, ldw, r, cols);
      for (int64_t i = cols; i < ldw; ++i) put(w, d, r * ldw + i, NAN); /* must not be read */
    }
    memset(q, 0x55, (size_t)(rows * cols + 16));
    EXPECT_OK(qk_quantize_int8(w, d, rows, cols, ldw, q, scales));
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t i = 0; i < cols; ++i) row[i] = get(w, d, r * ldw + i);
      const float want = ref_quantize_row(row, cols, want_q);
      CHECK(scales[r] == want, "row %lld: scale %a, expected %a", (long long)r, scales[r], want);
      int64_t bad = -1;
      for (int64_t i = 0; i < cols && bad < 0; ++i)
        if (q[r * cols + i] != want_q[i]) bad = i;
      CHECK(bad < 0, "row %lld: code %d at column %lld, expected %d", (long long)r,
            bad < 0 ? 0 : q[r * cols + bad], (long long)bad, bad < 0 ? 0 : want_q[bad]);
    }
    CHECK(q[rows * cols] == 0x55, "wrote past the end of q");

    /* The first row holding NaN or Inf is named, wherever in the row (vector body or tail). */
    if (rows >= 3 && cols >= 1) {
      const float bad_values[] = {NAN, INFINITY, -INFINITY};
      put(w, d, (rows - 1) * ldw + cols / 2, NAN);
      for (int b = 0; b < 3; ++b) {
        put(w, d, 2 * ldw + (cols - 1) * (b % 2), bad_values[b]);
        EXPECT_STATUS(qk_quantize_int8(w, d, rows, cols, ldw, q, scales), QK_ERR_INVALID_ARGUMENT,
                      "qk_quantize_int8: w:");
        CHECK(names_row(qk_last_error(), 2), "'%s' does not name row 2", qk_last_error());
        fill_row(w, d, ldw, 2, cols);
      }
    }
    free(w), free(q), free(want_q), free(scales), free(row);
  }
}

static void test_matmul(void) {
  for (size_t si = 0; si < N_SHAPES; ++si) {
    const int64_t M = kShapes[si].M, N = kShapes[si].N, K = kShapes[si].K;
    const int64_t lda = (K > 0 ? K : 1) + 5 * (int64_t)(si % 2), ldb = K + 3, ldc = N + 2;
    snprintf(g_ctx, sizeof g_ctx, "%s matmul M=%lld N=%lld K=%lld lda=%lld",
             qk_isa_name(qk_isa_active()), (long long)M, (long long)N, (long long)K,
             (long long)lda);
    int8_t* a = xmalloc((size_t)(M * lda));
    int8_t* b = xmalloc((size_t)(N * ldb));
    int32_t* c = xmalloc((size_t)(M * ldc) * sizeof(int32_t));
    /* -128 in the padding is outside the matrices: it must be neither read nor rejected. */
    for (int64_t i = 0; i < M * lda; ++i) a[i] = i % lda < K ? rnd_code() : -128;
    for (int64_t i = 0; i < N * ldb; ++i) b[i] = i % ldb < K ? rnd_code() : -128;
    if (M >= 3) memset(a + lda, -127, (size_t)K); /* extreme sums */
    for (int64_t i = 0; i < M * ldc; ++i) c[i] = 0x5a5a5a5a;
    EXPECT_OK(qk_matmul_int8(a, lda, b, ldb, c, ldc, M, N, K));
    int bad = 0;
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < ldc; ++n) {
        int32_t want = 0x5a5a5a5a;
        if (n < N) {
          want = 0;
          for (int64_t k = 0; k < K; ++k) want += (int32_t)a[m * lda + k] * b[n * ldb + k];
        }
        if (c[m * ldc + n] != want && bad++ == 0)
          CHECK(0, "c[%lld, %lld] = %d, expected %d", (long long)m, (long long)n, c[m * ldc + n],
                want);
      }
    CHECK(bad == 0, "%d wrong elements of c", bad);
    free(a), free(b), free(c);
  }
  /* K = 2^17 at full magnitude: the largest sums int32 must hold, +-127^2 * 2^17. */
  snprintf(g_ctx, sizeof g_ctx, "%s matmul K=2^17", qk_isa_name(qk_isa_active()));
  const int64_t K = (int64_t)1 << 17;
  int8_t* a = xmalloc((size_t)K);
  int8_t* b = xmalloc((size_t)(2 * K));
  int32_t c[2] = {0, 0};
  memset(a, -127, (size_t)K);
  memset(b, 127, (size_t)K);
  memset(b + K, -127, (size_t)K);
  EXPECT_OK(qk_matmul_int8(a, K, b, K, c, 2, 1, 2, K));
  CHECK(c[0] == -2114060288 && c[1] == 2114060288, "got %d, %d", c[0], c[1]);
  free(a), free(b);
}

/* Per output dtype: ties that round to even either way, values just below a tie, the largest
 * finite value and the first one that overflows, subnormals and the ties around them. */
static const float kRoundingCases[3][12] = {
    {0.0f, -0.0f, 0x1p-149f, -0x1p-149f, 0x1.fffffep127f, 1.0f, -1.5f, 0.1f, 3.0f, -7.0f, 1e-3f,
     2.0f},
    {0x1.01p0f, 0x1.03p0f, -0x1.05p0f, 0x1.008p0f, 0x1.fcp127f, 0x1.fdp127f, -0x1.fep127f,
     0x1p-133f, 0x1p-134f, 0x3p-134f, 0x3p-135f, 0x1.fep-127f},
    {0x1.002p0f, 0x1.006p0f, -0x1.00ap0f, 0x5p-25f, 65504.0f, 65519.99f, 65520.0f, -70000.0f,
     0x1p-24f, 0x1p-25f, 0x3p-25f, 0x1.ffcp-15f}};

/* Runs one linear op on every shape and dtype and compares with a scalar loop: exactly for W8A8,
 * within the bound of an fp32 sum for W8A16. */
static void test_linear(int w8a8, qk_dtype d) {
  const char* op = w8a8 ? "w8a8" : "w8a16";
  for (size_t si = 0; si < N_SHAPES; ++si) {
    const int64_t M = kShapes[si].M, N = kShapes[si].N, K = kShapes[si].K;
    const int64_t ldx = K + 2, ldy = N + 3;
    const int with_bias = si % 2 == 0;
    snprintf(g_ctx, sizeof g_ctx, "%s %s %s M=%lld N=%lld K=%lld bias=%d threads=%d",
             qk_isa_name(qk_isa_active()), op, dtype_name(d), (long long)M, (long long)N,
             (long long)K, with_bias, qk_get_num_threads());
    const size_t es = dtype_size(d);
    void* x = xmalloc((size_t)(M * ldx) * es);
    void* y = xmalloc((size_t)(M * ldy) * es);
    void* want = xmalloc((size_t)(M * ldy) * es);
    int8_t* w = xmalloc((size_t)(N * K));
    int8_t* xq = xmalloc((size_t)(K + 1));
    float* w_scale = xmalloc((size_t)N * sizeof(float));
    float* bias = xmalloc((size_t)N * sizeof(float));
    float* row = xmalloc((size_t)(K + 1) * sizeof(float));
    for (int64_t m = 0; m < M; ++m)
      for (int64_t k = 0; k < ldx; ++k)
        put(x, d, m * ldx + k, k < K ? rnd_float(-4.0f, 4.0f) : NAN);
    if (M >= 3 && K >= 1) put(x, d, 1 * ldx + K / 2, NAN); /* row 1 becomes NaN */
    if (M >= 3)
      for (int64_t k = 0; k < K; ++k) put(x, d, 2 * ldx + k, 0.0f); /* row 2 is bias alone */
    for (int64_t i = 0; i < N * K; ++i) w[i] = rnd_code();
    for (int64_t n = 0; n < N; ++n)
      w_scale[n] = rnd_float(1e-3f, 1e-2f), bias[n] = rnd_float(-2, 2);
    /* Row 2 (zeros) gives y = bias exactly, so W8A8 checks how the output is rounded on these. */
    if (w8a8) memcpy(bias, kRoundingCases[d], (size_t)(N < 12 ? N : 12) * sizeof(float));
    memset(y, 0xa5, (size_t)(M * ldy) * es);
    memcpy(want, y, (size_t)(M * ldy) * es);
    const float* b = with_bias ? bias : NULL;
    if (w8a8)
      EXPECT_OK(qk_linear_int8_w8a8(x, d, ldx, w, w_scale, b, y, ldy, M, N, K));
    else
      EXPECT_OK(qk_linear_int8_w8a16(x, d, ldx, w, w_scale, b, y, ldy, M, N, K));

    int bad = 0;
    /* Half an ulp of the output dtype, relative, plus half its smallest subnormal. */
    const double out_rel = d == QK_F32 ? 0.0 : d == QK_BF16 ? 0x1p-8 : 0x1p-11;
    const double out_abs = d == QK_F16 ? 0x1p-25 : 0.0;
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t k = 0; k < K; ++k) row[k] = get(x, d, m * ldx + k);
      const float sx = ref_quantize_row(row, K, xq);
      for (int64_t n = 0; n < N; ++n) {
        const int8_t* wn = w + n * K;
        const float bn = b ? b[n] : 0.0f;
        if (w8a8) {
          int32_t acc = 0;
          for (int64_t k = 0; k < K; ++k) acc += (int32_t)xq[k] * wn[k];
          const float s = sx * w_scale[n];
          float v = (float)acc * s;
          if (b) v = v + bn;
          put(want, d, m * ldy + n, v);
          if (!same(y, want, d, m * ldy + n) && bad++ == 0)
            CHECK(0, "y[%lld, %lld] = %a, expected %a", (long long)m, (long long)n,
                  get(y, d, m * ldy + n), get(want, d, m * ldy + n));
          continue;
        }
        double sum = 0.0, mag = 0.0;
        for (int64_t k = 0; k < K; ++k)
          sum += (double)row[k] * wn[k], mag += fabs((double)row[k] * wn[k]);
        const double ref = sum * w_scale[n] + bn;
        const double err32 = (double)(K + 2) * FLT_EPSILON * (mag * w_scale[n] + fabs(bn));
        const double tol = err32 + out_rel * (fabs(ref) + err32) + out_abs;
        const float got = get(y, d, m * ldy + n);
        const int ok = isnan(ref) ? isnan(got) : fabs(got - ref) <= tol;
        if (!ok && bad++ == 0)
          CHECK(0, "y[%lld, %lld] = %.9g, expected %.9g within %.3g", (long long)m, (long long)n,
                got, ref, tol);
      }
    }
    for (int64_t i = 0; i < M * ldy; ++i)
      if (i % ldy >= N && !same(y, want, d, i) && bad++ == 0)
        CHECK(0, "wrote y[%lld, %lld], past column N", (long long)(i / ldy), (long long)(i % ldy));
    CHECK(bad == 0, "%d wrong elements of y", bad);
    free(x), free(y), free(want), free(w), free(xq), free(w_scale), free(bias), free(row);
  }
}

static void test_isa(void) {
  const char* engine = qk_isa_engine();
  CHECK(engine != NULL && engine[0] != '\0', "qk_isa_engine() names no engine for %s",
        qk_isa_name(qk_isa_active()));
  for (size_t i = 0; i < 3; ++i) test_quantize(kDtypes[i]);
  test_matmul();
  for (size_t i = 0; i < 3; ++i) {
    /* Alternate 1 (the serial path) and 3 threads (an uneven split of the tasks). */
    EXPECT_OK(qk_set_num_threads(i % 2 ? 1 : 3));
    test_linear(1, kDtypes[i]);
    test_linear(0, kDtypes[i]);
  }
  EXPECT_OK(qk_set_num_threads(2));
}

/* ---- library state and bad arguments --------------------------------------------------------- */

static void test_state(void) {
  snprintf(g_ctx, sizeof g_ctx, "library state");
  char version[32];
  snprintf(version, sizeof version, "%d.%d.%d", QK_VERSION_MAJOR, QK_VERSION_MINOR,
           QK_VERSION_PATCH);
  CHECK(strcmp(qk_version(), version) == 0, "qk_version() = '%s', expected '%s'", qk_version(),
        version);
  CHECK(strcmp(qk_status_name(QK_ERR_UNSUPPORTED), "QK_ERR_UNSUPPORTED") == 0, "qk_status_name");
  const char* names[QK_ISA_COUNT] = {"generic", "avx2", "avx512", "neon"};
  for (int i = 0; i < QK_ISA_COUNT; ++i)
    CHECK(qk_isa_name((qk_isa)i) && strcmp(qk_isa_name((qk_isa)i), names[i]) == 0,
          "qk_isa_name(%d)", i);
  CHECK(qk_isa_name(QK_ISA_COUNT) == NULL && qk_isa_name((qk_isa)-1) == NULL,
        "qk_isa_name out of range");
  CHECK(qk_isa_available(QK_ISA_GENERIC) == 1, "generic must always be available");
  CHECK(!qk_isa_available(QK_ISA_COUNT) && !qk_isa_available((qk_isa)-1),
        "qk_isa_available out of range");
#if defined(__x86_64__)
  CHECK(!qk_isa_available(QK_ISA_NEON), "neon on x86-64");
#elif defined(__aarch64__)
  CHECK(qk_isa_available(QK_ISA_NEON) && !qk_isa_available(QK_ISA_AVX2),
        "neon is baseline on AArch64");
#endif
  const qk_isa active = qk_isa_active();
  CHECK((int)active >= 0 && (int)active < QK_ISA_COUNT && qk_isa_available(active),
        "qk_isa_active() = %d", active);
  EXPECT_OK(qk_set_num_threads(3));
  CHECK(qk_get_num_threads() == 3, "qk_get_num_threads() = %d", qk_get_num_threads());
}

/* QKERNELS_ISA names a path that cannot run: the kernels refuse, saying why, until qk_set_isa(). */
static void expect_env_error(qk_status got, const char* fn, const char* env, int line) {
  char needle[96], quoted[64];
  snprintf(needle, sizeof needle, "%s: QKERNELS_ISA:", fn);
  snprintf(quoted, sizeof quoted, "'%s'", env);
  expect_status(got, QK_ERR_UNSUPPORTED, needle, fn, line);
  check(strstr(qk_last_error(), quoted) != NULL, line, "'%s' does not name %s", qk_last_error(),
        quoted);
}

static void test_env_unsupported(const char* env) {
  snprintf(g_ctx, sizeof g_ctx, "QKERNELS_ISA=%s", env);
  int8_t a[4] = {1, 2, 3, 4}, q[4];
  float x[4] = {1, 2, 3, 4}, s[1] = {1}, y[1];
  int32_t c[1] = {0};
  expect_env_error(qk_quantize_int8(x, QK_F32, 1, 4, 4, q, s), "qk_quantize_int8", env, __LINE__);
  expect_env_error(qk_matmul_int8(a, 4, a, 4, c, 1, 1, 1, 4), "qk_matmul_int8", env, __LINE__);
  expect_env_error(qk_linear_int8_w8a8(x, QK_F32, 4, a, s, NULL, y, 1, 1, 1, 4),
                   "qk_linear_int8_w8a8", env, __LINE__);
  expect_env_error(qk_linear_int8_w8a16(x, QK_F32, 4, a, s, NULL, y, 1, 1, 1, 4),
                   "qk_linear_int8_w8a16", env, __LINE__);
  /* Even calls with nothing to compute refuse: the caller asked for a path it cannot have. */
  expect_env_error(qk_matmul_int8(NULL, 1, NULL, 1, NULL, 1, 0, 0, 0), "qk_matmul_int8", env,
                   __LINE__);
  EXPECT_OK(qk_set_isa(QK_ISA_GENERIC));
  EXPECT_OK(qk_matmul_int8(a, 4, a, 4, c, 1, 1, 1, 4));
  CHECK(c[0] == 30, "after qk_set_isa: c = %d, expected 30", c[0]);
}

typedef qk_status (*linear_fn)(const void*, qk_dtype, int64_t, const int8_t*, const float*,
                               const float*, void*, int64_t, int64_t, int64_t, int64_t);

/* Expects QK_ERR_INVALID_ARGUMENT and a message "<fn>: <arg>: ...". */
static void expect_invalid(qk_status got, const char* fn, const char* arg, int line) {
  char needle[96];
  snprintf(needle, sizeof needle, "%s: %s:", fn, arg);
  expect_status(got, QK_ERR_INVALID_ARGUMENT, needle, needle, line);
}
#define EXPECT_INVALID(call, fn, arg) expect_invalid((call), (fn), (arg), __LINE__)

static void test_bad_arguments(void) {
  snprintf(g_ctx, sizeof g_ctx, "bad arguments");
  enum { M = 2, N = 3, K = 5 };
  const int64_t big_k = ((int64_t)1 << 17) + 1;
  const qk_dtype bad_dtypes[2] = {(qk_dtype)3, (qk_dtype)-1};
  float x[M * K], y[M * N], ws[N], s[M];
  int8_t a[M * K], b[N * K], q[M * K];
  int32_t c[M * N];
  for (int i = 0; i < M * K; ++i) x[i] = (float)i, a[i] = (int8_t)i;
  for (int i = 0; i < N * K; ++i) b[i] = (int8_t)-i;
  for (int i = 0; i < N; ++i) ws[i] = 0.5f;
  /* Buffers large enough for K = 2^17 + 1, so only the K check can reject such a call. */
  int8_t* big8 = xmalloc((size_t)big_k);
  float* bigf = xmalloc((size_t)big_k * sizeof(float));
  memset(big8, 1, (size_t)big_k);
  for (int64_t i = 0; i < big_k; ++i) bigf[i] = 1.0f;

  const char* fq = "qk_quantize_int8";
  EXPECT_INVALID(qk_quantize_int8(NULL, QK_F32, M, K, K, q, s), fq, "w");
  EXPECT_INVALID(qk_quantize_int8(x, QK_F32, M, K, K, NULL, s), fq, "q");
  EXPECT_INVALID(qk_quantize_int8(x, QK_F32, M, K, K, q, NULL), fq, "scales");
  EXPECT_INVALID(qk_quantize_int8(x, QK_F32, -1, K, K, q, s), fq, "rows");
  EXPECT_INVALID(qk_quantize_int8(x, QK_F32, M, -1, K, q, s), fq, "cols");
  EXPECT_INVALID(qk_quantize_int8(x, QK_F32, M, K, K - 1, q, s), fq, "ldw");
  EXPECT_INVALID(qk_quantize_int8(x, QK_F32, M, K, 0, q, s), fq, "ldw");
  for (int i = 0; i < 2; ++i)
    EXPECT_INVALID(qk_quantize_int8(x, bad_dtypes[i], M, K, K, q, s), fq, "w_dtype");
  x[K + 1] = NAN;
  EXPECT_INVALID(qk_quantize_int8(x, QK_F32, M, K, K, q, s), fq, "w");
  CHECK(names_row(qk_last_error(), 1), "'%s' does not name row 1", qk_last_error());
  x[K + 1] = 1.0f;

  const char* fm = "qk_matmul_int8";
  EXPECT_INVALID(qk_matmul_int8(NULL, K, b, K, c, N, M, N, K), fm, "a");
  EXPECT_INVALID(qk_matmul_int8(a, K, NULL, K, c, N, M, N, K), fm, "b");
  EXPECT_INVALID(qk_matmul_int8(a, K, b, K, NULL, N, M, N, K), fm, "c");
  EXPECT_INVALID(qk_matmul_int8(a, K, b, K, c, N, -1, N, K), fm, "M");
  EXPECT_INVALID(qk_matmul_int8(a, K, b, K, c, N, M, -1, K), fm, "N");
  EXPECT_INVALID(qk_matmul_int8(a, K, b, K, c, N, M, N, -1), fm, "K");
  EXPECT_INVALID(qk_matmul_int8(a, K - 1, b, K, c, N, M, N, K), fm, "lda");
  EXPECT_INVALID(qk_matmul_int8(a, K, b, K - 1, c, N, M, N, K), fm, "ldb");
  EXPECT_INVALID(qk_matmul_int8(a, K, b, K, c, N - 1, M, N, K), fm, "ldc");
  EXPECT_INVALID(qk_matmul_int8(big8, big_k, big8, big_k, c, 1, 1, 1, big_k), fm, "K");
  a[K + 2] = -128;
  EXPECT_INVALID(qk_matmul_int8(a, K, b, K, c, N, M, N, K), fm, "a");
  CHECK(names_row(qk_last_error(), 1), "'%s' does not name row 1", qk_last_error());
  a[K + 2] = 0;
  b[2 * K + 4] = -128;
  EXPECT_INVALID(qk_matmul_int8(a, K, b, K, c, N, M, N, K), fm, "b");
  CHECK(names_row(qk_last_error(), 2), "'%s' does not name row 2", qk_last_error());
  b[2 * K + 4] = 0;

  const linear_fn fns[2] = {qk_linear_int8_w8a8, qk_linear_int8_w8a16};
  const char* names[2] = {"qk_linear_int8_w8a8", "qk_linear_int8_w8a16"};
  for (int i = 0; i < 2; ++i) {
    const linear_fn f = fns[i];
    const char* fn = names[i];
    EXPECT_INVALID(f(NULL, QK_F32, K, b, ws, NULL, y, N, M, N, K), fn, "x");
    EXPECT_INVALID(f(x, QK_F32, K, NULL, ws, NULL, y, N, M, N, K), fn, "w");
    EXPECT_INVALID(f(x, QK_F32, K, b, NULL, NULL, y, N, M, N, K), fn, "w_scale");
    EXPECT_INVALID(f(x, QK_F32, K, b, ws, NULL, NULL, N, M, N, K), fn, "y");
    EXPECT_INVALID(f(x, QK_F32, K, b, ws, NULL, y, N, -1, N, K), fn, "M");
    EXPECT_INVALID(f(x, QK_F32, K, b, ws, NULL, y, N, M, -1, K), fn, "N");
    EXPECT_INVALID(f(x, QK_F32, K, b, ws, NULL, y, N, M, N, -1), fn, "K");
    EXPECT_INVALID(f(x, QK_F32, K - 1, b, ws, NULL, y, N, M, N, K), fn, "ldx");
    EXPECT_INVALID(f(x, QK_F32, K, b, ws, NULL, y, N - 1, M, N, K), fn, "ldy");
    for (int j = 0; j < 2; ++j)
      EXPECT_INVALID(f(x, bad_dtypes[j], K, b, ws, NULL, y, N, M, N, K), fn, "x_dtype");
    EXPECT_INVALID(f(bigf, QK_F32, big_k, big8, ws, NULL, y, 1, 1, 1, big_k), fn, "K");

    /* Empty problems succeed without touching the pointers that describe no elements; K = 0
     * leaves the bias alone. */
    EXPECT_OK(f(NULL, QK_F32, K, b, ws, NULL, NULL, N, 0, N, K));
    EXPECT_OK(f(x, QK_F32, K, NULL, NULL, NULL, NULL, 1, M, 0, K));
    const float bias[N] = {0.25f, -1.5f, 3.0f};
    EXPECT_OK(f(NULL, QK_F32, 1, NULL, ws, bias, y, N, M, N, 0));
    CHECK(memcmp(y, bias, sizeof bias) == 0 && memcmp(y + N, bias, sizeof bias) == 0,
          "%s with K = 0: y is not the bias", fn);
  }
  EXPECT_OK(qk_quantize_int8(NULL, QK_F32, 0, K, K, NULL, NULL));
  EXPECT_OK(qk_quantize_int8(NULL, QK_F32, M, 0, 1, NULL, s));
  CHECK(s[0] == 1.0f && s[1] == 1.0f, "an empty row must get scale 1, got %g, %g", s[0], s[1]);
  EXPECT_OK(qk_matmul_int8(NULL, K, b, K, NULL, N, 0, N, K));
  EXPECT_OK(qk_matmul_int8(a, K, NULL, K, NULL, 1, M, 0, K));
  EXPECT_OK(qk_matmul_int8(NULL, 1, NULL, 1, c, N, M, N, 0));
  CHECK(c[0] == 0 && c[M * N - 1] == 0, "K = 0 must give zeros");

  EXPECT_INVALID(qk_set_num_threads(0), "qk_set_num_threads", "n");
  EXPECT_INVALID(qk_set_num_threads(-3), "qk_set_num_threads", "n");
  EXPECT_INVALID(qk_set_isa(QK_ISA_COUNT), "qk_set_isa", "isa");
  EXPECT_INVALID(qk_set_isa((qk_isa)-1), "qk_set_isa", "isa");
  const qk_isa active = qk_isa_active();
  for (int i = 0; i < QK_ISA_COUNT; ++i) {
    if (qk_isa_available((qk_isa)i)) continue;
    char needle[64];
    snprintf(needle, sizeof needle, "qk_set_isa: '%s'", qk_isa_name((qk_isa)i));
    EXPECT_STATUS(qk_set_isa((qk_isa)i), QK_ERR_UNSUPPORTED, needle);
    CHECK(qk_isa_active() == active, "a refused qk_set_isa changed the active path");
  }
  free(big8), free(bigf);
}

/* The sub-byte linears on inputs that their int8 activation step reproduces exactly: integer
 * activations with a 127 in every group (so each group's scale is 1), checked against the
 * spec's value formulas summed in double. */
static float nf4_value(int code) {
  static const int8_t t[16] = {-127, -88, -67, -50, -36, -23, -12, 0,
                               10,   20,  31,  43,  56,  71,  92,  127};
  return (float)t[code] / 127.0f;
}

static void test_subbyte(void) {
  enum { M = 3, N = 5, K = 96, G = 32, GROUPS = K / G };
  float x[M * K], y[M * N], scales[N * GROUPS], bias[N], cb[2 * 256 * 8], vscale[N];
  uint8_t p4[N * K / 2], p3[N * (K / 32) * 12], zeros[N * GROUPS], codes4[N * K], codes3[N * K];
  uint8_t vcodes[N * (K / 8) * 2];
  for (int m = 0; m < M; ++m)
    for (int k = 0; k < K; ++k)
      x[m * K + k] = k % G == (m * 7) % G ? 127.0f : (float)((int)(rnd() % 255) - 127);
  for (int i = 0; i < N * GROUPS; ++i)
    scales[i] = rnd_float(0.25f, 2.0f), zeros[i] = (uint8_t)(rnd() % 8);
  for (int i = 0; i < N; ++i) bias[i] = rnd_float(-1, 1), vscale[i] = rnd_float(0.5f, 1.5f);
  for (int i = 0; i < 2 * 256 * 8; ++i) cb[i] = rnd_float(-1, 1);
  for (int i = 0; i < N * (K / 8) * 2; ++i) vcodes[i] = (uint8_t)rnd();
  memset(p4, 0, sizeof p4), memset(p3, 0, sizeof p3);
  for (int n = 0; n < N; ++n)
    for (int k = 0; k < K; ++k) {
      const int c4 = (int)(rnd() % 16), c3 = (int)(rnd() % 8);
      codes4[n * K + k] = (uint8_t)c4, codes3[n * K + k] = (uint8_t)c3;
      p4[n * K / 2 + k / 2] |= (uint8_t)(c4 << (4 * (k % 2)));
      uint8_t* blk = p3 + n * (K / 32) * 12 + (k / 32) * 12;
      const int i = k % 32;
      blk[i % 8] |= (uint8_t)((c3 & 3) << (2 * (i / 8)));
      blk[8 + i / 8] |= (uint8_t)(((c3 >> 2) & 1) << (i % 8));
    }
  for (int f = 0; f < 5; ++f) {
    static const char* const names[5] = {"int4 sym", "int4 asym", "int3 asym", "nf4", "vq 2x8"};
    snprintf(g_ctx, sizeof g_ctx, "%s", names[f]);
    qk_status st;
    if (f < 2)
      st = qk_linear_int4(x, QK_F32, K, p4, scales, f == 1 ? zeros : NULL, G, bias, y, N, M, N, K);
    else if (f == 2)
      st = qk_linear_int3(x, QK_F32, K, p3, scales, zeros, G, bias, y, N, M, N, K);
    else if (f == 3)
      st = qk_linear_nf4(x, QK_F32, K, p4, scales, G, bias, y, N, M, N, K);
    else
      st = qk_linear_vq(x, QK_F32, K, vcodes, 2, 8, cb, vscale, bias, y, N, M, N, K);
    EXPECT_OK(st);
    for (int m = 0; m < M; ++m)
      for (int n = 0; n < N; ++n) {
        double ref = bias[n], mag = fabs(bias[n]);
        for (int k = 0; k < K; ++k) {
          const int g = k / G;
          double w;
          if (f == 0)
            w = scales[n * GROUPS + g] * (codes4[n * K + k] - 8);
          else if (f == 1)
            w = scales[n * GROUPS + g] * (codes4[n * K + k] - (zeros[n * GROUPS + g] & 15));
          else if (f == 2)
            w = scales[n * GROUPS + g] * (codes3[n * K + k] - zeros[n * GROUPS + g]);
          else if (f == 3)
            w = scales[n * GROUPS + g] * nf4_value(codes4[n * K + k]);
          else {
            const uint8_t* c = vcodes + (n * (K / 8) + k / 8) * 2;
            w = vscale[n] * ((double)cb[c[0] * 8 + k % 8] + cb[(256 + c[1]) * 8 + k % 8]);
          }
          ref += x[m * K + k] * w;
          mag += fabs(x[m * K + k] * w);
        }
        CHECK(fabs(y[m * N + n] - ref) <= 1e-5 * mag, "y[%d, %d] = %.9g, expected %.9g", m, n,
              y[m * N + n], ref);
      }
  }
  /* Bad arguments name the argument. */
  snprintf(g_ctx, sizeof g_ctx, "sub-byte bad arguments");
  EXPECT_INVALID(qk_linear_int4(x, QK_F32, K, p4, scales, NULL, 48, NULL, y, N, M, N, K),
                 "qk_linear_int4", "group_size");
  EXPECT_INVALID(qk_linear_int4(x, QK_F32, K, p4, scales, NULL, G, NULL, y, N, M, N, K - 1),
                 "qk_linear_int4", "K");
  EXPECT_INVALID(qk_linear_int4(x, QK_F32, K, NULL, scales, NULL, G, NULL, y, N, M, N, K),
                 "qk_linear_int4", "packed");
  EXPECT_INVALID(qk_linear_int3(x, QK_F32, K, p3, NULL, NULL, G, NULL, y, N, M, N, K),
                 "qk_linear_int3", "scales");
  zeros[N * GROUPS - 1] = 8;
  EXPECT_INVALID(qk_linear_int3(x, QK_F32, K, p3, scales, zeros, G, NULL, y, N, M, N, K),
                 "qk_linear_int3", "zeros");
  EXPECT_INVALID(qk_linear_nf4(x, QK_F32, K, p4, scales, 48, NULL, y, N, M, N, K), "qk_linear_nf4",
                 "block_size");
  EXPECT_INVALID(qk_linear_nf4(x, QK_F32, K, p4, NULL, G, NULL, y, N, M, N, K), "qk_linear_nf4",
                 "absmax");
  EXPECT_INVALID(qk_linear_vq(x, QK_F32, K, vcodes, 3, 8, cb, vscale, NULL, y, N, M, N, K),
                 "qk_linear_vq", "num_codebooks x codebook_bits");
  EXPECT_INVALID(qk_linear_vq(x, QK_F32, K, vcodes, 2, 8, cb, vscale, NULL, y, N, M, N, K - 4),
                 "qk_linear_vq", "K");
  EXPECT_INVALID(qk_linear_vq(x, QK_F32, K, vcodes, 2, 8, NULL, vscale, NULL, y, N, M, N, K),
                 "qk_linear_vq", "codebooks");
  EXPECT_INVALID(qk_linear_vq(x, QK_F32, K, vcodes, 2, 8, cb, NULL, NULL, y, N, M, N, K),
                 "qk_linear_vq", "scales");
}

/* Host runners (qk_set_parallel_runner): one that runs the work twice on the calling thread (the
 * second call finds nothing left), one that runs nothing (the library finishes on the caller). */
static int g_runner_calls;
static void runner_twice(void (*work)(void*), void* arg, int n_threads, void* ctx) {
  (void)n_threads, (void)ctx;
  ++g_runner_calls;
  work(arg);
  work(arg);
}
static void runner_idle(void (*work)(void*), void* arg, int n_threads, void* ctx) {
  (void)work, (void)arg, (void)n_threads, (void)ctx;
  ++g_runner_calls;
}

static void test_parallel_runner(void) {
  const int threads = qk_get_num_threads();
  EXPECT_OK(qk_set_num_threads(3));
  const qk_parallel_runner runners[2] = {runner_twice, runner_idle};
  for (int i = 0; i < 2; ++i) {
    g_runner_calls = 0;
    EXPECT_OK(qk_set_parallel_runner(runners[i], NULL));
    test_matmul();
    snprintf(g_ctx, sizeof g_ctx, "runner %d", i);
    CHECK(g_runner_calls > 0, "the runner was never called");
  }
  EXPECT_OK(qk_set_parallel_runner(NULL, NULL));
  EXPECT_OK(qk_set_num_threads(threads));
}

int main(void) {
  test_state();
  const char* env = getenv("QKERNELS_ISA");
  if (env != NULL && env[0] != '\0') {
    int forced = -1;
    for (int i = 0; i < QK_ISA_COUNT; ++i)
      if (strcmp(env, qk_isa_name((qk_isa)i)) == 0) forced = i;
    if (forced >= 0 && qk_isa_available((qk_isa)forced)) {
      snprintf(g_ctx, sizeof g_ctx, "QKERNELS_ISA=%s", env);
      printf("testing %s (from QKERNELS_ISA)\n", env);
      CHECK((int)qk_isa_active() == forced, "the active path is %s", qk_isa_name(qk_isa_active()));
    } else {
      printf("testing that QKERNELS_ISA=%s is refused, then generic\n", env);
      test_env_unsupported(env);
    }
    test_isa();
    test_subbyte();
  } else {
    for (int i = 0; i < QK_ISA_COUNT; ++i) {
      if (!qk_isa_available((qk_isa)i)) continue;
      snprintf(g_ctx, sizeof g_ctx, "qk_set_isa(%s)", qk_isa_name((qk_isa)i));
      EXPECT_OK(qk_set_isa((qk_isa)i));
      CHECK((int)qk_isa_active() == i, "the active path is %s", qk_isa_name(qk_isa_active()));
      printf("testing %s\n", qk_isa_name((qk_isa)i));
      test_isa();
      test_subbyte();
    }
  }
  test_parallel_runner();
  test_bad_arguments();
  printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed != 0;
}
