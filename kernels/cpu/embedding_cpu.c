/* CPU back end of the token embedding (weft/embedding.h). ids are in range (checked by
 * embedding.c before any write).
 *
 *   forward   row copies, tokens split over threads.
 *   backward  dtable[ids[t], :] += dy[t, :] in increasing t. Threads split the VOCABULARY: each
 *             scans all ids (4 bytes a token) and adds the dy rows of the ids it owns, in
 *             increasing t. Each dtable row is written by one thread in the fixed order, so the
 *             result is bitwise the same for any thread count (and the CUDA kernel's, which
 *             does the same f32 adds in the same order).
 * Rejected: splitting tokens with per-thread partial tables (scratch of V d floats per thread,
 * and a sum order that depends on the thread count) and splitting columns (narrow slabs of each
 * dy row per thread when d is small). A skewed id distribution can leave a thread with most of
 * the rows; acceptable for a kernel that moves n d floats once. */
#include <stdint.h>
#include <string.h>

#include "kernel_ctx_internal.h"
#include "layer_ops_internal.h"

typedef struct emb_job {
  int64_t tokens, dim;
  const float *table, *dy;
  const int32_t *ids;
  float *y, *dtable;
} emb_job_t;

static void emb_forward_tokens(const void *arg, int64_t t0, int64_t t1) {
  const emb_job_t *j = arg;
  for (int64_t t = t0; t < t1; t++)
    memcpy(j->y + t * j->dim, j->table + (int64_t)j->ids[t] * j->dim,
           (size_t)j->dim * sizeof(float));
}

weft_status_t weft_embedding_forward_cpu(weft_kernel_ctx_t *ctx, int64_t tokens, int64_t vocab,
                                         int64_t dim, const float *table, const int32_t *ids,
                                         float *y) {
  (void)ctx, (void)vocab;
  emb_job_t j = {.dim = dim, .table = table, .ids = ids, .y = y};
  weft_cpu_parallel_for(&j, emb_forward_tokens, tokens, 2 * dim);
  return WEFT_OK;
}

/* Rows [v0, v1) of dtable. */
static void emb_backward_ids(const void *arg, int64_t v0, int64_t v1) {
  const emb_job_t *j = arg;
  const int64_t d = j->dim;
  for (int64_t t = 0; t < j->tokens; t++) {
    const int64_t v = j->ids[t];
    if (v < v0 || v >= v1) continue;
    float *restrict g = j->dtable + v * d;
    const float *restrict src = j->dy + t * d;
    for (int64_t c = 0; c < d; c++) g[c] += src[c];
  }
}

weft_status_t weft_embedding_backward_cpu(weft_kernel_ctx_t *ctx, int64_t tokens, int64_t vocab,
                                          int64_t dim, const int32_t *ids, const float *dy,
                                          float *dtable) {
  (void)ctx;
  emb_job_t j = {.tokens = tokens, .dim = dim, .dy = dy, .ids = ids, .dtable = dtable};
  /* work per vocabulary row: its share of the n d adds, plus the n id reads every thread does */
  int64_t work = (tokens * 3 * dim) / vocab + tokens / 16 + 1;
  weft_cpu_parallel_for(&j, emb_backward_ids, vocab, work);
  return WEFT_OK;
}
