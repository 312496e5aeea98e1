/* Tensor files: dataset writes and reads, whole and by hyperslab (API in weft/tensor_file.h).
 *
 * Every transfer uses the dataset's own HDF5 type as the memory type, so HDF5 never converts
 * and a collective transfer stays one collective MPI-IO call. A rank with nothing to move
 * selects nothing in both the file and the memory space and still enters H5Dwrite/H5Dread,
 * which MPI-IO's collective calls require. Whole-tensor writes on a collective file are made
 * by rank 0 alone (the others select nothing), so replicated tensors are written once.
 *
 * Each operation checks its arguments on every rank, agrees on the outcome (weft_tf_agree)
 * before the collective HDF5 calls, and agrees again afterwards so that every rank returns
 * the same status. Datasets are contiguous, allocated at creation (parallel HDF5 does so
 * anyway; serial files do it too so that weft_tensor_file_allocate has an offset to return),
 * with no fill value written (H5D_FILL_TIME_NEVER), which would write the whole dataset twice.
 * Rejected: chunked layout (see the header) and per-rank independent I/O (thousands of small
 * requests at scale). */
#include <stdlib.h>
#include <string.h>

#include "tensor_file_internal.h"
#include "weft/check.h"
#include "weft/log.h"

static int64_t tf_numel(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int d = 0; d < ndim; d++) n *= shape[d];
  return n;
}

/* memcmp would be handed a NULL shape for scalars, which C does not allow even for 0 bytes. */
static bool tf_same_shape(int ndim, const int64_t *a, const int64_t *b) {
  for (int d = 0; d < ndim; d++)
    if (a[d] != b[d]) return false;
  return true;
}

static uint64_t tf_key(const char *path, weft_dtype_t dtype, int ndim, const int64_t *shape) {
  uint64_t h = weft_tf_hash(WEFT_TF_HASH_INIT, path, strlen(path));
  int32_t head[2] = {(int32_t)dtype, (int32_t)ndim};
  h = weft_tf_hash(h, head, sizeof head);
  if (ndim > 0 && shape) h = weft_tf_hash(h, shape, (size_t)ndim * sizeof *shape);
  return h;
}

/* Checks what every transfer needs: a supported dtype, a valid shape and, for slabs,
 * 0 <= start, start + count <= global per dim. *selected_p: whether this rank moves data. */
static weft_status_t tf_check_args(weft_tensor_file_t *file, const char *path, weft_dtype_t dtype,
                                   int ndim, const int64_t *global, bool slab, const int64_t *start,
                                   const int64_t *count, const void *data, bool write,
                                   bool *selected_p) {
  *selected_p = false;
  if (weft_tf_h5_type(file, dtype) < 0)
    return weft_tf_error(WEFT_ERR_UNSUPPORTED, file->path, path,
                         "dtype %s cannot be stored (f32, bf16, i32, i64 can)",
                         weft_dtype_name(dtype));
  WEFT_CHECK(weft_tf_check_shape(file, path, ndim, global, "global shape"));
  int64_t numel = tf_numel(ndim, global);
  if (slab && ndim > 0) {
    if (!start) return weft_tf_error(WEFT_ERR_INVALID_ARG, file->path, path, "start is NULL");
    WEFT_CHECK(weft_tf_check_shape(file, path, ndim, count, "count"));
    for (int d = 0; d < ndim; d++)
      if (start[d] < 0 || start[d] > global[d] - count[d])
        return weft_tf_error(
            WEFT_ERR_INVALID_ARG, file->path, path,
            "block start %lld count %lld in dim %d is outside the global extent %lld",
            (long long)start[d], (long long)count[d], d, (long long)global[d]);
    numel = tf_numel(ndim, count);
  }
  /* Whole-tensor writes on a collective file: rank 0 writes for everyone. */
  if (write && !slab && file->rank != 0) numel = 0;
  if (numel > 0 && !data)
    return weft_tf_error(WEFT_ERR_INVALID_ARG, file->path, path, "data is NULL for %lld elements",
                         (long long)numel);
  *selected_p = numel > 0;
  return WEFT_OK;
}

