# Per-ISA kernel sources, each compiled with its own flags and nothing global, so the library
# loads on any CPU of its architecture and picks a path at runtime (csrc/core/dispatch.cpp).
set(QKERNELS_ISA_SOURCES "")
set(QKERNELS_ISA_DEFINITIONS "")

if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
  # GCC 12's avx512fintrin.h trips -Wmaybe-uninitialized on _mm512_undefined_* (a false positive).
  set(_gcc12_intrin_fp -Wno-maybe-uninitialized -Wno-uninitialized)
  set(_avx2 csrc/cpu/avx2/linear_int8_avx2.cpp csrc/cpu/avx2/gemm_q_avx2.cpp
    csrc/cpu/avx2/gemm_vq_avx2.cpp)
  set(_avx512 csrc/cpu/avx512/linear_int8_avx512.cpp csrc/cpu/avx512/gemm_q_avx512.cpp
    csrc/cpu/avx512/gemm_vq_avx512.cpp csrc/cpu/avx512/gemm_f32_panel_avx512.cpp)
  set(_avx512vnni csrc/cpu/avx512/gemm_s8_avx512vnni.cpp
    csrc/cpu/avx512/gemm_panel_avx512vnni.cpp)
  set_source_files_properties(${_avx2} PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma")
  set_source_files_properties(${_avx512} PROPERTIES
    COMPILE_OPTIONS "-mavx2;-mfma;-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;${_gcc12_intrin_fp}")
  set_source_files_properties(${_avx512vnni} PROPERTIES
    COMPILE_OPTIONS "-mavx2;-mfma;-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mavx512vnni;${_gcc12_intrin_fp}")
  list(APPEND QKERNELS_ISA_SOURCES ${_avx2} ${_avx512} ${_avx512vnni})
  list(APPEND QKERNELS_ISA_DEFINITIONS QK_HAVE_AVX2=1 QK_HAVE_AVX512=1)
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64|ARM64)$")
  list(APPEND QKERNELS_ISA_SOURCES csrc/cpu/neon/linear_int8_neon.cpp csrc/cpu/neon/gemm_q_neon.cpp
    csrc/cpu/neon/gemm_vq_neon.cpp)
  list(APPEND QKERNELS_ISA_DEFINITIONS QK_HAVE_NEON=1)
endif()
list(APPEND QKERNELS_ISA_SOURCES csrc/core/isa_absent.cpp)
