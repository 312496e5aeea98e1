/* Checkpoints: one self-describing HDF5 file per checkpoint, written collectively, committed
 * atomically, verified on load (design.md section 8; docs/checkpoint-format.md).
 *
 * A checkpoint is a set of global tensors (datasets with their global shapes; each rank
 * writes or reads a slab along dim 0) plus root attributes. This layer knows nothing about
 * models: the caller describes its tensors (weft_ckpt_tensor_t), marks for each one which
 * ranks own which rows so that every element has exactly one owner, and passes attributes.
 *
 * Integrity: every dataset carries an int64 attribute `checksum`: the wrapping 64-bit sum over
 * its elements of (bits + 1) * k_i, k_i an odd key of the global element index i
 * (docs/checkpoint-format.md). The sum is order-free, so each owner adds its own rows and the
 * partial sums combine exactly at any world size; a change to any single element always
 * changes it. Loading recomputes it from the rows the owners read and compares before the data
 * is handed back; `weft_ckpt_verify` reads everything.
 *
 * Commit protocol: the file is written as DIR/step-NNNNNNNN.h5.tmp (metadata through HDF5,
 * each rank's rows with pwrite at their byte offsets, then fdatasync), then rank 0 fsyncs it,
 * renames it to DIR/step-NNNNNNNN.h5, fsyncs DIR, writes DIR/latest.tmp (the file name and a
 * newline), fsyncs it, renames it over DIR/latest and fsyncs DIR again.
 * A crash at any point leaves `latest` naming the previous complete checkpoint; a .tmp file is
 * never loaded. Older checkpoints beyond the newest `keep` are deleted after the commit (never
 * the one `latest` names).
 *
 * Errors name the file and the dataset; every rank returns the same status (the ranks agree
 * before returning), so a bad checkpoint never leaves one rank loading while another stops. */
#ifndef WEFT_CHECKPOINT_H
#define WEFT_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "weft/comm.h"
#include "weft/status.h"
#include "weft/tensor_file.h"

#define WEFT_CKPT_FORMAT_VERSION 1

/* One f32 tensor of a checkpoint as this rank sees it. */
typedef struct weft_ckpt_tensor {
  char name[96];    /* dataset path, "/params/embed" */
  int ndim;         /* 1..4 */
  int64_t shape[4]; /* global shape */
  int64_t start;    /* this rank's slab: rows [start, start + rows) of dim 0 */
  int64_t rows;     /* rows of the slab (0: none); data holds rows x shape[1..] floats */
  bool owner;       /* this rank writes its slab and counts it in the checksum; the owners'
                       slabs must cover every row exactly once */
  float *data;      /* host memory */
} weft_ckpt_tensor_t;

/* Elements of one row of `t` (the product of shape[1..]). */
int64_t weft_ckpt_row_elems(const weft_ckpt_tensor_t *t);

/* The checksum's contribution of rows [start, start + rows) of a tensor whose data (for those
 * rows) is `data`. Wrapping sums of these over disjoint row ranges give the dataset's checksum. */
uint64_t weft_ckpt_checksum_rows(const weft_ckpt_tensor_t *t, int64_t start, int64_t rows,
                                 const float *data);

/* Root attributes written with every checkpoint. */
typedef struct weft_ckpt_meta {
  int64_t step;            /* optimizer steps done */
  int64_t tokens_seen;     /* training tokens consumed */
  int64_t optimizer_step;  /* AdamW's step count (differs from step after fine-tuning) */
  const char *config_json; /* run configuration (training options) */
  const char *model_json;  /* model configuration */
  const char *mesh_json;   /* mesh at save time */
  int fault_kill_rank;     /* testing (WEFT_FAULT_KILL_IN_SAVE): this rank of the communicator
                              SIGKILLs itself after writing its rows, before the commit;
                              -1 = never */
  bool mpiio;              /* write the rows with collective MPI-IO (MPI_File_write_at_all)
                              instead of pwrite (WEFT_CKPT_IO=mpiio; see docs/env.md) */
} weft_ckpt_meta_t;

/* Writes and commits a checkpoint of `count` tensors into `dir` (created if missing) as
 * step-NNNNNNNN.h5, updates DIR/latest, and keeps the newest `keep` (>= 1) checkpoints.
 * Collective over `comm`. [out] path (may be NULL): the committed file. */
