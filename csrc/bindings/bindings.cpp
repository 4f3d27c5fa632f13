// qkernels._C: private pybind11 bindings. Arguments are raw addresses and sizes read from torch
// tensors by python/qkernels/ops.py (which validates dtype, device, shape and contiguity first);
// the core re-checks every size and reports failures as Python exceptions. The GIL is released
// while kernels run.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "core/kernels.h"
#include "core/ops.h"
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
  m.def("set_isa", [](int i) { raise_if_failed(qk_set_isa(static_cast<qk_isa>(i))); });
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
}
