/* Byte-level training data (data.h): corpus reading, windows, the epoch order. */
#define _DEFAULT_SOURCE /* DT_REG / lstat */
#include "data.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "splitmix.h"
#include "weft/log.h"

/* Bytes inspected for a NUL to tell a binary file from text (what grep and diff also do). */
#define DATA_SNIFF_BYTES 4096

struct weft_data {
  weft_data_config_t cfg;
  uint8_t *stream;
  int64_t bytes, files;
  int64_t windows, period; /* all windows; validation period (0 = none) */
  int64_t *train;          /* [W] training window numbers, in stream order */
  int64_t *val;            /* [V] validation window numbers */
  int64_t n_train, n_val;
  int64_t *perm; /* [W] the cached epoch's order */
  int64_t perm_epoch;
  double unigram_nats;
};

/* Appends the file at `path` to the stream, unless it is binary. *added_p tells which. */
static weft_status_t append_file(weft_data_t *d, const char *path, size_t *cap, bool *added_p) {
  *added_p = false;
  FILE *f = fopen(path, "rb");
  if (!f) {
    WEFT_ERROR("data", "cannot open '%s': %s", path, strerror(errno));
    return WEFT_ERR_IO;
  }
  weft_status_t st = WEFT_OK;
  const size_t start = (size_t)d->bytes;
  for (;;) {
    if ((size_t)d->bytes + 65536 + 1 > *cap) {
      size_t want = *cap ? 2 * *cap : 1 << 20;
      uint8_t *grown = realloc(d->stream, want);
      if (!grown) {
        st = WEFT_ERR_NO_MEMORY;
        break;
      }
      d->stream = grown;
      *cap = want;
    }
    size_t got = fread(d->stream + d->bytes, 1, 65536, f);
    d->bytes += (int64_t)got;
    if (got < 65536) {
      if (ferror(f)) {
        WEFT_ERROR("data", "cannot read '%s': %s", path, strerror(errno));
        st = WEFT_ERR_IO;
      }
      break;
    }
  }
  fclose(f);
  if (st != WEFT_OK) {
    return st;
  }
  size_t len = (size_t)d->bytes - start, sniff = len < DATA_SNIFF_BYTES ? len : DATA_SNIFF_BYTES;
  if (len == 0 || memchr(d->stream + start, 0, sniff)) { /* empty or binary: drop it */
    d->bytes = (int64_t)start;
    return WEFT_OK;
  }
  if (d->stream[d->bytes - 1] != '\n') {
    d->stream[d->bytes++] = '\n'; /* room reserved above */
  }
  d->files++;
  *added_p = true;
  return WEFT_OK;
}

static int compare_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every regular, non-binary file of directory `dir`, in byte order of the names. */
static weft_status_t read_directory(weft_data_t *d, const char *dir, size_t *cap) {
  DIR *dp = opendir(dir);
  if (!dp) {
    WEFT_ERROR("data", "cannot open directory '%s': %s", dir, strerror(errno));
    return WEFT_ERR_IO;
  }
  char **names = NULL;
  size_t count = 0, room = 0;
  weft_status_t st = WEFT_OK;
  for (struct dirent *e; (e = readdir(dp)) != NULL;) {
    if (e->d_name[0] == '.') {
      continue;
    }
    if (count == room) {
      room = room ? 2 * room : 64;
      char **grown = realloc(names, room * sizeof *names);
      if (!grown) {
        st = WEFT_ERR_NO_MEMORY;
        break;
      }
      names = grown;
    }
    names[count] = strdup(e->d_name);
    if (!names[count]) {
      st = WEFT_ERR_NO_MEMORY;
      break;
    }
    count++;
  }
  closedir(dp);
  if (st == WEFT_OK && count > 1) { /* names is NULL for an empty directory */
    qsort(names, count, sizeof *names, compare_names);
  }
  for (size_t i = 0; i < count && st == WEFT_OK; ++i) {
    char path[4096];
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    if (lstat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) {
      continue; /* symbolic links (e.g. the fortune .u8 aliases), directories, devices */
    }
    bool added;
    st = append_file(d, path, cap, &added);
  }
  for (size_t i = 0; i < count; ++i) {
    free(names[i]);
  }
  free(names);
  if (st == WEFT_OK && d->files == 0) {
    WEFT_ERROR("data", "directory '%s' holds no text file", dir);
    st = WEFT_ERR_IO;
  }
  return st;
}

static void unigram(weft_data_t *d) {
  int64_t counts[256] = {0};
  for (int64_t i = 0; i < d->bytes; ++i) {
    counts[d->stream[i]]++;
  }
  double h = 0.0;
  for (int b = 0; b < 256; ++b) {
    if (counts[b] > 0) {
      double p = (double)counts[b] / (double)d->bytes;
      h -= p * log(p);
    }
  }
  d->unigram_nats = h;
}

