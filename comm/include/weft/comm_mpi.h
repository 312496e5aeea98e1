/* Interop escape hatch: the MPI communicator under a weft_comm.
 *
 * Only for libraries that take an MPI_Comm themselves (parallel HDF5 in checkpoints/).
 * Everything else talks through weft/comm.h. Including this header brings in mpi.h; keeping
 * it a separate header keeps mpi.h out of every other layer's includes. */
#ifndef WEFT_COMM_MPI_H
#define WEFT_COMM_MPI_H

#include <mpi.h>

#include "weft/comm.h"

MPI_Comm weft_comm_mpi(const weft_comm_t *comm);

#endif /* WEFT_COMM_MPI_H */