/* Opens `path` for writing dtype[shape], creating it (and its groups) when missing. */
static weft_status_t tf_dataset_prepare(weft_tensor_file_t *file, const char *path,
                                        weft_dtype_t dtype, int ndim, const int64_t *shape,
                                        hid_t *dset_p) {
  bool exists = false;
  *dset_p = H5I_INVALID_HID;
  WEFT_CHECK(weft_tf_link_exists(file, path, &exists));
  if (exists) {
    hid_t dset = H5I_INVALID_HID;
    weft_tensor_file_info_t info;
    WEFT_CHECK(weft_tf_dataset_open(file, path, &dset));
    weft_status_t st = weft_tf_dataset_info(file, path, dset, &info);
    if (st == WEFT_OK &&
        (info.dtype != dtype || info.ndim != ndim || !tf_same_shape(ndim, info.shape, shape))) {
      char have[96], want[96];
      st = weft_tf_error(WEFT_ERR_INVALID_ARG, file->path, path,
                         "exists as %s; cannot overwrite it with %s",
                         weft_tf_describe(info.dtype, info.ndim, info.shape, have, sizeof have),
                         weft_tf_describe(dtype, ndim, shape, want, sizeof want));
    }
    if (st != WEFT_OK) {
      H5Dclose(dset);
      return st;
    }
    *dset_p = dset;
    return WEFT_OK;
  }
  weft_status_t st = WEFT_OK;
  hsize_t dims[WEFT_TENSOR_MAX_DIMS];
  for (int d = 0; d < ndim; d++) dims[d] = (hsize_t)shape[d];
  hid_t space = ndim == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(ndim, dims, NULL);
  hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  hid_t dset = H5I_INVALID_HID;
  if (space < 0 || lcpl < 0 || dcpl < 0 || H5Pset_create_intermediate_group(lcpl, 1) < 0 ||
      H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) < 0 ||
      H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY) < 0) {
    st = weft_tf_h5_error(WEFT_ERR_IO, file->path, path, "cannot set up the dataset");
    goto done;
  }
  dset = H5Dcreate2(file->fid, path, weft_tf_h5_type(file, dtype), space, lcpl, dcpl, H5P_DEFAULT);
  if (dset < 0) {
    char want[96];
    st = weft_tf_h5_error(WEFT_ERR_IO, file->path, path, "cannot create the dataset %s",
                          weft_tf_describe(dtype, ndim, shape, want, sizeof want));
    goto done;
  }
  WEFT_CHECK_GOTO(weft_tf_attr_write_str_local(file, path, "dtype", weft_dtype_name(dtype)), st,
                  done);
done:
  if (st != WEFT_OK && dset >= 0) {
    H5Dclose(dset);
    dset = H5I_INVALID_HID;
  }
  if (dcpl >= 0) H5Pclose(dcpl);
  if (lcpl >= 0) H5Pclose(lcpl);
  if (space >= 0) H5Sclose(space);
  *dset_p = dset;
  return st;
}

/* Records whether the transfer just made was collective and logs, at debug level, why not
 * (HDF5 falls back to independent I/O silently). */
static void tf_note_io_mode(weft_tensor_file_t *file, const char *path) {
  H5D_mpio_actual_io_mode_t mode = H5D_MPIO_NO_COLLECTIVE;
  if (!file->comm || H5Pget_mpio_actual_io_mode(file->dxpl, &mode) < 0) return;
  file->last_collective = mode != H5D_MPIO_NO_COLLECTIVE;
  if (file->last_collective || !weft_log_enabled(WEFT_LOG_LEVEL_DEBUG, WEFT_TF_SUBSYS)) return;
  uint32_t local = 0, global = 0;
  H5Pget_mpio_no_collective_cause(file->dxpl, &local, &global);
  WEFT_DEBUG(WEFT_TF_SUBSYS,
             "tensor file '%s', dataset '%s': transfer was not collective "
             "(H5D_mpio_no_collective_cause_t local 0x%x, global 0x%x)",
             file->path, path, (unsigned)local, (unsigned)global);
}

