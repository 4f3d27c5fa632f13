// qkernels._C: private pybind11 bindings. Arguments are raw addresses and sizes read from torch
// tensors by python/qkernels/ops.py (which validates dtype, device, shape and contiguity first);
// the core re-checks every size and reports failures as Python exceptions. The GIL is released
// while kernels run.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "core/kernels.h"
#include "core/ops.h"
#include "formats/int3.h"
#include "formats/int4.h"
#include "formats/nf4.h"
#include "qkernels.h"

namespace py = pybind11;

namespace {

using addr = std::uintptr_t;

template <typename T>
T* ptr(addr a) {
  return reinterpret_cast<T*>(a);
}

// Raises the Python exception matching a failed status, with the core's message.
void raise_if_failed(qk_status s) {
  if (s == QK_OK) return;
  const std::string msg = qk_last_error();
  switch (s) {
    case QK_ERR_INVALID_ARGUMENT:
      throw py::value_error(msg);
    case QK_ERR_OUT_OF_MEMORY:
      throw std::bad_alloc();
    default:
      throw std::runtime_error(msg);
  }
}

// The host runner for an OpenMP runtime (qk_set_parallel_runner): ctx is its GOMP_parallel, which
// starts a team of n_threads (the caller among them) that each run work(arg). libgomp, LLVM's
// libomp and Intel's libiomp5 all export it.
using GompParallel = void (*)(void (*)(void*), void*, unsigned, unsigned);
void run_on_openmp(void (*work)(void*), void* arg, int n_threads, void* ctx) {
  reinterpret_cast<GompParallel>(ctx)(work, arg, static_cast<unsigned>(n_threads), 0);
}

template <typename Fn>
void call(Fn&& fn) {
  qk_status s;
  {
    py::gil_scoped_release nogil;
    s = fn();
  }
  raise_if_failed(s);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "qkernels private bindings; use qkernels / torch.ops.qkernels instead";

  // ---- library state
  m.def("version", &qk_version);
  m.def("isa_count", [] { return static_cast<int>(QK_ISA_COUNT); });
  m.def("isa_name", [](int i) {
    const char* name = qk_isa_name(static_cast<qk_isa>(i));
    if (name == nullptr)
      throw py::value_error("isa_name: i: expected 0.." + std::to_string(QK_ISA_COUNT - 1) +
                            ", got " + std::to_string(i));
    return std::string(name);
  });
  m.def("isa_available", [](int i) { return qk_isa_available(static_cast<qk_isa>(i)) != 0; });
  m.def("isa_active", [] { return static_cast<int>(qk_isa_active()); });
  m.def("isa_engine", [] { return std::string(qk_isa_engine()); });
  m.def("set_isa", [](int i) { raise_if_failed(qk_set_isa(static_cast<qk_isa>(i))); });
  // Parallel work on the OpenMP team at this GOMP_parallel address (torch's), or 0: own pool.
  m.def("use_openmp", [](addr gomp_parallel) {
    raise_if_failed(qk_set_parallel_runner(gomp_parallel != 0 ? run_on_openmp : nullptr,
                                           ptr<void>(gomp_parallel)));
  });
  // The message when QKERNELS_ISA named a path that cannot run, else None.
  m.def("isa_env_error", []() -> py::object {
    const char* e = qk::isa_init_error();
    if (e == nullptr) return py::none();
    return py::str(e);
  });

  // ---- int8
  m.def("quantize_int8", [](addr w, int dtype, int64_t rows, int64_t cols, int64_t ldw, addr q,
                            addr scales, int threads) {
    call([&] {
      return qk::quantize_int8(ptr<const void>(w), static_cast<qk_dtype>(dtype), rows, cols, ldw,
                               ptr<int8_t>(q), ptr<float>(scales), threads);
    });
  });
  m.def("matmul_int8", [](addr a, int64_t lda, addr b, int64_t ldb, addr c, int64_t ldc, int64_t M,
                          int64_t N, int64_t K, int threads) {
    call([&] {
      return qk::matmul_int8(ptr<const int8_t>(a), lda, ptr<const int8_t>(b), ldb, ptr<int32_t>(c),
                             ldc, M, N, K, threads);
    });
  });
  m.def("linear_int8_w8a8", [](addr x, int dtype, int64_t ldx, addr w, addr w_scale, addr bias,
                               addr y, int64_t ldy, int64_t M, int64_t N, int64_t K, int threads) {
    call([&] {
      return qk::linear_int8_w8a8(ptr<const void>(x), static_cast<qk_dtype>(dtype), ldx,
                                  ptr<const int8_t>(w), ptr<const float>(w_scale),
                                  ptr<const float>(bias), ptr<void>(y), ldy, M, N, K, threads);
    });
  });
  m.def("linear_int8_w8a16", [](addr x, int dtype, int64_t ldx, addr w, addr w_scale, addr bias,
                                addr y, int64_t ldy, int64_t M, int64_t N, int64_t K, int threads) {
    call([&] {
      return qk::linear_int8_w8a16(ptr<const void>(x), static_cast<qk_dtype>(dtype), ldx,
                                   ptr<const int8_t>(w), ptr<const float>(w_scale),
                                   ptr<const float>(bias), ptr<void>(y), ldy, M, N, K, threads);
    });
  });

  // ---- group-wise sub-byte formats (fmt: 0 int4, 1 int3, 2 nf4, as qk::QFormat)
  m.def("linear_q", [](int fmt, addr x, int dtype, int64_t ldx, addr packed, addr scales,
                       addr zeros, int64_t group, addr bias, addr y, int64_t ldy, int64_t M,
                       int64_t N, int64_t K, int threads) {
    if (fmt < 0 || fmt >= qk::kQFormatCount)
      throw py::value_error("linear_q: fmt: expected 0.." + std::to_string(qk::kQFormatCount - 1) +
                            ", got " + std::to_string(fmt));
    call([&] {
      return qk::linear_q(static_cast<qk::QFormat>(fmt), ptr<const void>(x),
                          static_cast<qk_dtype>(dtype), ldx, ptr<const uint8_t>(packed),
                          ptr<const float>(scales), ptr<const uint8_t>(zeros), group,
                          ptr<const float>(bias), ptr<void>(y), ldy, M, N, K, threads);
    });
  });
  // The C++ mirror of each packing spec (formats/<fmt>.h), so tests can compare it byte for byte
  // with the Python pack/unpack. codes: [N, K] uint8; packed: [N, row_bytes] uint8, zero-filled.
  m.def("pack_codes", [](int fmt, addr codes, addr packed, int64_t N, int64_t K) {
    auto set = fmt == qk::kQInt3 ? qk::int3::set_code : qk::int4::set_code;
    const int64_t rb = fmt == qk::kQInt3 ? qk::int3::row_bytes(K) : qk::int4::row_bytes(K);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k)
        set(ptr<uint8_t>(packed) + n * rb, k, ptr<const uint8_t>(codes)[n * K + k]);
  });
  m.def("unpack_codes", [](int fmt, addr packed, addr codes, int64_t N, int64_t K) {
    auto get = fmt == qk::kQInt3 ? qk::int3::get_code : qk::int4::get_code;
    const int64_t rb = fmt == qk::kQInt3 ? qk::int3::row_bytes(K) : qk::int4::row_bytes(K);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k)
        ptr<uint8_t>(codes)[n * K + k] = get(ptr<const uint8_t>(packed) + n * rb, k);
  });
  m.def("nf4_table_int8", [] {
    py::list l;
    for (int8_t v : qk::nf4::kTableInt8) l.append(int{v});
    return l;
  });

  // ---- vq
  m.def("linear_vq", [](addr x, int dtype, int64_t ldx, addr codes, int num_codebooks,
                        int codebook_bits, addr codebooks, addr scales, addr bias, addr y,
                        int64_t ldy, int64_t M, int64_t N, int64_t K, int threads) {
    call([&] {
      return qk::linear_vq(ptr<const void>(x), static_cast<qk_dtype>(dtype), ldx,
                           ptr<const void>(codes), num_codebooks, codebook_bits,
                           ptr<const float>(codebooks), ptr<const float>(scales),
                           ptr<const float>(bias), ptr<void>(y), ldy, M, N, K, threads);
    });
  });
}
