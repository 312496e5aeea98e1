/* Checkpoints: saving, the commit protocol and the background writer (weft/checkpoint.h,
 * docs/checkpoint-format.md).
 *
 * A save has three parts:
 *   begin (collective, the caller's thread): every owner computes the checksums of its rows
 *     (copying them into the writer's staging buffer on the way, for a background save); the
 *     partial sums are combined; the ranks create DIR/step-N.h5.tmp through MPI-IO with every
 *     root attribute, every dataset allocated (contiguous, nothing written) and every
 *     checksum attribute, and close it. Each rank now knows the byte offset of its rows.
 *   write (no HDF5): pwrite of this rank's rows at their offsets, then fdatasync; or, with
 *     meta->mpiio, collective MPI_File_write_at_all over a communicator nobody else uses.
 *     This runs on the caller's thread (weft_ckpt_save) or on the writer's thread
 *     (weft_ckpt_writer_start), which is why it touches no HDF5 (not thread-safe) and no
 *     communicator the training thread uses.
 *   commit (collective): the ranks agree that every write succeeded, then rank 0 renames the
 *     file, updates `latest` and rotates (the protocol in weft/checkpoint.h).
 *
 * Why pwrite by default instead of H5Dwrite: each rank's rows of a dataset are one contiguous
 * byte range, so MPI-IO's collective buffering (two-phase I/O) only adds a copy and an
 * exchange between ranks on a local or shared disk; the direct writes run at the page cache's
 * speed and the file is byte for byte what HDF5 would have written. Parallel file systems
 * that want large aligned requests from many small pieces get them from the mpiio path.
 * Rejected: HDF5 collective writes on the thread (needs a thread-safe HDF5, which Debian's
 * parallel build is not). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint_internal.h"
#include "weft/check.h"
#include "weft/comm_mpi.h"
#include "weft/log.h"

#define LATEST "latest"

/* ---- the commit ------------------------------------------------------------------------- */

static weft_status_t fsync_path(const char *path, bool directory) {
  const int fd = open(path, directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0 || fsync(fd) != 0) {
    WEFT_ERROR("ckpt", "cannot fsync '%s': %s", path, strerror(errno));
    if (fd >= 0) {
      close(fd);
    }
    return WEFT_ERR_IO;
  }
  close(fd);
  return WEFT_OK;
}

static weft_status_t make_dir(const char *dir) {
  if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
    WEFT_ERROR("ckpt", "cannot create checkpoint directory '%s': %s", dir, strerror(errno));
    return WEFT_ERR_IO;
  }
  struct stat sb;
  if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
    WEFT_ERROR("ckpt", "checkpoint directory '%s' is not a directory", dir);
    return WEFT_ERR_IO;
  }
  return WEFT_OK;
}

static int cmp_ll_desc(const void *a, const void *b) {
  const long long x = *(const long long *)a, y = *(const long long *)b;
  return (x < y) - (x > y);
}

/* Deletes leftover .tmp files and all but the newest `keep` checkpoints (never `committed`). */
static void rotate(const char *dir, long long committed, int keep) {
  DIR *d = opendir(dir);
  if (!d) {
    return;
  }
  long long steps[4096];
  int n = 0;
  char path[4096];
  for (struct dirent *e; (e = readdir(d));) {
    const long long tmp_step = ckpt_parse_step(e->d_name, true);
    if (tmp_step >= 0) { /* an interrupted save: never a checkpoint */
      snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
      unlink(path);
      continue;
    }
    const long long step = ckpt_parse_step(e->d_name, false);
    if (step >= 0 && step != committed && n < 4096) {
      steps[n++] = step;
    }
  }
  closedir(d);
  qsort(steps, (size_t)n, sizeof steps[0], cmp_ll_desc);
  for (int i = keep - 1; i < n; i++) { /* the committed one is the keep-th */
    snprintf(path, sizeof path, "%s/step-%08lld.h5", dir, steps[i]);
    if (unlink(path) == 0) {
      WEFT_INFO("ckpt", "removed old checkpoint %s (--keep %d)", path, keep);
    }
  }
}

