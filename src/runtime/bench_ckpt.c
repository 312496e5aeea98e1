/* `weft bench ckpt`: checkpoint save and load bandwidth next to a raw sequential write and
 * read of the same bytes on the same disk, in the same run (docs/benchmarks.md,
 * "Checkpoints").
 *
 * The checkpoint is --tensors f32 tensors of --bytes in all, each split by rows over the ranks
 * (what a save of replicated parameters does: every rank writes an equal share) and saved
 * with the real commit protocol (weft_ckpt_save: checksums, the file's metadata through
 * HDF5, every rank's rows with pwrite, fdatasync, rename, latest). Loading reads the same slabs
 * back and verifies every checksum (weft_ckpt_read). The same save is then made in the
 * background (weft_ckpt_writer_start, then weft_ckpt_writer_poll with wait): the time the
 * caller is held and the time until the commit. The baseline: rank 0 alone writes the same number
 * of bytes to a plain file with write() in 8 MiB pieces and fsync()s it, then reads it back with
 * read(). Before each read the file's pages are dropped from the page cache (posix_fadvise DONTNEED
 * on the fsync'd file, which needs no privileges), so both reads come from the disk. Medians over
 * --iters repetitions. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "bench_util.h"
#include "cli.h"
#include "session.h"
#include "weft/check.h"
#include "weft/checkpoint.h"
#include "weft/log.h"
#include "weft/timer.h"

#define CMD   "weft bench ckpt"
#define CHUNK ((size_t)8 << 20)

static const weft_cli_command_t k_command = {
    "bench ckpt", "Checkpoint save/load GB/s next to a raw sequential write/read of the bytes.",
    "[--bytes SIZE] [--tensors N] [--dir DIR] [--io posix|mpiio] [-n ITERS] [--json]", NULL};

typedef struct bench_opts {
  size_t bytes;
  long tensors, iters;
  const char *dir, *device, *io;
  bool json;
} bench_opts_t;

/* Evicts a file's (clean, fsync'd) pages from the page cache, so the next read hits the disk. */
static void drop_cached(const char *path) {
  const int fd = open(path, O_RDONLY);
  if (fd >= 0) {
    fdatasync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
  }
}

/* Raw sequential write + fsync and read of `bytes` from one file, on this process. */
static weft_status_t raw_io(const char *path, size_t bytes, double *write_s, double *read_s) {
  char *buf = malloc(CHUNK);
  if (!buf) {
    return WEFT_ERR_NO_MEMORY;
  }
  memset(buf, 0x5a, CHUNK);
  weft_status_t st = WEFT_OK;
  double t0 = weft_time_now();
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  for (size_t done = 0; fd >= 0 && done < bytes && st == WEFT_OK;) {
    const size_t n = bytes - done < CHUNK ? bytes - done : CHUNK;
    const ssize_t w = write(fd, buf, n);
    st = w > 0 ? WEFT_OK : WEFT_ERR_IO;
    done += w > 0 ? (size_t)w : 0;
  }
  if (fd < 0 || fsync(fd) != 0 || close(fd) != 0 || st != WEFT_OK) {
    WEFT_ERROR("bench", "raw write of '%s' failed: %s", path, strerror(errno));
    free(buf);
    return WEFT_ERR_IO;
  }
  *write_s = weft_time_now() - t0;
  drop_cached(path);
  t0 = weft_time_now();
  fd = open(path, O_RDONLY);
  for (ssize_t r = 1; fd >= 0 && r > 0;) {
    r = read(fd, buf, CHUNK);
  }
  if (fd >= 0) {
    close(fd);
  }
  *read_s = weft_time_now() - t0;
  unlink(path);
  free(buf);
  return fd >= 0 ? WEFT_OK : WEFT_ERR_IO;
}

/* Per-iteration timings, seconds. */
typedef struct samples {
  double *save, *load, *bg_block, *bg_total, *raw_w, *raw_r;
} samples_t;

static weft_status_t samples_alloc(samples_t *x, long iters) {
  double **all[] = {&x->save, &x->load, &x->bg_block, &x->bg_total, &x->raw_w, &x->raw_r};
  bool ok = true;
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
    *all[i] = calloc((size_t)iters, sizeof(double));
    ok = ok && *all[i];
  }
  return ok ? WEFT_OK : WEFT_ERR_NO_MEMORY;
}

static void samples_free(samples_t *x) {
  free(x->save);
  free(x->load);
  free(x->bg_block);
  free(x->bg_total);
  free(x->raw_w);
  free(x->raw_r);
}

/* Before a timed phase: rank 0 deletes the last checkpoint (each save writes a new file, as
 * the raw write does: renaming over the old one would add the freeing of its blocks to the
 * save) and flushes all writeback, so no earlier I/O lands in the timing. */
