# Decides whether the CUDA backend is built and finds cuBLAS and NCCL.
# WEFT_CUDA=AUTO builds it when nvcc is found (on PATH or under /usr/local/cuda); ON insists;
# OFF skips it. Sets WEFT_HAVE_CUDA to 0 or 1 (feature macros are always defined, style rule 7).

set(WEFT_HAVE_CUDA 0)
if(NOT WEFT_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX})
    find_program(WEFT_NVCC nvcc PATHS /usr/local/cuda/bin NO_CACHE)
    if(WEFT_NVCC)
      set(CMAKE_CUDA_COMPILER ${WEFT_NVCC})
    endif()
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    # H100 (sm_90) by default: the GPUs weft targets; override with -DCMAKE_CUDA_ARCHITECTURES.
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 90)
    endif()
    enable_language(CUDA)
    set(CMAKE_CUDA_STANDARD 17)
    find_package(CUDAToolkit REQUIRED)
    find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
    find_library(NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR})
    if(NOT NCCL_INCLUDE_DIR OR NOT NCCL_LIBRARY)
      message(FATAL_ERROR "weft: NCCL not found next to the CUDA toolkit "
                          "(${CUDAToolkit_LIBRARY_DIR}); install NVIDIA's 'libnccl-dev' package "
                          "or configure with -DWEFT_CUDA=OFF.")
    endif()
    add_library(weft_dep_nccl INTERFACE)
    target_include_directories(weft_dep_nccl SYSTEM INTERFACE ${NCCL_INCLUDE_DIR})
    target_link_libraries(weft_dep_nccl INTERFACE ${NCCL_LIBRARY} CUDA::cudart)
    set(WEFT_HAVE_CUDA 1)
    message(STATUS "weft: CUDA backend ON (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, "
                   "architectures ${CMAKE_CUDA_ARCHITECTURES})")
  elseif(WEFT_CUDA STREQUAL "ON")
    message(FATAL_ERROR "weft: WEFT_CUDA=ON but nvcc was not found; install the CUDA toolkit "
                        "(nvcc on PATH or /usr/local/cuda) or use -DWEFT_CUDA=AUTO/OFF.")
  else()
    message(STATUS "weft: CUDA backend OFF (nvcc not found)")
  endif()
endif()
