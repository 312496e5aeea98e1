/* Private parts of the tensor-file module shared by tensor_file.c (lifecycle, queries, error
 * reporting), tensor_file_io.c (dataset transfers) and tensor_file_attr.c (attributes).
 *
 * Only checkpoints/ sees this header (it includes hdf5.h, which no other layer may). */
#ifndef WEFT_TENSOR_FILE_INTERNAL_H
#define WEFT_TENSOR_FILE_INTERNAL_H

#include <hdf5.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weft/tensor_file.h"

#define WEFT_TF_SUBSYS "ckpt"
/* Longest dataset or attribute path accepted; far beyond any real parameter name, and it
 * keeps normalised paths in stack buffers. */
#define WEFT_TF_PATH_MAX 1024

struct weft_tensor_file {
  hid_t fid;
  hid_t dxpl;      /* transfer properties: H5P_DEFAULT, or MPI-IO collective */
  hid_t bf16_type; /* the custom 16-bit float type, owned by this handle */
  weft_comm_t *comm;
  int rank; /* in comm; 0 for a serial file */
  bool writable;
  bool last_collective; /* the last dataset transfer ran as collective MPI-IO */
  char *path;
};

/* Logs "tensor file PATH[, dataset NAME]: MESSAGE" at error level and returns `status`. */
weft_status_t weft_tf_error(weft_status_t status, const char *path, const char *dataset,
                            const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* As weft_tf_error, with the cause read from HDF5's error stack appended. Call right after
 * the failing HDF5 call (the next HDF5 call clears the stack). */
weft_status_t weft_tf_h5_error(weft_status_t status, const char *path, const char *dataset,
                               const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Collective files: every rank learns the worst (most negative) of the ranks' statuses, and
 * a rank whose `key` (a hash of the arguments that must agree) differs makes the result
 * WEFT_ERR_INVALID_ARG, logged as `what`. Serial files return `local` unchanged. This keeps a
 * bad argument on one rank from leaving the others inside a collective HDF5 call. */
weft_status_t weft_tf_agree(weft_tensor_file_t *file, weft_status_t local, uint64_t key,
                            const char *dataset, const char *what);
/* FNV-1a over bytes, chained through `hash` (start with WEFT_TF_HASH_INIT). */
#define WEFT_TF_HASH_INIT 1469598103934665603ull
uint64_t weft_tf_hash(uint64_t hash, const void *bytes, size_t size);

/* Writes "/name" into buf (size WEFT_TF_PATH_MAX); refuses empty names, "//", a trailing '/',
 * and over-long names. `root_ok` allows "/" itself (attribute targets). */
weft_status_t weft_tf_normalize(const weft_tensor_file_t *file, const char *name, bool root_ok,
                                char *buf);
/* Whether the link `path` (normalised) exists, checking each parent first. */
weft_status_t weft_tf_link_exists(const weft_tensor_file_t *file, const char *path, bool *exists_p);
/* The HDF5 type storing `dtype` in files and in memory (borrowed: do not close);
 * H5I_INVALID_HID for an unsupported dtype. */
hid_t weft_tf_h5_type(const weft_tensor_file_t *file, weft_dtype_t dtype);
/* Opens dataset `path` (normalised); WEFT_ERR_INVALID_ARG naming the file when missing. */
weft_status_t weft_tf_dataset_open(weft_tensor_file_t *file, const char *path, hid_t *dset_p);
/* Dtype and shape of an open dataset, cross-checked against its `dtype` attribute. */
weft_status_t weft_tf_dataset_info(weft_tensor_file_t *file, const char *path, hid_t dset,
                                   weft_tensor_file_info_t *info_p);
/* Writes a string attribute on this rank only, with no agreement between ranks and no
 * reserved names: for the module's own `dtype` attribute, written inside operations that
 * agree already. */
weft_status_t weft_tf_attr_write_str_local(weft_tensor_file_t *file, const char *object,
                                           const char *name, const char *value);
/* "f32[2,3]" into buf. */
const char *weft_tf_describe(weft_dtype_t dtype, int ndim, const int64_t *shape, char *buf,
                             size_t size);
/* Checks ndim and shape entries; `what` names the argument in the message. */
weft_status_t weft_tf_check_shape(const weft_tensor_file_t *file, const char *dataset, int ndim,
                                  const int64_t *shape, const char *what);

#endif /* WEFT_TENSOR_FILE_INTERNAL_H */