static void settle(weft_session_t *s, const char *dir, const char *last) {
  if (s->boot.world_rank == 0) {
    if (last) {
      char latest[4200];
      snprintf(latest, sizeof latest, "%s/latest", dir);
      unlink(last);
      unlink(latest);
    }
    sync();
  }
  weft_comm_barrier(s->world);
}

/* Median over the iterations of num[i] / den[i]: each ratio pairs two timings taken seconds
 * apart, which cancels the slow drift of a shared disk's speed (this VM's varies 2x over
 * minutes) better than a ratio of two medians would. */
static double paired_ratio(const double *num, const double *den, long n) {
  double *r = malloc((size_t)n * sizeof *r);
  if (!r) {
    return 0.0 / 0.0;
  }
  for (long i = 0; i < n; i++) {
    r[i] = num[i] / den[i];
  }
  const double m = weft_bench_median(r, n);
  free(r);
  return m;
}

static void report(const bench_opts_t *o, int P, double total, const samples_t *x) {
  const long n = o->iters;
  const double sv = weft_bench_median(x->save, n), ld = weft_bench_median(x->load, n);
  const double bb = weft_bench_median(x->bg_block, n), bt = weft_bench_median(x->bg_total, n);
  const double rw = weft_bench_median(x->raw_w, n), rr = weft_bench_median(x->raw_r, n);
  const double save_ratio = paired_ratio(x->raw_w, x->save, n);
  const double load_ratio = paired_ratio(x->raw_r, x->load, n);
  const double block_ratio = paired_ratio(x->bg_block, x->raw_w, n);
  if (o->json) {
    printf(
        "{\"bench\":\"ckpt\",\"io\":\"%s\",\"ranks\":%d,\"bytes\":%.0f,\"tensors\":%ld,"
        "\"iters\":%ld,"
        "\"save_s\":%.6f,\"load_s\":%.6f,\"raw_write_s\":%.6f,\"raw_read_s\":%.6f,"
        "\"save_gbps\":%.6f,\"load_gbps\":%.6f,\"raw_write_gbps\":%.6f,"
        "\"raw_read_gbps\":%.6f,\"save_ratio\":%.5f,\"load_ratio\":%.5f,"
        "\"bg_block_s\":%.6f,\"bg_total_s\":%.6f,\"bg_block_ratio\":%.5f}\n",
        o->io, P, total, o->tensors, n, sv, ld, rw, rr, total / sv / 1e9, total / ld / 1e9,
        total / rw / 1e9, total / rr / 1e9, save_ratio, load_ratio, bb, bt, block_ratio);
  } else {
    printf(
        "weft bench ckpt: %d ranks, %.1f MB in %ld tensors (%s), rows written with %s\n"
        "  save %.3f s = %.2f GB/s, raw sequential write %.2f GB/s: %.0f%%\n"
        "  load %.3f s = %.2f GB/s (checksums verified), raw read %.2f GB/s: %.0f%%\n"
        "  background save: caller blocked %.3f s (%.0f%% of the raw write's time), "
        "committed after %.3f s\n"
        "  (medians over %ld iterations; percentages: medians of per-iteration ratios)\n",
        P, total / 1e6, o->tensors, o->dir, o->io, sv, total / sv / 1e9, total / rw / 1e9,
        100 * save_ratio, ld, total / ld / 1e9, total / rr / 1e9, 100 * load_ratio, bb,
        100 * block_ratio, bt, n);
  }
  fflush(stdout);
}