/* Rank 0's part of the commit: the file is complete, closed and written by every rank. */
static weft_status_t commit(const char *dir, const char *name, const char *tmp, const char *final,
                            long long step, int keep) {
  WEFT_CHECK(fsync_path(tmp, false));
  if (rename(tmp, final) != 0) {
    WEFT_ERROR("ckpt", "cannot rename '%s' to '%s': %s", tmp, final, strerror(errno));
    return WEFT_ERR_IO;
  }
  WEFT_CHECK(fsync_path(dir, true));
  char latest[4096], latest_tmp[4096];
  snprintf(latest, sizeof latest, "%s/" LATEST, dir);
  snprintf(latest_tmp, sizeof latest_tmp, "%s/" LATEST ".tmp", dir);
  FILE *f = fopen(latest_tmp, "w");
  if (!f || fprintf(f, "%s\n", name) < 0 || fflush(f) != 0 || fsync(fileno(f)) != 0) {
    WEFT_ERROR("ckpt", "cannot write '%s': %s", latest_tmp, strerror(errno));
    if (f) {
      fclose(f);
    }
    return WEFT_ERR_IO;
  }
  fclose(f);
  if (rename(latest_tmp, latest) != 0) {
    WEFT_ERROR("ckpt", "cannot rename '%s' to '%s': %s", latest_tmp, latest, strerror(errno));
    return WEFT_ERR_IO;
  }
  WEFT_CHECK(fsync_path(dir, true));
  rotate(dir, step, keep);
  return WEFT_OK;
}

/* ---- one save ------------------------------------------------------------------------------ */

/* One contiguous byte range this rank writes: one per tensor, empty (bytes 0) where this rank
 * owns no rows (collective MPI-IO calls need every rank in every call). */
typedef struct ckpt_piece {
  char dataset[96]; /* for messages */
  const float *data;
  size_t bytes;
  int64_t offset;
} ckpt_piece_t;

/* A save between its begin and its commit. */
typedef struct ckpt_save {
  char dir[4096], name[64], final[4096], tmp[4096 + 8];
  long long step;
  int keep;
  bool kill;            /* WEFT_FAULT_KILL_IN_SAVE names this rank */
  MPI_Comm io_comm;     /* MPI_COMM_NULL: pwrite; else collective MPI-IO over it */
  ckpt_piece_t *pieces; /* [count] */
  int count;
  weft_status_t write_status; /* set by whoever runs save_write, before `written` */
  atomic_bool written;
} ckpt_save_t;

/* The file with its metadata, every dataset allocated and every checksum (collective). */
static weft_status_t create_layout(weft_comm_t *comm, ckpt_save_t *s, const weft_ckpt_meta_t *meta,
                                   const weft_ckpt_tensor_t *tensors, int count,
                                   const uint64_t *sums, int64_t *offsets) {
  weft_tensor_file_t *file = NULL;
  WEFT_CHECK(weft_tensor_file_create(s->tmp, comm, &file));
  weft_status_t st =
      weft_tensor_file_attr_write_i64(file, NULL, "format_version", WEFT_CKPT_FORMAT_VERSION);
  if (st == WEFT_OK) st = weft_tensor_file_attr_write_str(file, NULL, "weft_version", WEFT_VERSION);
  if (st == WEFT_OK) st = weft_tensor_file_attr_write_i64(file, NULL, "step", meta->step);
  if (st == WEFT_OK)
    st = weft_tensor_file_attr_write_i64(file, NULL, "tokens_seen", meta->tokens_seen);
  if (st == WEFT_OK)
    st = weft_tensor_file_attr_write_i64(file, NULL, "optimizer_step", meta->optimizer_step);
  if (st == WEFT_OK)
    st = weft_tensor_file_attr_write_i64(file, NULL, "ranks", weft_comm_size(comm));
  if (st == WEFT_OK) st = weft_tensor_file_attr_write_str(file, NULL, "config", meta->config_json);
  if (st == WEFT_OK) st = weft_tensor_file_attr_write_str(file, NULL, "model", meta->model_json);
  if (st == WEFT_OK) st = weft_tensor_file_attr_write_str(file, NULL, "mesh", meta->mesh_json);
  for (int i = 0; i < count && st == WEFT_OK; i++) {
    const weft_ckpt_tensor_t *t = &tensors[i];
    st = weft_tensor_file_allocate(file, t->name, WEFT_DTYPE_F32, t->ndim, t->shape, &offsets[i]);
    if (st == WEFT_OK) {
      st = weft_tensor_file_attr_write_i64(file, t->name, "checksum", (int64_t)sums[i]);
    }
  }
  const weft_status_t close_st = weft_tensor_file_close(file);
  return st != WEFT_OK ? st : close_st;
}

