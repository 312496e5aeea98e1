/* The byte-level data reader (src/runtime/data.h) on a corpus built in a temporary directory:
 * which files are read (text yes; binary, symbolic links, dot files and subdirectories no),
 * the stream and its windows, the validation split, the epoch order (every training window
 * once per epoch, reproducible from the seed, different per epoch and per seed), the mapping of
 * (step, micro-batch, dp rank, row) to samples for several dp sizes, the unigram entropy, and
 * the errors a user can cause. The real default corpus is read too when it is installed. */
#define _DEFAULT_SOURCE /* mkdtemp, symlink */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data.h"
#include "test_util.h"
#include "weft/status.h"

static void write_file(const char *dir, const char *name, const void *bytes, size_t n) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  WT_CHECK(f != NULL, "cannot create %s", path);
  if (!f) return;
  fwrite(bytes, 1, n, f);
  fclose(f);
}

static void check_corpus(const char *dir) {
  /* a: 300 text bytes ending in '\n'; b: 101 bytes without a final newline (one is added). */
  char a[300], b[101];
  /* Printable bytes from a hash, so no two 17-byte windows are equal (the test finds a sample's
   * window by its content). */
  for (int i = 0; i < 300; i++) a[i] = (char)(33 + (unsigned)(i * 2654435761u >> 13) % 90);
  a[299] = '\n';
  for (int i = 0; i < 101; i++) b[i] = (char)(33 + (unsigned)((i + 977) * 2246822519u >> 11) % 90);
  write_file(dir, "b_second", b, sizeof b);
  write_file(dir, "a_first", a, sizeof a);
  const unsigned char bin[8] = {'x', 0, 1, 2, 3, 4, 5, 6};
  write_file(dir, "c.dat", bin, sizeof bin);
  write_file(dir, ".hidden", "hidden\n", 7);
  write_file(dir, "empty", "", 0);
  char link[512], sub[512];
  snprintf(link, sizeof link, "%s/a_first.u8", dir);
  WT_CHECK(symlink("a_first", link) == 0, "symlink");
  snprintf(sub, sizeof sub, "%s/subdir", dir);
  WT_CHECK(mkdir(sub, 0700) == 0, "mkdir");
  write_file(sub, "inner", "inner text\n", 11);

  const int64_t N = 16;
  weft_data_config_t cfg = {dir, N, 0.25, 7};
  weft_data_t *d = NULL;
  WT_CHECK_OK(weft_data_open(&cfg, &d));
  if (!d) return;
  const int64_t bytes = 300 + 102;
  WT_CHECK(weft_data_files(d) == 2, "files read: %lld, expected 2 (a_first, b_second)",
           (long long)weft_data_files(d));
  WT_CHECK(weft_data_bytes(d) == bytes, "stream %lld bytes, expected %lld",
           (long long)weft_data_bytes(d), (long long)bytes);
  const int64_t windows = (bytes - 1) / N; /* 25 */
  WT_CHECK(weft_data_val_windows(d) == windows / 4, "validation windows %lld, expected %lld",
           (long long)weft_data_val_windows(d), (long long)(windows / 4));
  WT_CHECK(weft_data_train_windows(d) + weft_data_val_windows(d) == windows, "window count");

  /* The stream in order: a, then b plus '\n'. */
  unsigned char stream[402];
  memcpy(stream, a, 300);
  memcpy(stream + 300, b, 101);
  stream[401] = '\n';
  unsigned char s[17];
  WT_CHECK_OK(weft_data_val_sample(d, 0, s)); /* window 3 */
  WT_CHECK(memcmp(s, stream + 3 * N, (size_t)N + 1) == 0, "validation window 0 is window 3");
  WT_CHECK_STATUS(weft_data_val_sample(d, weft_data_val_windows(d), s), WEFT_ERR_INVALID_ARG);

  /* Epochs: every training window exactly once, none a validation window. */
  const int64_t W = weft_data_train_windows(d);
  int seen[64] = {0};
  int64_t order0[64], order1[64];
  for (int64_t epoch = 0; epoch < 2; epoch++)
    for (int64_t j = 0; j < W; j++) {
      WT_CHECK_OK(weft_data_train_sample(d, epoch * W + j, s));
      int64_t w = -1;
      for (int64_t c = 0; c < windows; c++)
        if (memcmp(s, stream + c * N, (size_t)N + 1) == 0) w = c;
      WT_CHECK(w >= 0 && w % 4 != 3, "sample %lld is not a training window", (long long)j);
      if (w < 0) continue;
      if (epoch == 0) {
        seen[w]++;
        order0[j] = w;
      } else {
        order1[j] = w;
      }
    }
  for (int64_t w = 0; w < windows; w++)
    WT_CHECK(seen[w] == (w % 4 != 3), "window %lld seen %d times in epoch 0", (long long)w,
             seen[w]);
  WT_CHECK(memcmp(order0, order1, (size_t)W * sizeof order0[0]) != 0,
           "epochs 0 and 1 have the same order");

  /* Same seed: same stream; other seed: another order. */
  weft_data_t *same = NULL, *other = NULL;
  WT_CHECK_OK(weft_data_open(&cfg, &same));
  cfg.seed = 8;
  WT_CHECK_OK(weft_data_open(&cfg, &other));
  int differ = 0;
  unsigned char s2[17];
  for (int64_t j = 0; j < 2 * W && same && other; j++) {
    WT_CHECK_OK(weft_data_train_sample(d, j, s));
    WT_CHECK_OK(weft_data_train_sample(same, j, s2));
    WT_CHECK(memcmp(s, s2, sizeof s) == 0, "seed 7 twice: sample %lld differs", (long long)j);
    WT_CHECK_OK(weft_data_train_sample(other, j, s2));
    differ += memcmp(s, s2, sizeof s) != 0;
  }
  WT_CHECK(differ > 0, "seeds 7 and 8 give the same order");
  weft_data_close(same);
  weft_data_close(other);

  /* Unigram entropy against a direct count. */
  int64_t counts[256] = {0};
  for (int64_t i = 0; i < bytes; i++) counts[stream[i]]++;
  double h = 0;
  for (int c = 0; c < 256; c++)
    if (counts[c]) h -= (double)counts[c] / bytes * log((double)counts[c] / bytes);
  WT_CHECK(fabs(weft_data_unigram_nats(d) - h) < 1e-12, "unigram %.15g, expected %.15g",
           weft_data_unigram_nats(d), h);

  /* A window longer than the corpus: refused with the sizes. */
  weft_data_config_t big = {dir, bytes, 0, 1};
  weft_data_t *none = NULL;
  WT_CHECK_STATUS(weft_data_open(&big, &none), WEFT_ERR_INVALID_ARG);
  weft_data_close(d);
}

