/* Input-file validation shared by the `weft check` drivers (check_linear.c, check_attention.c,
 * check_moe.c):
 * the problems a user's HDF5 file can have, reported in one line by rank 0. Every rank runs the
 * same checks on the same file, so all agree that the input is bad without communicating. */
#ifndef WEFT_RUNTIME_CHECK_INPUT_H
#define WEFT_RUNTIME_CHECK_INPUT_H

#include <stdbool.h>
#include <stddef.h>

#include "weft/status.h"
#include "weft/tensor_file.h"

typedef struct weft_check_input {
  const char *command; /* "weft check attention": the message prefix */
  const char *path;    /* the input file */
  int rank;            /* only rank 0 prints */
  bool error;          /* set by weft_check_input_error */
} weft_check_input_t;

/* Prints "<command>: <path>: <message>" on rank 0 and sets in->error. */
void weft_check_input_error(weft_check_input_t *in, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* "[2,64,8,16]" */
void weft_check_format_shape(const weft_tensor_file_info_t *info, char *buf, size_t size);

/* Dataset `name` must exist and be an `ndim`-D float32 array (ndim 1..4) with no empty
 * dimension; *info_p gets its shape. A bad dataset is reported (in->error) and returns
 * WEFT_OK; only I/O failures return an error. `dims` names the expected dimensions in the
 * message ("[B,N,H,d]"). */
weft_status_t weft_check_query(weft_check_input_t *in, weft_tensor_file_t *file, const char *name,
                               int ndim, const char *dims, weft_tensor_file_info_t *info_p);

/* weft_check_query with ndim 4. */
weft_status_t weft_check_query4(weft_check_input_t *in, weft_tensor_file_t *file, const char *name,
                                const char *dims, weft_tensor_file_info_t *info_p);

#endif /* WEFT_RUNTIME_CHECK_INPUT_H */
