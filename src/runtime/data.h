/* Byte-level training data: a text file or a directory of text files, packed into sequences,
 * split into training and validation windows, and served in a deterministic order that does
 * not depend on how the ranks are split (docs/model.md, "Loss and averaging").
 *
 * Corpus: a regular file, or the regular files of a directory (not recursive, symbolic links
 * skipped, in byte order of their names); a file whose first 4 KiB hold a NUL byte is binary
 * (e.g. the fortune package's .dat indexes) and skipped. The files are concatenated in that
 * order, each followed by a newline if it does not end with one, into one byte stream of
 * length n_bytes, held in memory (a corpus must fit in RAM; every rank holds a copy).
 *
 * Windows: window w is bytes [w N, w N + N + 1) of the stream (N = seq): N inputs and their N
 * next-byte targets, so consecutive windows share one byte and every byte is a target once.
 * Window w is held out for validation when w % period == period - 1, period = round(1 / val
 * fraction) (val fraction 0: none), which spreads validation over the whole corpus.
 *
 * Order: training samples form an endless stream; epoch e is a permutation of the training
 * windows drawn by Fisher-Yates from splitmix64(seed, e). Sample j of the stream is position
 * j % W of epoch j / W. weft_data_sample_index maps (step, micro-batch, dp rank, row) to j so
 * that micro-batch m of step s is the same set of sequences for every dp size.
 *
 * Rejected: streaming the corpus from disk (the default corpus is 2.8 MB; mmap can come when a
 * corpus does not fit), and sampling windows at random offsets (epochs would not see every
 * byte, and validation windows could overlap training ones). */
#ifndef WEFT_RUNTIME_DATA_H
#define WEFT_RUNTIME_DATA_H

#include <stdint.h>

#include "weft/status.h"

typedef struct weft_data weft_data_t;

typedef struct weft_data_config {
  const char *path;    /* file or directory */
  int64_t seq;         /* N: tokens per sequence, >= 1 */
  double val_fraction; /* 0 .. 0.5: share of windows held out (0 = no validation set) */
  uint64_t seed;       /* order of the training windows */
} weft_data_config_t;

/* Reads the corpus. Errors (logged with the path and the reason): WEFT_ERR_IO (missing or
 * unreadable path, no text file in a directory), WEFT_ERR_INVALID_ARG (seq < 1, fraction
 * outside 0 .. 0.5, a corpus too short for one training window of seq + 1 bytes),
 * WEFT_ERR_NO_MEMORY. */
weft_status_t weft_data_open(const weft_data_config_t *config, weft_data_t **data_p);
void weft_data_close(weft_data_t *data);

int64_t weft_data_bytes(const weft_data_t *data);         /* stream length */
int64_t weft_data_files(const weft_data_t *data);         /* text files read */
int64_t weft_data_train_windows(const weft_data_t *data); /* W */
int64_t weft_data_val_windows(const weft_data_t *data);

/* Training sample j >= 0 of the endless stream: out [seq + 1] bytes. Not thread-safe (the
 * current epoch's permutation is cached). */
weft_status_t weft_data_train_sample(weft_data_t *data, int64_t j, uint8_t *out);
/* Validation window i (0 <= i < weft_data_val_windows): out [seq + 1] bytes. */
weft_status_t weft_data_val_sample(const weft_data_t *data, int64_t i, uint8_t *out);

/* Stream index of row `row` of dp rank `dp_rank`'s share of micro-batch `micro` of step
 * `step`, with `micro_batches` micro-batches per step, `dp` data-parallel ranks and
 * `rows_per_rank` sequences per rank per micro-batch:
 *   j = (step * micro_batches + micro) * dp * rows_per_rank + dp_rank * rows_per_rank + row
 * Micro-batch m of step s is samples [(s M + m) G_m, (s M + m + 1) G_m), G_m = dp rows_per_rank,
 * whatever dp is, as long as the global micro-batch G_m stays the same. */
int64_t weft_data_sample_index(int64_t step, int micro, int micro_batches, int dp_rank, int dp,
                               int64_t rows_per_rank, int64_t row);

/* Entropy of the corpus's byte frequencies in nats per byte (the unigram baseline a model's
 * cross-entropy must beat; same unit as the loss), computed once at open. */
double weft_data_unigram_nats(const weft_data_t *data);

#endif /* WEFT_RUNTIME_DATA_H */
