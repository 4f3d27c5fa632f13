/* Uses qkernels through its installed header and CMake package: one W8A8 linear layer checked
 * bit for bit against the rule written in qkernels.h. Exit status 0 on success, 1 on a mismatch or
 * an error. */
#include <math.h>
#include <stdio.h>

#include "qkernels.h"

enum { M = 3, N = 5, K = 37 };

int main(void) {
  float x[M][K], w_scale[N], bias[N], y[M][N];
  int8_t w[N][K];
  for (int m = 0; m < M; ++m)
    for (int k = 0; k < K; ++k) x[m][k] = (float)((m * 7 + k * 13) % 29 - 14) / 8.0f;
  for (int n = 0; n < N; ++n) {
    for (int k = 0; k < K; ++k) w[n][k] = (int8_t)((n * 31 + k * 17) % 255 - 127);
    w_scale[n] = 0.01f * (float)(n + 1);
    bias[n] = 0.5f * (float)n - 1.0f;
  }
  const qk_status st = qk_linear_int8_w8a8(x, QK_F32, K, &w[0][0], w_scale, bias, y, N, M, N, K);
  if (st != QK_OK) {
    fprintf(stderr, "qk_linear_int8_w8a8: %s: %s\n", qk_status_name(st), qk_last_error());
    return 1;
  }
  int wrong = 0;
  for (int m = 0; m < M; ++m) {
    /* Per-token quantization: scale = max|x| / 127, codes rounded half to even. */
    float absmax = 0.0f;
    for (int k = 0; k < K; ++k) absmax = fabsf(x[m][k]) > absmax ? fabsf(x[m][k]) : absmax;
    const float sx = absmax / 127.0f > 0.0f ? absmax / 127.0f : 1.0f;
    for (int n = 0; n < N; ++n) {
      int32_t acc = 0;
      for (int k = 0; k < K; ++k) acc += (int32_t)nearbyintf(x[m][k] / sx) * w[n][k];
      const float want = (float)acc * (sx * w_scale[n]) + bias[n];
      if (y[m][n] != want) {
        fprintf(stderr, "y[%d][%d] = %.9g, expected %.9g\n", m, n, y[m][n], want);
        ++wrong;
      }
    }
  }
  printf("qkernels %s (%s): %s\n", qk_version(), qk_isa_name(qk_isa_active()),
         wrong ? "MISMATCH" : "ok");
  return wrong != 0;
}