/* Moves this rank's block between `data` and dataset `dset`. start == NULL: the whole
 * dataset. selected == false: nothing (the rank still takes part). */
static weft_status_t tf_transfer(weft_tensor_file_t *file, const char *path, hid_t dset,
                                 weft_dtype_t dtype, int ndim, const int64_t *start,
                                 const int64_t *count, bool selected, void *data, bool write) {
  weft_status_t st = WEFT_OK;
  hid_t mspace = H5I_INVALID_HID;
  hid_t fspace = H5Dget_space(dset);
  if (fspace < 0) {
    st = weft_tf_h5_error(WEFT_ERR_IO, file->path, path, "cannot read the dataspace");
    goto done;
  }
  if (!selected) {
    mspace = H5Scopy(fspace);
    if (mspace < 0 || H5Sselect_none(fspace) < 0 || H5Sselect_none(mspace) < 0) goto select_fail;
  } else if (ndim == 0 || !start) {
    mspace = H5Scopy(fspace); /* the whole dataset, laid out like the file */
    if (mspace < 0) goto select_fail;
  } else {
    hsize_t hstart[WEFT_TENSOR_MAX_DIMS], hcount[WEFT_TENSOR_MAX_DIMS];
    for (int d = 0; d < ndim; d++) {
      hstart[d] = (hsize_t)start[d];
      hcount[d] = (hsize_t)count[d];
    }
    mspace = H5Screate_simple(ndim, hcount, NULL);
    if (mspace < 0 || H5Sselect_hyperslab(fspace, H5S_SELECT_SET, hstart, NULL, hcount, NULL) < 0)
      goto select_fail;
  }
  /* HDF5 refuses a NULL buffer in some versions even for an empty selection. */
  unsigned char placeholder[8];
  void *buf = data ? data : placeholder;
  hid_t type = weft_tf_h5_type(file, dtype);
  herr_t rc = write ? H5Dwrite(dset, type, mspace, fspace, file->dxpl, buf)
                    : H5Dread(dset, type, mspace, fspace, file->dxpl, buf);
  if (rc < 0) {
    st = weft_tf_h5_error(WEFT_ERR_IO, file->path, path, "%s failed",
                          write ? "H5Dwrite" : "H5Dread");
    goto done;
  }
  tf_note_io_mode(file, path);
  goto done;
select_fail:
  st = weft_tf_h5_error(WEFT_ERR_IO, file->path, path, "cannot select the block to transfer");
done:
  if (mspace >= 0) H5Sclose(mspace);
  if (fspace >= 0) H5Sclose(fspace);
  return st;
}

