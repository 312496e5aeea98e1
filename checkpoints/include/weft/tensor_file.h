/* Tensor files: named tensors and attributes in one HDF5 file, read and written either by one
 * process or collectively by every rank of a weft_comm (design.md section 8).
 *
 * What it does: each tensor is one dataset with its global shape at a path such as
 * "/params/w1" (intermediate groups are created on demand). A serial file (comm == NULL) uses
 * HDF5's default driver; a collective file uses the MPI-IO driver with collective transfers,
 * and each rank writes or reads its own hyperslab of the global dataset, so a file written at
 * one world size is read back at any other (resharding by hyperslab). Every dataset carries a
 * string attribute `dtype` ("f32", "bf16", "i32", "i64"). bf16 is stored as a custom 16-bit
 * HDF5 float (sign bit 15, exponent bits 7..14 with bias 127, mantissa bits 0..6), which
 * h5py and h5dump read as a float type. Attributes (string, int64, double) hang on the root
 * group or on any dataset or group.
 *
 * Why this way: the data in memory must already have the file's type (callers convert to bf16
 * before writing): HDF5 silently falls back to independent I/O when a transfer needs a type
 * conversion, which at scale turns one collective write into thousands of small ones. A read
 * whose dtype or shape differs from the file is refused rather than converted or reshaped,
 * because in a checkpoint such a mismatch means the wrong model or the wrong file.
 *
 * Collective files: create, open, close, every dataset write and read, and every attribute
 * write are collective over the file's communicator. All ranks call them in the same order
 * with the same path, name, dtype and global shape (attribute values too); only the hyperslab
 * start/count and the data pointers differ per rank. A rank with nothing to transfer passes a
 * zero count (its data pointer may be NULL) and still calls. Before any collective HDF5 call
 * the ranks agree (one small all-reduce): an argument that is bad on one rank, or differs
 * between ranks, makes the call fail on every rank with the same status instead of hanging
 * the others. The queries (exists, query, list) and attribute reads are independent: any
 * subset of ranks may call them.
 *
 * Errors are logged once, where detected, with the file, the dataset and the cause taken from
 * HDF5's error stack; HDF5's own automatic stack printing is turned off (process-wide)
 * whenever a tensor file is created or opened.
 *
 * Rejected: a generic "convert on read" path (breaks collective I/O and hides mismatches);
 * fixed-length string attributes (h5py returns them as bytes, and long JSON configurations
 * would need a length chosen up front); chunked datasets (contiguous layout keeps collective
 * I/O to one MPI-IO call per dataset; checkpoints are written once and never extended). */
#ifndef WEFT_TENSOR_FILE_H
#define WEFT_TENSOR_FILE_H

#include <stdbool.h>
#include <stdint.h>

#include "weft/comm.h"
#include "weft/status.h"
#include "weft/tensor.h"

typedef struct weft_tensor_file weft_tensor_file_t;

typedef enum weft_tensor_file_mode {
  WEFT_TENSOR_FILE_READ = 0,       /* read-only */
  WEFT_TENSOR_FILE_READ_WRITE = 1, /* read and add or overwrite datasets and attributes */
} weft_tensor_file_mode_t;

/* Dtype and global shape of one dataset. */
typedef struct weft_tensor_file_info {
  weft_dtype_t dtype;
  int ndim;                            /* 0 (scalar) .. WEFT_TENSOR_MAX_DIMS */
  int64_t shape[WEFT_TENSOR_MAX_DIMS]; /* elements per dim; unused dims are 1 */
} weft_tensor_file_info_t;

/* Dataset paths found in a file; caller-owned storage, released by
 * weft_tensor_file_names_cleanup. */
typedef struct weft_tensor_file_names {
  int count;
  char **names; /* [count] absolute paths ("/params/w1"), sorted by strcmp */
} weft_tensor_file_names_t;

/* ---- lifecycle ------------------------------------------------------------------------ */

/* Creates (or truncates) the file at `path`, open for reading and writing.
 * [in] comm: NULL for a serial file, else every rank of comm calls and the file is written
 *            collectively through MPI-IO. The communicator must outlive the file.
 * [out] file_p: the open file; close with weft_tensor_file_close. */
weft_status_t weft_tensor_file_create(const char *path, weft_comm_t *comm,
                                      weft_tensor_file_t **file_p);