/* Collective: checksums (copying the owned rows to `stage` when not NULL), the .tmp file and
 * this rank's pieces. On failure nothing is left to free. */
static weft_status_t save_begin(weft_comm_t *comm, ckpt_save_t *s, const char *dir,
                                const weft_ckpt_meta_t *meta, const weft_ckpt_tensor_t *tensors,
                                int count, int keep, float *stage, MPI_Comm io_comm) {
  const bool root = weft_comm_rank(comm) == 0;
  memset(s, 0, sizeof *s);
  weft_status_t st = WEFT_OK;
  if (strlen(dir) > 3500) {
    WEFT_ERROR("ckpt", "checkpoint directory path is too long (%zu characters)", strlen(dir));
    st = WEFT_ERR_INVALID_ARG;
  } else if (root) {
    st = make_dir(dir);
  }
  WEFT_CHECK(weft_comm_agree(comm, st));
  snprintf(s->dir, sizeof s->dir, "%s", dir);
  snprintf(s->name, sizeof s->name, "step-%08lld.h5", (long long)meta->step);
  snprintf(s->final, sizeof s->final, "%s/%s", dir, s->name);
  snprintf(s->tmp, sizeof s->tmp, "%s.tmp", s->final);
  s->step = (long long)meta->step;
  s->keep = keep > 0 ? keep : 1;
  s->kill = meta->fault_kill_rank == weft_comm_rank(comm);
  s->io_comm = io_comm;
  uint64_t *sums = calloc((size_t)count + 1, sizeof *sums);
  int64_t *offsets = calloc((size_t)count + 1, sizeof *offsets);
  s->pieces = calloc((size_t)count + 1, sizeof *s->pieces);
  st = sums && offsets && s->pieces ? WEFT_OK : WEFT_ERR_NO_MEMORY;
  for (int i = 0; i < count && st == WEFT_OK; i++) {
    const weft_ckpt_tensor_t *t = &tensors[i];
    const int64_t per_row = weft_ckpt_row_elems(t), n = t->owner ? t->rows * per_row : 0;
    ckpt_piece_t *p = &s->pieces[s->count++];
    snprintf(p->dataset, sizeof p->dataset, "%s", t->name);
    p->data = stage ? stage : t->data;
    p->bytes = (size_t)n * sizeof(float);
    p->offset = t->start * per_row * (int64_t)sizeof(float); /* + the dataset's, below */
    if (n > 0) {
      sums[i] = ckpt_checksum_copy(stage, t->data, n, (uint64_t)(t->start * per_row));
      stage = stage ? stage + n : NULL;
    }
  }
  st = weft_comm_agree(comm, st);
  if (st == WEFT_OK) st = ckpt_sum_partials(comm, sums, count);
  if (st == WEFT_OK) st = create_layout(comm, s, meta, tensors, count, sums, offsets);
  for (int i = 0; i < count && st == WEFT_OK; i++) {
    s->pieces[i].offset += offsets[i] > 0 ? offsets[i] : 0; /* empty datasets: no storage */
  }
  free(sums);
  free(offsets);
  if (st != WEFT_OK) {
    WEFT_ERROR("ckpt", "saving '%s' failed; it stays a .tmp file, 'latest' is unchanged", s->tmp);
    free(s->pieces);
    s->pieces = NULL;
  }
  return st;
}