/* Shared body of the four transfer functions. slab == false (or a scalar): whole dataset. */
static weft_status_t tf_io(weft_tensor_file_t *file, const char *name, weft_dtype_t dtype, int ndim,
                           const int64_t *global, bool slab, const int64_t *start,
                           const int64_t *count, void *data, bool write) {
  char path[WEFT_TF_PATH_MAX];
  const char *what = write ? "write" : "read";
  bool selected = false;
  hid_t dset = H5I_INVALID_HID;
  file->last_collective = false;
  weft_status_t st = weft_tf_normalize(file, name, false, path);
  if (st == WEFT_OK && write && !file->writable)
    st = weft_tf_error(WEFT_ERR_INVALID_ARG, file->path, path, "the file is open read-only");
  if (st == WEFT_OK)
    st = tf_check_args(file, path, dtype, ndim, global, slab && ndim > 0, start, count, data, write,
                       &selected);
  if (ndim == 0) slab = false;
  uint64_t key = st == WEFT_OK ? tf_key(path, dtype, ndim, global) : 0;
  WEFT_CHECK(weft_tf_agree(file, st, key, st == WEFT_OK ? path : name, what));
  if (write) {
    st = tf_dataset_prepare(file, path, dtype, ndim, global, &dset);
  } else {
    weft_tensor_file_info_t info;
    st = weft_tf_dataset_open(file, path, &dset);
    if (st == WEFT_OK) st = weft_tf_dataset_info(file, path, dset, &info);
    if (st == WEFT_OK &&
        (info.dtype != dtype || info.ndim != ndim || !tf_same_shape(ndim, info.shape, global))) {
      char have[96], want[96];
      st = weft_tf_error(
          WEFT_ERR_INVALID_ARG, file->path, path, "the request is %s%s but the file holds %s",
          weft_tf_describe(dtype, ndim, global, want, sizeof want), slab ? " (global shape)" : "",
          weft_tf_describe(info.dtype, info.ndim, info.shape, have, sizeof have));
    }
  }
  /* Metadata failures are the same on every rank (same file, same arguments); agreeing
   * anyway costs one all-reduce and rules out a rank entering the transfer alone. */
  st = weft_tf_agree(file, st, key, path, what);
  /* An empty dataset has no storage (HDF5 reports an undefined address): nothing to move. */
  if (st == WEFT_OK && tf_numel(ndim, global) > 0)
    st = tf_transfer(file, path, dset, dtype, ndim, slab ? start : NULL, count, selected, data,
                     write);
  if (dset >= 0) H5Dclose(dset);
  return weft_tf_agree(file, st, key, path, what);
}

weft_status_t weft_tensor_file_write(weft_tensor_file_t *file, const char *name, weft_dtype_t dtype,
                                     int ndim, const int64_t *shape, const void *data) {
  return tf_io(file, name, dtype, ndim, shape, false, NULL, NULL, (void *)data, true);
}

weft_status_t weft_tensor_file_write_slab(weft_tensor_file_t *file, const char *name,
                                          weft_dtype_t dtype, int ndim, const int64_t *global_shape,
                                          const int64_t *start, const int64_t *count,
                                          const void *data) {
  return tf_io(file, name, dtype, ndim, global_shape, true, start, count, (void *)data, true);
}

weft_status_t weft_tensor_file_read(weft_tensor_file_t *file, const char *name, weft_dtype_t dtype,
                                    int ndim, const int64_t *shape, void *data) {
  return tf_io(file, name, dtype, ndim, shape, false, NULL, NULL, data, false);
}

weft_status_t weft_tensor_file_read_slab(weft_tensor_file_t *file, const char *name,
                                         weft_dtype_t dtype, int ndim, const int64_t *global_shape,
                                         const int64_t *start, const int64_t *count, void *data) {
  return tf_io(file, name, dtype, ndim, global_shape, true, start, count, data, false);
}

/* Byte offset of an open dataset's contiguous storage, or -1 (another layout, or none). */
static int64_t tf_storage_offset(hid_t dset) {
  hid_t dcpl = H5Dget_create_plist(dset);
  const bool contiguous = dcpl >= 0 && H5Pget_layout(dcpl) == H5D_CONTIGUOUS;
  if (dcpl >= 0) H5Pclose(dcpl);
  const haddr_t addr = contiguous ? H5Dget_offset(dset) : HADDR_UNDEF;
  return addr == HADDR_UNDEF ? -1 : (int64_t)addr;
}