/* Opens an existing HDF5 file. A missing file or one that is not HDF5 gives WEFT_ERR_IO with
 * the path named. Arguments as for create. */
weft_status_t weft_tensor_file_open(const char *path, weft_tensor_file_mode_t mode,
                                    weft_comm_t *comm, weft_tensor_file_t **file_p);
/* Flushes and closes the file (collective for a collective file). Returns the status of the
 * flush, so a failed write to disk is seen before a checkpoint is committed. The handle is
 * freed whatever the outcome. close(NULL) is a no-op returning WEFT_OK. */
weft_status_t weft_tensor_file_close(weft_tensor_file_t *file);

const char *weft_tensor_file_path(const weft_tensor_file_t *file);
/* true for a file opened with a communicator (MPI-IO, collective transfers). */
bool weft_tensor_file_is_collective(const weft_tensor_file_t *file);
/* Whether the last dataset read or write on this collective file ran as collective MPI-IO
 * (HDF5's actual I/O mode, the same on every rank). false for serial files, after a failed
 * call, and for datasets with no elements (nothing is transferred). For tests and
 * benchmarks: HDF5 falls back to independent I/O without an error. */
bool weft_tensor_file_last_transfer_collective(const weft_tensor_file_t *file);

/* ---- datasets ------------------------------------------------------------------------- */

/* Writes a whole tensor, creating the dataset (and its groups) or overwriting one of the
 * same dtype and shape; a dataset with another dtype or shape is refused (WEFT_ERR_INVALID_ARG).
 * [in] name:  dataset path, "/params/w1" (a leading '/' is optional)
 * [in] dtype: f32, bf16, i32 or i64; data is already in this type (bf16: weft_f32_to_bf16)
 * [in] ndim, shape: 0..4 dims, shape[d] >= 0 elements
 * [in] data:  [shape...] contiguous row-major host memory.
 * Collective file: every rank passes the same tensor; rank 0's data is written (the others
 * select nothing, so a replicated tensor is written once) and may be NULL elsewhere. */
weft_status_t weft_tensor_file_write(weft_tensor_file_t *file, const char *name, weft_dtype_t dtype,
                                     int ndim, const int64_t *shape, const void *data);
/* Writes this rank's hyperslab of a global dataset, creating it on first use (all ranks pass
 * the same global shape) and leaving the rest untouched. Elements no call ever writes hold
 * undefined values: no fill value is written (it would write every dataset twice).
 * [in] global_shape: [ndim] shape of the whole dataset (ndim 1..4)
 * [in] start, count: [ndim] first index and extent of this rank's block per dim;
 *                    start[d] + count[d] <= global_shape[d]; any count[d] == 0 means this
 *                    rank writes nothing (it still calls)
 * [in] data: [count...] contiguous row-major host memory; may be NULL when the block is empty */
weft_status_t weft_tensor_file_write_slab(weft_tensor_file_t *file, const char *name,
                                          weft_dtype_t dtype, int ndim, const int64_t *global_shape,
                                          const int64_t *start, const int64_t *count,
                                          const void *data);
/* Reads a whole dataset. dtype, ndim and shape are what the caller expects: a dataset that
 * differs in any of them is refused with WEFT_ERR_INVALID_ARG naming both values; a missing
 * dataset gives WEFT_ERR_INVALID_ARG. Collective file: every rank reads the whole tensor.
 * [out] data: [shape...] host buffer of numel * dtype size bytes */
weft_status_t weft_tensor_file_read(weft_tensor_file_t *file, const char *name, weft_dtype_t dtype,
                                    int ndim, const int64_t *shape, void *data);
/* Reads this rank's hyperslab of a global dataset; arguments as for write_slab, global_shape
 * checked against the file. [out] data: [count...] host buffer (may be NULL when empty). */
weft_status_t weft_tensor_file_read_slab(weft_tensor_file_t *file, const char *name,
                                         weft_dtype_t dtype, int ndim, const int64_t *global_shape,
                                         const int64_t *start, const int64_t *count, void *data);

/* ---- raw data access (for writers and readers that move the bytes themselves) ----------
 * A dataset is stored contiguously: its elements, little-endian, in row-major order, at one
 * byte offset of the file. A process that knows the offset can pwrite/pread the bytes with
 * plain POSIX I/O, which is what the checkpoint writer does to write in parallel without
 * MPI-IO's collective buffering and from a background thread (HDF5 is not thread-safe). */

