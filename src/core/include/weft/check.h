/* Error-propagation macros.
 *
 * WEFT_CHECK passes a failing status up and leaves a one-line trace at debug level, so the
 * first (error-level) log line is the real cause and the trace shows the path it took.
 * The translation macros turn a foreign library's return code into a weft status and log the
 * library's own message. They are plain macros, so this header needs none of the foreign
 * headers: each macro is only expanded in the layer that includes its library (CUDA in
 * core/kernels/comm, MPI/NCCL/UCX in comm, HDF5 in checkpoints; style.md rule 1). */
#ifndef WEFT_CHECK_H
#define WEFT_CHECK_H

#include "weft/log.h"
#include "weft/status.h"

/* Logs a foreign-library failure once and returns the weft status to report. */
weft_status_t weft_check_fail(weft_status_t status, const char *lib, long code, const char *msg,
                              const char *expr, const char *file, int line);
/* Leaves the debug-level trace line of a propagated failure. */
void weft_check_trace(weft_status_t status, const char *expr, const char *file, int line);

#define WEFT_CHECK(expr)                                     \
  do {                                                       \
    weft_status_t weft_st_ = (expr);                         \
    if (weft_st_ != WEFT_OK) {                               \
      weft_check_trace(weft_st_, #expr, __FILE__, __LINE__); \
      return weft_st_;                                       \
    }                                                        \
  } while (0)

/* Stores the status in `st` and jumps to `label` (for cleanup chains). */
#define WEFT_CHECK_GOTO(expr, st, label)                 \
  do {                                                   \
    (st) = (expr);                                       \
    if ((st) != WEFT_OK) {                               \
      weft_check_trace((st), #expr, __FILE__, __LINE__); \
      goto label;                                        \
    }                                                    \
  } while (0)

/* Evaluates a foreign call; on failure logs and returns `status` from the current function. */
#define WEFT_FOREIGN_CHECK_(ok, lib, status, call, msgfn)                                    \
  do {                                                                                       \
    long weft_rc_ = (long)(call);                                                            \
    if (!(ok)) {                                                                             \
      return weft_check_fail((status), (lib), weft_rc_, (msgfn), #call, __FILE__, __LINE__); \
    }                                                                                        \
  } while (0)

#define WEFT_CUDA_CHECK(call)                                                       \
  WEFT_FOREIGN_CHECK_(weft_rc_ == (long)cudaSuccess, "CUDA", WEFT_ERR_DEVICE, call, \
                      cudaGetErrorString((cudaError_t)weft_rc_))
#define WEFT_CUBLAS_CHECK(call)                                                                 \
  WEFT_FOREIGN_CHECK_(weft_rc_ == (long)CUBLAS_STATUS_SUCCESS, "cuBLAS", WEFT_ERR_DEVICE, call, \
                      cublasGetStatusString((cublasStatus_t)weft_rc_))
#define WEFT_NCCL_CHECK(call)                                                     \
  WEFT_FOREIGN_CHECK_(weft_rc_ == (long)ncclSuccess, "NCCL", WEFT_ERR_COMM, call, \
                      ncclGetErrorString((ncclResult_t)weft_rc_))
#define WEFT_UCX_CHECK(call)                                                \
  WEFT_FOREIGN_CHECK_(weft_rc_ == (long)UCS_OK, "UCX", WEFT_ERR_COMM, call, \
                      ucs_status_string((ucs_status_t)weft_rc_))
/* MPI error strings need a buffer; weft_mpi_error_string (comm/) fills a static one. */
#define WEFT_MPI_CHECK(call)                                                     \
  WEFT_FOREIGN_CHECK_(weft_rc_ == (long)MPI_SUCCESS, "MPI", WEFT_ERR_COMM, call, \
                      weft_mpi_error_string((int)weft_rc_))
/* HDF5 returns a negative herr_t/hid_t on failure. checkpoints/ turns HDF5's own error
 * printing off and reports the file and dataset itself; this macro is for bare calls. */
#define WEFT_H5_CHECK(call) \
  WEFT_FOREIGN_CHECK_(weft_rc_ >= 0, "HDF5", WEFT_ERR_IO, call, "negative HDF5 return")

#endif /* WEFT_CHECK_H */
