/* Transport discovery for `weft info`. CUDA-awareness is read from Open MPI's extension
 * when present: weft stages device buffers either way, but users want to know. */
#include <stdio.h>
#include <string.h>
#include <ucp/api/ucp.h>
#if defined(OPEN_MPI) && OPEN_MPI
#include <mpi-ext.h>
#endif
#if WEFT_HAVE_CUDA
#include <nccl.h>
#endif

#include "comm_internal.h"
#include "weft/transports.h"

void weft_transports_query(const weft_comm_t *world, weft_transports_t *out) {
  memset(out, 0, sizeof *out);
  char version[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(version, &len);
  version[strcspn(version, ",\n")] = '\0';
  snprintf(out->mpi, sizeof out->mpi, "%.*s", (int)sizeof out->mpi - 1, version);
#if defined(MPIX_CUDA_AWARE_SUPPORT) && MPIX_CUDA_AWARE_SUPPORT
  out->mpi_cuda_aware = MPIX_Query_cuda_support() == 1;
#endif
#if WEFT_HAVE_CUDA
  int nccl_version = 0;
  ncclGetVersion(&nccl_version);
  const char *use = world->nccl                               ? "in use"
                    : world->gpu_shared                       ? "not used: ranks share a GPU"
                    : world->device->kind == WEFT_DEVICE_CUDA ? "not used: WEFT_COMM_NCCL=0"
                                                              : "not used: CPU device";
  snprintf(out->nccl, sizeof out->nccl, "%d.%d.%d (%s)", nccl_version / 10000,
           (nccl_version / 100) % 100, nccl_version % 100, use);
#else
  (void)world;
  snprintf(out->nccl, sizeof out->nccl, "not built (no CUDA backend)");
#endif
  unsigned major = 0, minor = 0, release = 0;
  ucp_get_version(&major, &minor, &release);
  snprintf(out->ucx, sizeof out->ucx, "%u.%u.%u", major, minor, release);
}
