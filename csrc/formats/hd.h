// QK_HD marks the per-element decode helpers that CUDA kernels share with the CPU code, so the CPU
// tests cover them on machines without a GPU.
#pragma once

#if defined(__CUDACC__)
#define QK_HD __host__ __device__
#else
#define QK_HD
#endif
