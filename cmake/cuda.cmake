# QKERNELS_CUDA=AUTO|ON|OFF. The CUDA extension is optional: AUTO builds it when a CUDA compiler is
# found, ON requires one, OFF never looks. The CUDA kernels themselves arrive with the CUDA issue;
# until then this only reports what it found, so the switch already has its final meaning.
if(NOT QKERNELS_CUDA MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "QKERNELS_CUDA: expected AUTO, ON or OFF, got '${QKERNELS_CUDA}'")
endif()
set(QKERNELS_WITH_CUDA OFF)
if(NOT QKERNELS_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(QKERNELS_WITH_CUDA ON)
    message(STATUS "qkernels: CUDA compiler ${CMAKE_CUDA_COMPILER} found (no CUDA kernels yet)")
  elseif(QKERNELS_CUDA STREQUAL "ON")
    message(FATAL_ERROR "QKERNELS_CUDA=ON but no CUDA compiler was found (set CMAKE_CUDA_COMPILER)")
  else()
    message(STATUS "qkernels: no CUDA compiler; building the CPU kernels only")
  endif()
endif()