/* This rank's bytes into the .tmp file with pwrite, then fdatasync (no MPI, no HDF5). */
static weft_status_t write_posix(const ckpt_save_t *s) {
  weft_status_t st = WEFT_OK;
  const int fd = open(s->tmp, O_WRONLY);
  if (fd < 0) {
    WEFT_ERROR("ckpt", "cannot open '%s' for writing: %s", s->tmp, strerror(errno));
    return WEFT_ERR_IO;
  }
  for (int i = 0; i < s->count && st == WEFT_OK; i++) {
    const ckpt_piece_t *p = &s->pieces[i];
    for (size_t done = 0; done < p->bytes && st == WEFT_OK;) {
      const ssize_t w = pwrite(fd, (const char *)p->data + done, p->bytes - done,
                               (off_t)(p->offset + (int64_t)done));
      if (w < 0 && errno == EINTR) {
        continue;
      }
      if (w <= 0) {
        WEFT_ERROR("ckpt", "'%s': writing dataset %s failed: %s", s->tmp, p->dataset,
                   w < 0 ? strerror(errno) : "no progress");
        st = WEFT_ERR_IO;
      }
      done += w > 0 ? (size_t)w : 0;
    }
  }
  /* Each rank makes its own bytes durable: on a network file system only the client that
   * wrote the pages can commit them, rank 0's fsync in the commit then has little left to do,
   * and a background save's disk time stays off the training thread. */
  if (st == WEFT_OK && fdatasync(fd) != 0) {
    WEFT_ERROR("ckpt", "cannot fdatasync '%s': %s", s->tmp, strerror(errno));
    st = WEFT_ERR_IO;
  }
  close(fd);
  return st;
}

static weft_status_t mpiio_error(const ckpt_save_t *s, const char *what, const char *dataset,
                                 int rc) {
  char text[MPI_MAX_ERROR_STRING] = "";
  int len = 0;
  MPI_Error_string(rc, text, &len);
  WEFT_ERROR("ckpt", "'%s': %s%s%s failed: %s", s->tmp, what, dataset ? " of dataset " : "",
             dataset ? dataset : "", text);
  return WEFT_ERR_IO;
}

/* The same bytes with collective MPI-IO over s->io_comm (MPI_File_write_at_all per dataset,
 * then MPI_File_sync): lets MPI-IO's collective buffering aggregate the ranks' pieces into
 * large aligned requests, which parallel file systems (Lustre, GPFS) want when the pieces are
 * small. Every rank makes every call, with 0 bytes where it owns nothing; after a failure a
 * rank still makes the remaining calls (with 0 bytes), so no rank is left waiting. */
static weft_status_t write_mpiio(const ckpt_save_t *s) {
  enum { CHUNK = 1 << 30 }; /* bytes per call: MPI counts are int */
  MPI_File fh = MPI_FILE_NULL;
  int rc = MPI_File_open(s->io_comm, s->tmp, MPI_MODE_WRONLY, MPI_INFO_NULL, &fh);
  if (rc != MPI_SUCCESS) { /* collective: every rank fails */
    return mpiio_error(s, "MPI_File_open", NULL, rc);
  }
  weft_status_t st = WEFT_OK;
  for (int i = 0; i < s->count; i++) {
    const ckpt_piece_t *p = &s->pieces[i];
    /* Every rank makes the same number of calls: the most any rank needs for this piece. */
    int mine = (int)((p->bytes + CHUNK - 1) / CHUNK), calls = mine;
    rc = MPI_Allreduce(&mine, &calls, 1, MPI_INT, MPI_MAX, s->io_comm);
    if (rc != MPI_SUCCESS) {
      st = mpiio_error(s, "MPI_Allreduce", p->dataset, rc);
      break; /* the communicator is broken: nothing collective can follow */
    }
    for (int c = 0; c < calls; c++) {
      const size_t at = (size_t)c * CHUNK;
      const size_t n = st != WEFT_OK || at >= p->bytes ? 0
                       : p->bytes - at < CHUNK         ? p->bytes - at
                                                       : CHUNK;
      rc = MPI_File_write_at_all(fh, (MPI_Offset)(p->offset + (int64_t)at),
                                 n ? (const char *)p->data + at : NULL, (int)n, MPI_BYTE,
                                 MPI_STATUS_IGNORE);
      if (rc != MPI_SUCCESS && st == WEFT_OK) {
        st = mpiio_error(s, "MPI_File_write_at_all", p->dataset, rc);
      }
    }
  }
  rc = MPI_File_sync(fh);
  if (rc != MPI_SUCCESS && st == WEFT_OK) {
    st = mpiio_error(s, "MPI_File_sync", NULL, rc);
  }
  rc = MPI_File_close(&fh);
  if (rc != MPI_SUCCESS && st == WEFT_OK) {
    st = mpiio_error(s, "MPI_File_close", NULL, rc);
  }
  return st;
}