weft_status_t weft_ckpt_save(weft_comm_t *comm, const char *dir, const weft_ckpt_meta_t *meta,
                             const weft_ckpt_tensor_t *tensors, int count, int keep, char *path,
                             size_t path_size);

/* Background saves: training goes on while the bytes go to disk.
 *
 * weft_ckpt_writer_start copies this rank's owned rows into the writer's host buffer
 * (computing the checksums in the same pass), creates the .tmp file with all its metadata
 * (collective), starts a thread that writes the rows with pwrite and fdatasync, and returns:
 * the caller may change the tensors' data at once. The thread uses no HDF5, and MPI only
 * with meta->mpiio, on a communicator of its own (then MPI must grant MPI_THREAD_MULTIPLE,
 * else it writes with pwrite).
 * weft_ckpt_writer_poll, called by every rank at the same points (e.g. after each training
 * step), commits the save once every rank's thread has finished; with wait it waits for them.
 * A save that fails is reported by the poll that sees it, and `latest` stays unchanged. One
 * save is in flight at a time: start first finishes (waits for and commits) the previous one.
 * The buffer is kept between saves: one extra copy of this rank's share of the checkpoint. */
typedef struct weft_ckpt_writer weft_ckpt_writer_t;

/* A writer for saves collective over `comm` (which must outlive it). */
weft_status_t weft_ckpt_writer_create(weft_comm_t *comm, weft_ckpt_writer_t **writer_p);
/* Begins a save; arguments as for weft_ckpt_save. Collective. */
weft_status_t weft_ckpt_writer_start(weft_ckpt_writer_t *writer, const char *dir,
                                     const weft_ckpt_meta_t *meta,
                                     const weft_ckpt_tensor_t *tensors, int count, int keep);
/* Commits the save in flight if every rank has written it (wait: after waiting for them).
 * Collective; WEFT_OK doing nothing when no save is in flight. [out] committed_p (may be
 * NULL): whether this call committed one; path (may be NULL): its file. */
weft_status_t weft_ckpt_writer_poll(weft_ckpt_writer_t *writer, bool wait, bool *committed_p,
                                    char *path, size_t path_size);
/* Frees the writer. Not collective: a save still in flight is waited for but not committed
 * (call poll with wait first); its .tmp file is deleted by the next save in that directory. */
void weft_ckpt_writer_destroy(weft_ckpt_writer_t *writer);

/* Finds the checkpoint to load. `spec` is a file path, or a directory (its `latest`), or
 * "auto" together with dir (DIR/latest; *found_p = false and WEFT_OK when there is none).
 * A .tmp file, a `latest` naming a missing file, or a missing path is an error naming it.
 * Not collective (every rank resolves the same way on a shared file system). */
weft_status_t weft_ckpt_resolve(const char *spec, const char *dir, char *path, size_t path_size,
                                bool *found_p);

/* Opens a checkpoint for loading: checks the format version. Collective over `comm`. */
weft_status_t weft_ckpt_open(weft_comm_t *comm, const char *path, weft_tensor_file_t **file_p);

/* Reads the tensors' slabs (start, rows per rank), checks each dataset's shape and dtype and
 * the checksum (from the owners' slabs) before returning. Collective over the file's
 * communicator. On any mismatch no caller data should be used: the status is the same on
 * every rank and the message names the dataset. */
weft_status_t weft_ckpt_read(weft_tensor_file_t *file, weft_ckpt_tensor_t *tensors, int count);

/* Reads the whole f32 dataset `name` of a serial file into a new buffer (t->data, freed by
 * the caller with free) and checks its checksum. On failure t->data is NULL. */
weft_status_t weft_ckpt_read_whole(weft_tensor_file_t *file, const char *name,
                                   weft_ckpt_tensor_t *t);

/* Reads every dataset of the file at `path` (serially, on this process) and checks its
 * checksum. Prints one line per dataset to `report` when not NULL. WEFT_ERR_CORRUPT naming the
 * first bad dataset. */
weft_status_t weft_ckpt_verify(const char *path, FILE *report);

#endif /* WEFT_CHECKPOINT_H */