weft_status_t weft_tensor_file_allocate(weft_tensor_file_t *file, const char *name,
                                        weft_dtype_t dtype, int ndim, const int64_t *shape,
                                        int64_t *offset_p) {
  char path[WEFT_TF_PATH_MAX];
  hid_t dset = H5I_INVALID_HID;
  *offset_p = -1;
  weft_status_t st = weft_tf_normalize(file, name, false, path);
  if (st == WEFT_OK && !file->writable)
    st = weft_tf_error(WEFT_ERR_INVALID_ARG, file->path, path, "the file is open read-only");
  if (st == WEFT_OK && weft_tf_h5_type(file, dtype) < 0)
    st = weft_tf_error(WEFT_ERR_UNSUPPORTED, file->path, path, "dtype %s cannot be stored",
                       weft_dtype_name(dtype));
  if (st == WEFT_OK) st = weft_tf_check_shape(file, path, ndim, shape, "shape");
  const uint64_t key = st == WEFT_OK ? tf_key(path, dtype, ndim, shape) : 0;
  WEFT_CHECK(weft_tf_agree(file, st, key, st == WEFT_OK ? path : name, "allocate"));
  st = tf_dataset_prepare(file, path, dtype, ndim, shape, &dset);
  if (st == WEFT_OK && tf_numel(ndim, shape) > 0) {
    *offset_p = tf_storage_offset(dset);
    if (*offset_p < 0)
      st = weft_tf_h5_error(WEFT_ERR_IO, file->path, path, "the dataset has no allocated storage");
  }
  if (dset >= 0) H5Dclose(dset);
  return weft_tf_agree(file, st, key, path, "allocate");
}

weft_status_t weft_tensor_file_data_offset(weft_tensor_file_t *file, const char *name,
                                           int64_t *offset_p) {
  char path[WEFT_TF_PATH_MAX];
  hid_t dset = H5I_INVALID_HID;
  *offset_p = -1;
  WEFT_CHECK(weft_tf_normalize(file, name, false, path));
  WEFT_CHECK(weft_tf_dataset_open(file, path, &dset));
  *offset_p = tf_storage_offset(dset);
  H5Dclose(dset);
  return WEFT_OK;
}

/* A tensor the module can hand to HDF5 directly: host memory, contiguous. */
static weft_status_t tf_check_tensor(const weft_tensor_file_t *file, const char *name,
                                     const weft_tensor_t *tensor) {
  if (!tensor) return weft_tf_error(WEFT_ERR_INVALID_ARG, file->path, name, "tensor is NULL");
  if (tensor->device && tensor->device->kind != WEFT_DEVICE_CPU)
    return weft_tf_error(WEFT_ERR_INVALID_ARG, file->path, name,
                         "tensor lives on %s %d; copy it to host memory first",
                         weft_device_kind_name(tensor->device->kind), tensor->device->ordinal);
  if (!weft_tensor_is_contiguous(tensor))
    return weft_tf_error(WEFT_ERR_INVALID_ARG, file->path, name, "tensor is not contiguous");
  return WEFT_OK;
}

weft_status_t weft_tensor_file_write_tensor(weft_tensor_file_t *file, const char *name,
                                            const weft_tensor_t *tensor) {
  const char *target = name ? name : tensor ? tensor->name : NULL;
  weft_status_t st = tf_check_tensor(file, target, tensor);
  /* A bad tensor on one rank must still be agreed on before anything collective. */
  if (st != WEFT_OK) return weft_tf_agree(file, st, 0, target, "write");
  return weft_tensor_file_write(file, target, tensor->dtype, tensor->ndim, tensor->shape,
                                tensor->data);
}

weft_status_t weft_tensor_file_read_tensor(weft_tensor_file_t *file, const char *name,
                                           weft_tensor_t *tensor) {
  const char *target = name ? name : tensor ? tensor->name : NULL;
  weft_status_t st = tf_check_tensor(file, target, tensor);
  if (st != WEFT_OK) return weft_tf_agree(file, st, 0, target, "read");
  return weft_tensor_file_read(file, target, tensor->dtype, tensor->ndim, tensor->shape,
                               tensor->data);
}