/* This rank's bytes into the .tmp file (no HDF5; MPI only over s->io_comm). */
static weft_status_t save_write(ckpt_save_t *s) {
  const weft_status_t st = s->io_comm == MPI_COMM_NULL ? write_posix(s) : write_mpiio(s);
  if (s->kill) {
    WEFT_WARN("ckpt", "WEFT_FAULT_KILL_IN_SAVE: killing this rank in the middle of saving %s",
              s->tmp);
    raise(SIGKILL);
  }
  s->write_status = st;
  atomic_store_explicit(&s->written, true, memory_order_release);
  return st;
}

/* Collective: every rank's write went through, then rank 0 commits. Frees the pieces. */
static weft_status_t save_commit(weft_comm_t *comm, ckpt_save_t *s) {
  weft_status_t st = weft_comm_agree(comm, s->write_status);
  free(s->pieces);
  s->pieces = NULL;
  if (st != WEFT_OK) {
    WEFT_ERROR("ckpt", "saving '%s' failed; it stays a .tmp file, 'latest' is unchanged", s->tmp);
    return st;
  }
  st = weft_comm_rank(comm) == 0 ? commit(s->dir, s->name, s->tmp, s->final, s->step, s->keep)
                                 : WEFT_OK;
  return weft_comm_agree(comm, st);
}

weft_status_t weft_ckpt_save(weft_comm_t *comm, const char *dir, const weft_ckpt_meta_t *meta,
                             const weft_ckpt_tensor_t *tensors, int count, int keep, char *path,
                             size_t path_size) {
  ckpt_save_t s;
  WEFT_CHECK(save_begin(comm, &s, dir, meta, tensors, count, keep, NULL,
                        meta->mpiio ? weft_comm_mpi(comm) : MPI_COMM_NULL));
  save_write(&s);
  WEFT_CHECK(save_commit(comm, &s));
  if (path) {
    snprintf(path, path_size, "%s", s.final);
  }
  return WEFT_OK;
}

/* ---- the background writer ------------------------------------------------------------------ */

struct weft_ckpt_writer {
  weft_comm_t *comm;
  MPI_Comm io_comm; /* the thread's own communicator for MPI-IO saves; made by the first */
  ckpt_save_t save;
  bool in_flight; /* begun, not yet committed */
  bool threaded;  /* `thread` runs save_write (false: it ran inline) */
  pthread_t thread;
  float *stage; /* this rank's owned rows, copied at begin */
  size_t stage_elems;
};

weft_status_t weft_ckpt_writer_create(weft_comm_t *comm, weft_ckpt_writer_t **writer_p) {
  weft_ckpt_writer_t *w = calloc(1, sizeof *w);
  if (!w) {
    return WEFT_ERR_NO_MEMORY;
  }
  w->comm = comm;
  w->io_comm = MPI_COMM_NULL;
  *writer_p = w;
  return WEFT_OK;
}

/* The writer thread's communicator for MPI-IO (a duplicate, so its collectives never match the
 * training thread's), or MPI_COMM_NULL (pwrite instead) when MPI does not allow two threads to
 * communicate at once. Collective (called from weft_ckpt_writer_start). */
