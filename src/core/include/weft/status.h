/* Status codes returned by every weft function that can fail.
 *
 * Codes are grouped by reach (design.md section 2): what the caller can do about an error
 * depends on whether the input was bad, a resource ran out, a peer went away or data was
 * corrupt, so the groups are distinct values rather than one generic failure. */
#ifndef WEFT_STATUS_H
#define WEFT_STATUS_H

typedef enum weft_status {
  WEFT_OK = 0,
  WEFT_ERR_INVALID_ARG = -1, /* the caller passed a bad value; fix the call or the input */
  WEFT_ERR_NO_MEMORY = -2,   /* host or device allocation failed */
  WEFT_ERR_IO = -3,          /* file system or file format error */
  WEFT_ERR_DEVICE = -4,      /* CUDA runtime, cuBLAS or kernel failure */
  WEFT_ERR_COMM = -5,        /* MPI, NCCL or UCX operation failed */
  WEFT_ERR_PEER_LOST = -6,   /* a peer rank exited or became unreachable */
  WEFT_ERR_TIMEOUT = -7,     /* a deadline passed (WEFT_COMM_TIMEOUT_S and friends) */
  WEFT_ERR_CORRUPT = -8,     /* checksum, shape or format mismatch in stored data */
  WEFT_ERR_UNSUPPORTED = -9, /* valid request this build or machine cannot do */
  WEFT_ERR_INTERNAL = -10,   /* a weft invariant broke: a bug, please report it */
} weft_status_t;

/* Short stable name of a status ("invalid argument", "timeout", ...). Never NULL. */
const char *weft_status_str(weft_status_t status);

#endif /* WEFT_STATUS_H */