/* Creates dataset `name` (dtype[shape], groups on demand) with its storage allocated now and
 * nothing written, and returns the byte offset of that storage: writing the dataset's bytes
 * at that offset after the file is closed gives the same file as weft_tensor_file_write.
 * *offset_p = -1 for an empty dataset (no storage). Collective like write_slab. */
weft_status_t weft_tensor_file_allocate(weft_tensor_file_t *file, const char *name,
                                        weft_dtype_t dtype, int ndim, const int64_t *shape,
                                        int64_t *offset_p);
/* Byte offset of dataset `name`'s elements when they are stored contiguously and allocated
 * (every dataset this module writes); -1 for any other layout (a file from another tool with
 * chunked or compact datasets), which weft_tensor_file_read_slab still reads. Independent. */
weft_status_t weft_tensor_file_data_offset(weft_tensor_file_t *file, const char *name,
                                           int64_t *offset_p);

/* Writes a whole host tensor (contiguous, on the host or the CPU device) as dataset `name`
 * (NULL: the tensor's own name). Same rules as weft_tensor_file_write. */
weft_status_t weft_tensor_file_write_tensor(weft_tensor_file_t *file, const char *name,
                                            const weft_tensor_t *tensor);
/* Reads dataset `name` (NULL: tensor->name) into `tensor`, whose dtype and shape are the
 * expectation and whose data is the destination (contiguous host memory). */
weft_status_t weft_tensor_file_read_tensor(weft_tensor_file_t *file, const char *name,
                                           weft_tensor_t *tensor);

/* [out] exists_p: whether `name` is a dataset (false for a group or nothing). */
weft_status_t weft_tensor_file_exists(weft_tensor_file_t *file, const char *name, bool *exists_p);
/* Dtype and shape of dataset `name`; WEFT_ERR_INVALID_ARG when there is none, and
 * WEFT_ERR_CORRUPT when its HDF5 type is none of ours or disagrees with its `dtype`. */
weft_status_t weft_tensor_file_query(weft_tensor_file_t *file, const char *name,
                                     weft_tensor_file_info_t *info_p);
/* Every dataset in the file, at any depth. [out] names_p: filled; release with
 * weft_tensor_file_names_cleanup (also after a failure). */
weft_status_t weft_tensor_file_list(weft_tensor_file_t *file, weft_tensor_file_names_t *names_p);
void weft_tensor_file_names_cleanup(weft_tensor_file_names_t *names);

/* ---- attributes ----------------------------------------------------------------------- */
/* `object` is NULL or "/" for the root group, else the path of a dataset or group. Writing
 * replaces an existing attribute of that name (whatever its type). Below the root the name
 * `dtype` is reserved (the stored dtype of a dataset). Reading an attribute of another kind (a
 * string as int64, a double as int64, ...) is refused with WEFT_ERR_INVALID_ARG; integer widths and
 * float widths convert. */

weft_status_t weft_tensor_file_attr_write_str(weft_tensor_file_t *file, const char *object,
                                              const char *name, const char *value);
weft_status_t weft_tensor_file_attr_write_i64(weft_tensor_file_t *file, const char *object,
                                              const char *name, int64_t value);
weft_status_t weft_tensor_file_attr_write_f64(weft_tensor_file_t *file, const char *object,
                                              const char *name, double value);
/* [out] value_p: a NUL-terminated copy allocated with malloc; the caller frees it. Reads
 * variable- and fixed-length strings (files written by h5py have either). */
weft_status_t weft_tensor_file_attr_read_str(weft_tensor_file_t *file, const char *object,
                                             const char *name, char **value_p);
weft_status_t weft_tensor_file_attr_read_i64(weft_tensor_file_t *file, const char *object,
                                             const char *name, int64_t *value_p);
weft_status_t weft_tensor_file_attr_read_f64(weft_tensor_file_t *file, const char *object,
                                             const char *name, double *value_p);
weft_status_t weft_tensor_file_attr_exists(weft_tensor_file_t *file, const char *object,
                                           const char *name, bool *exists_p);

#endif /* WEFT_TENSOR_FILE_H */