static weft_status_t run(const bench_opts_t *o, weft_session_t *s) {
  const int rank = s->boot.world_rank, P = s->boot.world_size;
  const int64_t cols = 1024;
  const int64_t rows = (int64_t)(o->bytes / 4 / (size_t)cols / (size_t)o->tensors);
  if (rows < 1) {
    WEFT_ERROR("bench", "--bytes %zu is too small for %ld tensors of 1024 columns", o->bytes,
               o->tensors);
    return WEFT_ERR_INVALID_ARG;
  }
  weft_ckpt_tensor_t *t = calloc((size_t)o->tensors, sizeof *t);
  const int64_t my_rows_max = rows / P + 1;
  float *data = malloc((size_t)(my_rows_max * cols * o->tensors) * sizeof(float));
  if (!t || !data) {
    free(t);
    free(data);
    return WEFT_ERR_NO_MEMORY;
  }
  for (long i = 0; i < o->tensors; i++) {
    snprintf(t[i].name, sizeof t[i].name, "/params/tensor%03ld", i);
    t[i].ndim = 2;
    t[i].shape[0] = rows;
    t[i].shape[1] = cols;
    t[i].start = rank * rows / P;
    t[i].rows = (rank + 1) * rows / P - t[i].start;
    t[i].owner = true;
    t[i].data = data + i * my_rows_max * cols;
    for (int64_t e = 0; e < t[i].rows * cols; e++) {
      t[i].data[e] = (float)((t[i].start * cols + e) % 977) * 0.25f;
    }
  }
  const double total = (double)(rows * cols * o->tensors * 4);
  samples_t x;
  weft_status_t st = samples_alloc(&x, o->iters);
  weft_ckpt_writer_t *writer = NULL;
  if (st == WEFT_OK) st = weft_ckpt_writer_create(s->world, &writer);
  char path[4096], raw[4096];
  snprintf(raw, sizeof raw, "%s/raw-%d.bin", o->dir, getpid());
  const weft_ckpt_meta_t meta = {.step = 1,
                                 .config_json = "{}",
                                 .model_json = "{}",
                                 .mesh_json = "{}",
                                 .fault_kill_rank = -1,
                                 .mpiio = strcmp(o->io, "mpiio") == 0};
  for (long it = 0; it < o->iters && st == WEFT_OK; it++) {
    settle(s, o->dir, NULL);
    double t0 = weft_time_now();
    st = weft_ckpt_save(s->world, o->dir, &meta, t, (int)o->tensors, 1, path, sizeof path);
    weft_comm_barrier(s->world);
    x.save[it] = weft_time_now() - t0;
    weft_tensor_file_t *file = NULL;
    if (st == WEFT_OK && rank == 0) {
      drop_cached(path);
    }
    weft_comm_barrier(s->world);
    t0 = weft_time_now();
    if (st == WEFT_OK) st = weft_ckpt_open(s->world, path, &file);
    if (st == WEFT_OK) st = weft_ckpt_read(file, t, (int)o->tensors);
    if (file) weft_tensor_file_close(file);
    weft_comm_barrier(s->world);
    x.load[it] = weft_time_now() - t0;
    /* The same save in the background: how long the caller is held (staging copy, checksums,
     * metadata), and how long until it is committed. */
    settle(s, o->dir, st == WEFT_OK ? path : NULL);
    t0 = weft_time_now();
    if (st == WEFT_OK) st = weft_ckpt_writer_start(writer, o->dir, &meta, t, (int)o->tensors, 1);
    weft_comm_barrier(s->world);
    x.bg_block[it] = weft_time_now() - t0;
    if (st == WEFT_OK) st = weft_ckpt_writer_poll(writer, true, NULL, NULL, 0);
    weft_comm_barrier(s->world);
    x.bg_total[it] = weft_time_now() - t0;
    settle(s, o->dir, st == WEFT_OK ? path : NULL);
    if (st == WEFT_OK && rank == 0) {
      st = raw_io(raw, (size_t)total, &x.raw_w[it], &x.raw_r[it]);
    }
  }
  if (st == WEFT_OK && rank == 0) {
    report(o, P, total, &x);
  }
  weft_ckpt_writer_destroy(writer);
  samples_free(&x);
  free(t);
  free(data);
  return st;
}

int weft_bench_ckpt(int argc, char **argv) {
  bench_opts_t o = {.bytes = (size_t)256 << 20,
                    .tensors = 16,
                    .iters = 5,
                    .dir = NULL,
                    .device = "cpu",
                    .io = "posix"};
  const weft_cli_flag_t flags[] = {
      {"bytes", 'b', WEFT_CLI_SIZE, &o.bytes, "SIZE", "checkpoint size (256M)"},
      {"tensors", 0, WEFT_CLI_INT, &o.tensors, "N", "tensors in it (16)"},
      {"dir", 0, WEFT_CLI_STRING, &o.dir, "DIR", "where to write (a new directory under $TMPDIR)"},
      {"iters", 'n', WEFT_CLI_INT, &o.iters, "N", "repetitions, median reported (5)"},
      {"io", 0, WEFT_CLI_STRING, &o.io, "posix|mpiio", "how the rows are written (posix)"},
      {"json", 0, WEFT_CLI_BOOL, &o.json, NULL, "one JSON object on stdout"},
  };
  bool help = false;
  if (weft_cli_parse(&k_command, flags, sizeof flags / sizeof flags[0], argc, argv, &help) !=
      WEFT_OK) {
    return WEFT_EXIT_USAGE;
  }
  if (help) {
    return WEFT_EXIT_OK;
  }
  if (strcmp(o.io, "posix") != 0 && strcmp(o.io, "mpiio") != 0) {
    fprintf(stderr, CMD ": --io '%s': expected posix or mpiio\n", o.io);
    return WEFT_EXIT_USAGE;
  }
  if (o.tensors < 1 || o.iters < 1) {
    fprintf(stderr, CMD ": --tensors %ld and --iters %ld must be >= 1\n", o.tensors, o.iters);
    return WEFT_EXIT_USAGE;
  }
  char dir[4096];
  if (!o.dir) {
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/weft-bench-ckpt", tmp && *tmp ? tmp : "/tmp");
    o.dir = dir;
  }
  weft_session_t session;
  weft_session_start(&session, "bench ckpt", &argc, &argv, o.device);
  return weft_session_end(&session, run(&o, &session));
}
