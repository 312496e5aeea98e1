# Finds every system dependency. A missing one stops configuration with the Debian package
# that provides it, because "could not find X" alone sends users hunting.
# launch/install-deps.sh installs all of them.

find_package(PkgConfig QUIET)

function(weft_require_found found what package)
  if(NOT ${found})
    message(FATAL_ERROR
      "weft: ${what} not found. Install the Debian package '${package}' "
      "(or run: sudo bash launch/install-deps.sh).")
  endif()
endfunction()

# MPI (Open MPI). The C bindings are all weft uses.
find_package(MPI COMPONENTS C QUIET)
weft_require_found(MPI_C_FOUND "MPI (Open MPI)" "libopenmpi-dev openmpi-bin")

# Parallel HDF5: the serial library cannot write collectively, so insist on the MPI build.
set(HDF5_PREFER_PARALLEL TRUE)
find_package(HDF5 COMPONENTS C QUIET)
weft_require_found(HDF5_FOUND "HDF5" "libhdf5-openmpi-dev")
if(NOT HDF5_IS_PARALLEL)
  message(FATAL_ERROR "weft: HDF5 found at ${HDF5_INCLUDE_DIRS} is the serial build; "
                      "install the Debian package 'libhdf5-openmpi-dev'.")
endif()
add_library(weft_dep_hdf5 INTERFACE)
target_include_directories(weft_dep_hdf5 SYSTEM INTERFACE ${HDF5_C_INCLUDE_DIRS} ${HDF5_INCLUDE_DIRS})
target_link_libraries(weft_dep_hdf5 INTERFACE ${HDF5_C_LIBRARIES} MPI::MPI_C)
target_compile_definitions(weft_dep_hdf5 INTERFACE ${HDF5_C_DEFINITIONS} ${HDF5_DEFINITIONS})

# UCX (ucp).
find_path(UCX_INCLUDE_DIR ucp/api/ucp.h)
find_library(UCX_UCP_LIBRARY ucp)
find_library(UCX_UCS_LIBRARY ucs)
if(UCX_INCLUDE_DIR AND UCX_UCP_LIBRARY AND UCX_UCS_LIBRARY)
  set(UCX_FOUND TRUE)
endif()
weft_require_found(UCX_FOUND "UCX (ucp/api/ucp.h, libucp)" "libucx-dev")
add_library(weft_dep_ucx INTERFACE)
target_include_directories(weft_dep_ucx SYSTEM INTERFACE ${UCX_INCLUDE_DIR})
target_link_libraries(weft_dep_ucx INTERFACE ${UCX_UCP_LIBRARY} ${UCX_UCS_LIBRARY})

# OpenBLAS through its CBLAS interface. Debian puts cblas.h under a per-variant folder.
find_path(OPENBLAS_INCLUDE_DIR cblas.h
          PATHS /usr/include/x86_64-linux-gnu/openblas-pthread
                /usr/include/aarch64-linux-gnu/openblas-pthread /usr/include/openblas
          NO_DEFAULT_PATH)
find_path(OPENBLAS_INCLUDE_DIR cblas.h)
find_library(OPENBLAS_LIBRARY openblas)
if(OPENBLAS_INCLUDE_DIR AND OPENBLAS_LIBRARY)
  set(OPENBLAS_FOUND TRUE)
endif()
weft_require_found(OPENBLAS_FOUND "OpenBLAS (cblas.h, libopenblas)" "libopenblas-dev")
add_library(weft_dep_openblas INTERFACE)
target_include_directories(weft_dep_openblas SYSTEM INTERFACE ${OPENBLAS_INCLUDE_DIR})
target_link_libraries(weft_dep_openblas INTERFACE ${OPENBLAS_LIBRARY})

# cJSON.
find_path(CJSON_INCLUDE_DIR cjson/cJSON.h)
find_library(CJSON_LIBRARY cjson)
if(CJSON_INCLUDE_DIR AND CJSON_LIBRARY)
  set(CJSON_FOUND TRUE)
endif()
weft_require_found(CJSON_FOUND "cJSON (cjson/cJSON.h, libcjson)" "libcjson-dev")
add_library(weft_dep_cjson INTERFACE)
target_include_directories(weft_dep_cjson SYSTEM INTERFACE ${CJSON_INCLUDE_DIR})
target_link_libraries(weft_dep_cjson INTERFACE ${CJSON_LIBRARY})

find_package(Threads REQUIRED)
find_library(MATH_LIBRARY m REQUIRED)
