/* What transports this build and process can use, for `weft info` and logs. */
#ifndef WEFT_TRANSPORTS_H
#define WEFT_TRANSPORTS_H

#include <stdbool.h>
#include <stddef.h>

#include "weft/comm.h"

typedef struct weft_transports {
  char mpi[128]; /* MPI library version, first line */
  bool mpi_cuda_aware;
  char nccl[64]; /* "2.27.3 (in use)", "2.27.3 (not used: ranks share a GPU)", or "not built" */
  char ucx[64];  /* UCX version */
} weft_transports_t;

/* Fills `out` for a communicator (NCCL use depends on it). */
void weft_transports_query(const weft_comm_t *world, weft_transports_t *out);

#endif /* WEFT_TRANSPORTS_H */