static weft_status_t split_windows(weft_data_t *d) {
  const int64_t N = d->cfg.seq;
  d->windows = d->bytes > N ? (d->bytes - 1) / N : 0;
  d->period = d->cfg.val_fraction > 0 ? (int64_t)llround(1.0 / d->cfg.val_fraction) : 0;
  d->train = malloc((size_t)(d->windows > 0 ? d->windows : 1) * sizeof *d->train);
  d->val = malloc((size_t)(d->windows > 0 ? d->windows : 1) * sizeof *d->val);
  d->perm = malloc((size_t)(d->windows > 0 ? d->windows : 1) * sizeof *d->perm);
  if (!d->train || !d->val || !d->perm) {
    return WEFT_ERR_NO_MEMORY;
  }
  for (int64_t w = 0; w < d->windows; ++w) {
    if (d->period > 0 && w % d->period == d->period - 1) {
      d->val[d->n_val++] = w;
    } else {
      d->train[d->n_train++] = w;
    }
  }
  if (d->n_train == 0) {
    WEFT_ERROR("data",
               "'%s' holds %lld bytes: too short for one training sequence of --seq %lld tokens "
               "(%lld bytes with its targets)",
               d->cfg.path, (long long)d->bytes, (long long)N, (long long)N + 1);
    return WEFT_ERR_INVALID_ARG;
  }
  d->perm_epoch = -1;
  return WEFT_OK;
}

weft_status_t weft_data_open(const weft_data_config_t *cfg, weft_data_t **data_p) {
  if (!cfg || !cfg->path || !data_p) {
    WEFT_ERROR("data", "open: NULL configuration, path or output");
    return WEFT_ERR_INVALID_ARG;
  }
  *data_p = NULL;
  if (cfg->seq < 1 || !(cfg->val_fraction >= 0 && cfg->val_fraction <= 0.5)) {
    WEFT_ERROR("data", "open: seq=%lld must be >= 1 and the validation fraction %g in 0..0.5",
               (long long)cfg->seq, cfg->val_fraction);
    return WEFT_ERR_INVALID_ARG;
  }
  struct stat sb;
  if (stat(cfg->path, &sb) != 0) {
    WEFT_ERROR("data", "corpus '%s': %s", cfg->path, strerror(errno));
    return WEFT_ERR_IO;
  }
  weft_data_t *d = calloc(1, sizeof *d);
  if (!d) {
    return WEFT_ERR_NO_MEMORY;
  }
  d->cfg = *cfg;
  size_t cap = 0;
  weft_status_t st;
  if (S_ISDIR(sb.st_mode)) {
    st = read_directory(d, cfg->path, &cap);
  } else {
    bool added = false;
    st = append_file(d, cfg->path, &cap, &added);
    if (st == WEFT_OK && !added) {
      WEFT_ERROR("data", "corpus '%s' is empty or binary (a NUL byte in its first %d bytes)",
                 cfg->path, DATA_SNIFF_BYTES);
      st = WEFT_ERR_IO;
    }
  }
  if (st == WEFT_OK) {
    st = split_windows(d);
  }
  if (st != WEFT_OK) {
    weft_data_close(d);
    return st;
  }
  unigram(d);
  *data_p = d;
  return WEFT_OK;
}

void weft_data_close(weft_data_t *d) {
  if (!d) {
    return;
  }
  free(d->stream);
  free(d->train);
  free(d->val);
  free(d->perm);
  free(d);
}

int64_t weft_data_bytes(const weft_data_t *d) { return d->bytes; }
int64_t weft_data_files(const weft_data_t *d) { return d->files; }
int64_t weft_data_train_windows(const weft_data_t *d) { return d->n_train; }
int64_t weft_data_val_windows(const weft_data_t *d) { return d->n_val; }
double weft_data_unigram_nats(const weft_data_t *d) { return d->unigram_nats; }

/* Fisher-Yates over the training windows with a generator keyed by (seed, epoch). */
static void shuffle_epoch(weft_data_t *d, int64_t epoch) {
  memcpy(d->perm, d->train, (size_t)d->n_train * sizeof *d->perm);
  uint64_t state = weft_splitmix64(d->cfg.seed ^ weft_splitmix64((uint64_t)epoch + 1));
  for (int64_t i = d->n_train - 1; i > 0; --i) {
    state = weft_splitmix64(state);
    int64_t j = (int64_t)(state % (uint64_t)(i + 1));
    int64_t t = d->perm[i];
    d->perm[i] = d->perm[j];
    d->perm[j] = t;
  }
  d->perm_epoch = epoch;
}

weft_status_t weft_data_train_sample(weft_data_t *d, int64_t j, uint8_t *out) {
  if (j < 0 || !out) {
    WEFT_ERROR("data", "train sample %lld: index must be >= 0 and out non-NULL", (long long)j);
    return WEFT_ERR_INVALID_ARG;
  }
  const int64_t epoch = j / d->n_train;
  if (epoch != d->perm_epoch) {
    shuffle_epoch(d, epoch);
  }
  const int64_t w = d->perm[j % d->n_train];
  memcpy(out, d->stream + w * d->cfg.seq, (size_t)d->cfg.seq + 1);
  return WEFT_OK;
}

weft_status_t weft_data_val_sample(const weft_data_t *d, int64_t i, uint8_t *out) {
  if (i < 0 || i >= d->n_val || !out) {
    WEFT_ERROR("data", "validation sample %lld: there are %lld", (long long)i, (long long)d->n_val);
    return WEFT_ERR_INVALID_ARG;
  }
  memcpy(out, d->stream + d->val[i] * d->cfg.seq, (size_t)d->cfg.seq + 1);
  return WEFT_OK;
}

int64_t weft_data_sample_index(int64_t step, int micro, int micro_batches, int dp_rank, int dp,
                               int64_t rows_per_rank, int64_t row) {
  const int64_t global_micro = (int64_t)dp * rows_per_rank;
  return (step * micro_batches + micro) * global_micro + dp_rank * rows_per_rank + row;
}