static MPI_Comm writer_io_comm(weft_ckpt_writer_t *w) {
  int level = MPI_THREAD_SINGLE;
  MPI_Query_thread(&level);
  if (level < MPI_THREAD_MULTIPLE) { /* the same answer on every rank */
    if (weft_comm_rank(w->comm) == 0) {
      WEFT_WARN("ckpt",
                "MPI-IO saves in the background need MPI_THREAD_MULTIPLE (this MPI gives %d); "
                "writing with pwrite instead",
                level);
    }
    return MPI_COMM_NULL;
  }
  if (w->io_comm == MPI_COMM_NULL &&
      MPI_Comm_dup(weft_comm_mpi(w->comm), &w->io_comm) != MPI_SUCCESS) {
    w->io_comm = MPI_COMM_NULL; /* MPI's default handler aborts before this on failure */
  }
  return w->io_comm;
}

static void *write_thread(void *arg) {
  save_write(arg);
  return NULL;
}

weft_status_t weft_ckpt_writer_start(weft_ckpt_writer_t *w, const char *dir,
                                     const weft_ckpt_meta_t *meta,
                                     const weft_ckpt_tensor_t *tensors, int count, int keep) {
  WEFT_CHECK(weft_ckpt_writer_poll(w, true, NULL, NULL, 0)); /* one save at a time */
  size_t need = 1;
  for (int i = 0; i < count; i++) {
    need += tensors[i].owner ? (size_t)(tensors[i].rows * weft_ckpt_row_elems(&tensors[i])) : 0;
  }
  weft_status_t st = WEFT_OK;
  if (need > w->stage_elems) {
    free(w->stage);
    w->stage = malloc(need * sizeof(float));
    w->stage_elems = w->stage ? need : 0;
    if (!w->stage) {
      WEFT_ERROR("ckpt", "cannot allocate %zu bytes to stage a checkpoint", need * sizeof(float));
      st = WEFT_ERR_NO_MEMORY;
    }
  }
  WEFT_CHECK(weft_comm_agree(w->comm, st));
  WEFT_CHECK(save_begin(w->comm, &w->save, dir, meta, tensors, count, keep, w->stage,
                        meta->mpiio ? writer_io_comm(w) : MPI_COMM_NULL));
  w->in_flight = true;
  /* The thread blocks every signal, so SIGUSR1/SIGTERM reach the training thread's handler
   * and never interrupt a write. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  w->threaded = pthread_create(&w->thread, NULL, write_thread, &w->save) == 0;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (!w->threaded) { /* no thread to be had: write now rather than not at all */
    WEFT_WARN("ckpt", "cannot start the checkpoint writer thread; writing %s in the foreground",
              w->save.tmp);
    save_write(&w->save);
  }
  return WEFT_OK;
}

weft_status_t weft_ckpt_writer_poll(weft_ckpt_writer_t *w, bool wait, bool *committed_p, char *path,
                                    size_t path_size) {
  if (committed_p) {
    *committed_p = false;
  }
  if (!w->in_flight) {
    return WEFT_OK;
  }
  if (!wait) { /* commit only when every rank's thread is done; nobody blocks */
    int32_t mine = atomic_load_explicit(&w->save.written, memory_order_acquire), all = mine;
    WEFT_CHECK(weft_comm_allreduce(w->comm, &mine, &all, 1, WEFT_DTYPE_I32, WEFT_REDUCE_MIN,
                                   WEFT_MEM_HOST));
    if (!all) {
      return WEFT_OK;
    }
  }
  if (w->threaded) {
    pthread_join(w->thread, NULL);
    w->threaded = false;
  }
  w->in_flight = false;
  WEFT_CHECK(save_commit(w->comm, &w->save));
  if (committed_p) {
    *committed_p = true;
  }
  if (path) {
    snprintf(path, path_size, "%s", w->save.final);
  }
  return WEFT_OK;
}

void weft_ckpt_writer_destroy(weft_ckpt_writer_t *w) {
  if (!w) {
    return;
  }
  if (w->threaded) { /* not committed: the .tmp file is removed by the next save's rotation */
    pthread_join(w->thread, NULL);
  }
  free(w->save.pieces);
  free(w->stage);
  if (w->io_comm != MPI_COMM_NULL) {
    MPI_Comm_free(&w->io_comm);
  }
  free(w);
}