/* Micro-batch m of step s is the same set of samples for every dp size. */
static void check_sample_index(void) {
  const int M = 3;
  const int64_t global_micro = 8;
  for (int64_t step = 0; step < 3; step++)
    for (int m = 0; m < M; m++)
      for (int dp = 1; dp <= 8; dp *= 2) {
        const int64_t rows = global_micro / dp;
        int64_t lo = INT64_MAX, hi = -1, sum = 0;
        for (int r = 0; r < dp; r++)
          for (int64_t i = 0; i < rows; i++) {
            int64_t j = weft_data_sample_index(step, m, M, r, dp, rows, i);
            lo = j < lo ? j : lo;
            hi = j > hi ? j : hi;
            sum += j;
          }
        const int64_t first = (step * M + m) * global_micro;
        WT_CHECK(lo == first && hi == first + global_micro - 1 &&
                     sum == global_micro * first + global_micro * (global_micro - 1) / 2,
                 "step %lld micro %d dp %d: samples %lld..%lld", (long long)step, m, dp,
                 (long long)lo, (long long)hi);
      }
}

static void check_errors(const char *dir) {
  weft_data_t *d = NULL;
  weft_data_config_t cfg = {"/nonexistent/weft-corpus", 16, 0.05, 1};
  WT_CHECK_STATUS(weft_data_open(&cfg, &d), WEFT_ERR_IO);
  char empty[512];
  snprintf(empty, sizeof empty, "%s/emptydir", dir);
  WT_CHECK(mkdir(empty, 0700) == 0, "mkdir");
  cfg.path = empty;
  WT_CHECK_STATUS(weft_data_open(&cfg, &d), WEFT_ERR_IO);
  cfg.path = dir;
  cfg.seq = 0;
  WT_CHECK_STATUS(weft_data_open(&cfg, &d), WEFT_ERR_INVALID_ARG);
  cfg.seq = 16;
  cfg.val_fraction = 0.9;
  WT_CHECK_STATUS(weft_data_open(&cfg, &d), WEFT_ERR_INVALID_ARG);
  WT_CHECK(d == NULL, "a refused open left a reader behind");
}

/* The default corpus, when installed: read, and its unigram entropy printed for the record. */
static void check_default_corpus(void) {
  const char *path = "/usr/share/games/fortunes";
  struct stat sb;
  if (stat(path, &sb) != 0) return;
  weft_data_config_t cfg = {path, 256, 0.05, 1};
  weft_data_t *d = NULL;
  WT_CHECK_OK(weft_data_open(&cfg, &d));
  if (!d) return;
  WT_CHECK(weft_data_files(d) > 10 && weft_data_bytes(d) > 100000, "default corpus too small");
  printf("default corpus: %lld files, %lld bytes, %lld/%lld windows, unigram %.3f nats/byte\n",
         (long long)weft_data_files(d), (long long)weft_data_bytes(d),
         (long long)weft_data_train_windows(d), (long long)weft_data_val_windows(d),
         weft_data_unigram_nats(d));
  weft_data_close(d);
}

int main(void) {
  char dir[] = "/tmp/weft-test-data-XXXXXX";
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    return 1;
  }
  check_corpus(dir);
  check_sample_index();
  check_errors(dir);
  check_default_corpus();
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
  return weft_test_exit_code("test_data");
}
