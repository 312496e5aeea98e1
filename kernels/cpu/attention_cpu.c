/* CPU back end of block softmax attention (weft/attention.h): flash-style tiling in f32, own
 * vectorisable loops, pthreads over independent tiles.
 *
 * Tiles are ATTN_T = 64 queries x 64 keys. No [nq, nk] matrix exists: a work item keeps one
 * 64 x 64 score tile and 64-row accumulators in a per-thread scratch region carved from the
 * WEFT_KERNEL_WS_ATTN workspace (about 130 KiB for d = 64, so it stays in L2).
 *
 *   forward  item (b, h, query tile). Q^T of the tile is staged once; for every key tile the
 *            scores are computed transposed, S^T = K Q^T (keys are rows read straight from k),
 *            so the online softmax (running max m, sum l, in log2 units) runs down the columns
 *            with 64 queries per vector. out += P V reads V rows straight from v.
 *   dq       the same items and structure, recomputing p and dp = dout . v per tile:
 *            dq_i += scale * sum_j p_ij (dp_ij - delta_i) k_j.
 *   dk, dv   item (b, kv head, key tile). K^T and V^T of the tile are staged once; the item
 *            loops over the G query heads of its group and every query tile, recomputes p and
 *            ds, and accumulates dv_j += sum_i p_ij dout_i, dk_j += scale sum_i ds_ij q_i.
 * Every output row is owned by one item, so there are no atomics and no per-thread dq partials,
 * and results do not depend on the thread count. The price of the separate dq pass is two
 * extra tile products per pair (s and dp recomputed): 7 instead of 5 in the backward. Rejected:
 * per-thread dq partials reduced at the end (saves those two products but needs a barrier per
 * (b, kv head) and T copies of a dq slice).
 *
 * Masks follow the header: pair (i, j) is allowed iff q_pos[i] >= 0, kv_pos[j] >= 0 and, when
 * causal, kv_pos[j] <= q_pos[i]. Each tile's smallest and largest valid position (positions
 * need not be sorted: zigzag blocks) classify a tile pair as skipped (nothing allowed: this is
 * what halves causal work), full (everything allowed: no per-element test) or masked.
 *
 * Products go through one register-blocked micro-kernel (attn_mk: 4 rows x 64 columns, 16
 * vector accumulators with AVX-512) written as plain loops: GCC vectorises the 64-wide
 * constant-trip loop at -O2 and `#pragma GCC unroll` keeps the accumulators in registers.
 * fmaf asks for a fused multiply-add explicitly, because ISO C mode (-std=c11) turns off
 * contraction of a*b+c. The build targets baseline x86-64 (SSE2, no FMA), so the work
 * items are compiled three times (AVX-512, AVX2+FMA, baseline; see ATTN_ITEMS) and picked at
 * run time. On AVX2 the products vectorise but the clamped/masked softmax loops do not (GCC
 * 12 cannot if-convert them without AVX-512 masking under -ftrapping-math): correct but not
 * tuned. The baseline copy, for x86 CPUs without AVX2/FMA, calls libm's fmaf per element:
 * correct, an order of magnitude slower. exp2 is a polynomial (attn_exp2) so that it vectorises as
 * well; libm's expf would be a scalar call per score. Rejected: cblas_sgemm per tile (OpenBLAS's
 * thread count is global, so calling it from our own threads would oversubscribe, and per-call
 * overhead is large at 64 x 64 x 64) and intrinsics (three hand-written copies instead of one
 * loop). */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "attention_internal.h"
#include "kernel_ctx_internal.h"

#define ATTN_T  64 /* queries and keys per tile: the 64 x 64 score tile is 16 KiB */
#define ATTN_NR 64 /* micro-kernel columns (= ATTN_T, so a score tile is one column block) */
#define ATTN_MR 4  /* micro-kernel rows: 4 x 64 accumulators fill 16 of the 32 zmm registers */
/* Multiply-adds per extra thread below which a call stays on one thread: creating and joining
 * a thread costs tens of microseconds, 2^21 multiply-adds take about 100. */
#define ATTN_MIN_WORK_PER_THREAD ((int64_t)1 << 21)
#define ATTN_MAX_THREADS         256 /* bounds the worker array; far above any core count */

#define ATTN_LOG2E 1.4426950408889634f
#define ATTN_LN2   0.6931471805599453f

#define ATTN_INLINE static inline __attribute__((always_inline))
/* 1: also compile the work items for x86-64-v3 (AVX2, FMA) and v4 (AVX-512), see attn_isa.
 * Elsewhere (aarch64) FMA and vectors are in the baseline. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ATTN_X86_VARIANTS 1
#else
#define ATTN_X86_VARIANTS 0
#endif

/* Valid positions of one tile: lo..hi (hi < 0: none valid), pad: some token is padding. */
typedef struct attn_range {
  int64_t lo, hi;
  bool pad;
} attn_range_t;

typedef enum { ATTN_PAIR_SKIP, ATTN_PAIR_MASKED, ATTN_PAIR_FULL } attn_pair_t;

/* Everything a work item needs, shared read-only by the threads of one call. */
typedef struct attn_job {
  int64_t B, H, Hkv, G, nq, nk, d;
  int64_t dp;       /* d rounded up to ATTN_NR: width of the accumulators */
  int64_t ldq, ldk; /* token strides of q-like and k-like tensors: H*d, Hkv*d */
  int64_t nqt, nkt; /* tiles */
  float scale, c2;  /* c2 = scale * log2(e): scores go straight to log2 units */
  bool causal;
  const float *q, *k, *v, *dout, *lse, *delta;
  const int64_t *q_pos, *kv_pos;
  float *out, *lse_out, *dq, *dk, *dv;
  const attn_range_t *qr, *kr; /* [nqt], [nkt] */
} attn_job_t;

static int64_t attn_min(int64_t a, int64_t b) { return a < b ? a : b; }

/* ---- vectorisable building blocks (always inlined into the per-ISA work items) ---- */

/* 2^x in f32 for x in about [-127, 127] (below: 0, above: clamped), relative error ~1e-7:
 * x = n + f with n the nearest integer and |f| <= 1/2, 2^f by its Taylor polynomial of degree 7
 * (remainder (ln2/2)^8/8! = 5e-9), 2^n put into the exponent bits. Adding 1.5*2^23 rounds x to
 * an integer whose two's complement sits in the low mantissa bits, so no float-to-int
 * conversion is needed (and a NaN stays NaN instead of being undefined behaviour). */
ATTN_INLINE float attn_exp2(float x) {
  x = x < -127.0f ? -127.0f : x;
  x = x > 127.0f ? 127.0f : x;
  const float magic = 12582912.0f; /* 1.5 * 2^23 */
  float t = x + magic, n = t - magic, f = x - n;
  uint32_t tb;
  memcpy(&tb, &t, sizeof tb);
  uint32_t eb = (tb - 0x4B400000u + 127u) << 23; /* biased exponent of 2^n; n = -127 gives 0 */
  float pow2n;
  memcpy(&pow2n, &eb, sizeof pow2n);
  float p = 1.525273380405984e-05f;
  p = fmaf(p, f, 1.5403530393381606e-04f);
  p = fmaf(p, f, 1.3333558146428443e-03f);
  p = fmaf(p, f, 9.618129107628477e-03f);
  p = fmaf(p, f, 5.550410866482158e-02f);
  p = fmaf(p, f, 2.402265069591007e-01f);
  p = fmaf(p, f, 6.931471805599453e-01f);
  p = fmaf(p, f, 1.0f);
  return p * pow2n;
}

/* C[r][0..64) (+)= sum_{k < kdim} A(r, k) B[k][0..64) for r < rows (1..4), where
 * A(r, k) = a[r*ars + k*acs] (any strides: A is read one broadcast element at a time, so a
 * transposed A costs nothing) and B rows are 64 contiguous floats. Rows past `rows` compute
 * row 0 again and are not stored, which keeps the inner loop free of branches. */
ATTN_INLINE void attn_mk(int rows, int64_t kdim, const float *restrict a, ptrdiff_t ars,
                         ptrdiff_t acs, const float *restrict b, ptrdiff_t ldb, float *restrict c,
                         ptrdiff_t ldc, bool accumulate) {
  const float *a0 = a, *a1 = a + (rows > 1 ? ars : 0);
  const float *a2 = a + (rows > 2 ? 2 * ars : 0), *a3 = a + (rows > 3 ? 3 * ars : 0);
  float c0[ATTN_NR], c1[ATTN_NR], c2[ATTN_NR], c3[ATTN_NR];
  for (int j = 0; j < ATTN_NR; j++) c0[j] = c1[j] = c2[j] = c3[j] = 0.0f;
  for (int64_t k = 0; k < kdim; k++) {
    const float *restrict bk = b + k * ldb;
    float x0 = a0[k * acs], x1 = a1[k * acs], x2 = a2[k * acs], x3 = a3[k * acs];
#pragma GCC unroll 4
    for (int j = 0; j < ATTN_NR; j++) {
      c0[j] = fmaf(x0, bk[j], c0[j]);
      c1[j] = fmaf(x1, bk[j], c1[j]);
      c2[j] = fmaf(x2, bk[j], c2[j]);
      c3[j] = fmaf(x3, bk[j], c3[j]);
    }
  }
  float *const out[4] = {c, c + ldc, c + 2 * ldc, c + 3 * ldc};
  const float *const acc[4] = {c0, c1, c2, c3};
  for (int r = 0; r < rows; r++)
    for (int j = 0; j < ATTN_NR; j++) out[r][j] = (accumulate ? out[r][j] : 0.0f) + acc[r][j];
}

/* C[rows][ncols] (+)= A[rows][kdim] B[kdim][ncols], A(r, k) = a[r*ars + k*acs], ncols a
 * multiple of ATTN_NR. */
ATTN_INLINE void attn_gemm(int64_t rows, int64_t ncols, int64_t kdim, const float *a, ptrdiff_t ars,
                           ptrdiff_t acs, const float *b, ptrdiff_t ldb, float *c, ptrdiff_t ldc,
                           bool accumulate) {
  for (int64_t r = 0; r < rows; r += ATTN_MR)
    for (int64_t j = 0; j < ncols; j += ATTN_NR)
      attn_mk((int)attn_min(ATTN_MR, rows - r), kdim, a + r * ars, ars, acs, b + j, ldb,
              c + r * ldc + j, ldc, accumulate);
}

/* 64-wide row operations of the softmax. The parameters are restrict-qualified because -O2's
 * cost model does not vectorise a loop that would need runtime alias checks. */
ATTN_INLINE void attn_row_scale(float *restrict x, float a) {
  for (int i = 0; i < ATTN_T; i++) x[i] *= a;
}
ATTN_INLINE void attn_row_fill(float *restrict x, float a) {
  for (int i = 0; i < ATTN_T; i++) x[i] = a;
}
/* x[i] = x[i] * a where key position kp may be attended by query i (kp <= thr[i]), else -inf */
ATTN_INLINE void attn_row_mask_scale(float *restrict x, const int64_t *restrict thr, int64_t kp,
                                     float a) {
  for (int i = 0; i < ATTN_T; i++) x[i] = kp <= thr[i] ? x[i] * a : -INFINITY;
}
ATTN_INLINE void attn_row_max(float *restrict mx, const float *restrict x) {
  for (int i = 0; i < ATTN_T; i++) mx[i] = x[i] > mx[i] ? x[i] : mx[i];
}
/* x[i] = 2^(x[i] - shift[i]); sum[i] += x[i] (sum NULL: no sum) */
ATTN_INLINE void attn_row_exp(float *restrict x, const float *restrict shift, float *restrict sum) {
  if (sum) {
    for (int i = 0; i < ATTN_T; i++) {
      x[i] = attn_exp2(x[i] - shift[i]);
      sum[i] += x[i];
    }
  } else {
    for (int i = 0; i < ATTN_T; i++) x[i] = attn_exp2(x[i] - shift[i]);
  }
}
/* ds[i] = p[i] * (ds[i] - dl[i]) */
ATTN_INLINE void attn_row_ds(float *restrict ds, const float *restrict p,
                             const float *restrict dl) {
  for (int i = 0; i < ATTN_T; i++) ds[i] = p[i] * (ds[i] - dl[i]);
}
/* One query's row of p over 64 keys: p[c] = 2^(s[c] * a - l2) where allowed (kp[c] >= 0 and
 * kp[c] <= thr), else 0; kp NULL: every key allowed. */
ATTN_INLINE void attn_row_p(float *restrict p, const int64_t *restrict kp, int64_t thr, float a,
                            float l2) {
  if (kp) {
    for (int c = 0; c < ATTN_T; c++)
      p[c] = kp[c] >= 0 && kp[c] <= thr ? attn_exp2(p[c] * a - l2) : 0.0f;
  } else {
    for (int c = 0; c < ATTN_T; c++) p[c] = attn_exp2(p[c] * a - l2);
  }
}
/* ds[c] = p[c] * (ds[c] - dl) */
ATTN_INLINE void attn_row_ds1(float *restrict ds, const float *restrict p, float dl) {
  for (int c = 0; c < ATTN_T; c++) ds[c] = p[c] * (ds[c] - dl);
}

/* dst [d][64] = src^T for src [n][d] (row stride ld), columns n..63 zero. */
ATTN_INLINE void attn_transpose(const float *src, int64_t ld, int64_t n, int64_t d, float *dst) {
  for (int64_t i = 0; i < n; i++)
    for (int64_t c = 0; c < d; c++) dst[c * ATTN_T + i] = src[i * ld + c];
  for (int64_t c = 0; c < d; c++)
    for (int64_t i = n; i < ATTN_T; i++) dst[c * ATTN_T + i] = 0.0f;
}

/* The B operand of a product over d: n rows of width ATTN_NR-multiple dp. When d == dp the
 * rows are read in place; otherwise they are copied into `pad` with zero columns d..dp-1. */
ATTN_INLINE const float *attn_rows(const attn_job_t *j, const float *src, int64_t ld, int64_t n,
                                   float *pad, int64_t *ld_p) {
  if (j->d == j->dp) {
    *ld_p = ld;
    return src;
  }
  for (int64_t i = 0; i < n; i++) {
    memcpy(pad + i * j->dp, src + i * ld, (size_t)j->d * sizeof(float));
    memset(pad + i * j->dp + j->d, 0, (size_t)(j->dp - j->d) * sizeof(float));
  }
  *ld_p = j->dp;
  return pad;
}

/* Scores of a transposed tile, in place: row jj of st (key j0 + jj, 64 queries) becomes
 * s * c2, or -inf where the pair is not allowed. thr[i] is the largest key position query i
 * may attend (-1: none). */
ATTN_INLINE void attn_mask_cols(const attn_job_t *j, attn_pair_t pair, int64_t j0, int64_t bk,
                                const int64_t *thr, float *st) {
  for (int64_t jj = 0; jj < bk; jj++) {
    float *row = st + jj * ATTN_T;
    int64_t kp = j->kv_pos[j0 + jj];
    if (pair == ATTN_PAIR_FULL)
      attn_row_scale(row, j->c2);
    else if (kp < 0)
      attn_row_fill(row, -INFINITY);
    else
      attn_row_mask_scale(row, thr, kp, j->c2);
  }
}

/* Query thresholds of a tile for attn_mask_cols (rows n..63 get -1: no key). */
ATTN_INLINE void attn_thresholds(const attn_job_t *j, int64_t i0, int64_t n, int64_t *thr) {
  for (int64_t i = 0; i < ATTN_T; i++) {
    int64_t qp = i < n ? j->q_pos[i0 + i] : -1;
    thr[i] = qp < 0 ? -1 : j->causal ? qp : INT64_MAX;
  }
}

/* Classifies a (query tile, key tile) pair from the tiles' position ranges. */
ATTN_INLINE attn_pair_t attn_pair(const attn_job_t *j, int64_t qt, int64_t kt) {
  const attn_range_t *q = &j->qr[qt], *k = &j->kr[kt];
  if (q->hi < 0 || k->hi < 0) return ATTN_PAIR_SKIP; /* every query or every key padded */
  if (j->causal && k->lo > q->hi) return ATTN_PAIR_SKIP;
  if (q->pad || k->pad || (j->causal && k->hi > q->lo)) return ATTN_PAIR_MASKED;
  return ATTN_PAIR_FULL;
}

/* Offsets of token t, head h of batch b in [B, n, heads, d] tensors. */
static int64_t attn_tok(const attn_job_t *j, int64_t b, int64_t n, int64_t t, int64_t heads,
                        int64_t h) {
  return ((b * n + t) * heads + h) * j->d;
}

/* Carves `count` elements of `size` bytes from a scratch cursor, 64-byte aligned. */
static void *attn_take(char **cursor, int64_t count, size_t size) {
  void *p = *cursor;
  *cursor += ((size_t)count * size + 63) & ~(size_t)63;
  return p;
}

/* ---- work items ---- */

/* Forward of query tile qt of (b, h): item = (b*H + h) * nqt + (nqt-1-qt), so the later query
 * tiles, which have the most keys to attend under a causal mask, start first. */
ATTN_INLINE void attn_forward_tile(const attn_job_t *j, char *scratch, int64_t item) {
  int64_t bh = item / j->nqt, qt = j->nqt - 1 - item % j->nqt;
  int64_t b = bh / j->H, h = bh % j->H, kvh = h / j->G;
  int64_t i0 = qt * ATTN_T, bq = attn_min(ATTN_T, j->nq - i0), dp = j->dp;
  float *qtile = attn_take(&scratch, j->d * ATTN_T, sizeof(float)); /* [d][64] Q^T */
  float *st = attn_take(&scratch, ATTN_T * ATTN_T, sizeof(float));  /* [64 keys][64] S^T, P^T */
  float *o = attn_take(&scratch, ATTN_T * dp, sizeof(float));       /* [64][dp] */
  float *vpad = attn_take(&scratch, ATTN_T * dp, sizeof(float));    /* [64][dp] if d < dp */
  float *m = attn_take(&scratch, ATTN_T, sizeof(float)),
        *l = attn_take(&scratch, ATTN_T, sizeof(float));
  float *ms = attn_take(&scratch, ATTN_T, sizeof(float)),
        *alpha = attn_take(&scratch, ATTN_T, sizeof(float));
  float *lsum = attn_take(&scratch, ATTN_T, sizeof(float));
  int64_t *thr = attn_take(&scratch, ATTN_T, sizeof(int64_t));

  attn_transpose(j->q + attn_tok(j, b, j->nq, i0, j->H, h), j->ldq, bq, j->d, qtile);
  attn_thresholds(j, i0, bq, thr);
  for (int i = 0; i < ATTN_T; i++) m[i] = -INFINITY, l[i] = 0.0f;
  memset(o, 0, (size_t)(ATTN_T * dp) * sizeof(float));
  for (int64_t kt = 0; kt < j->nkt; kt++) {
    attn_pair_t pair = attn_pair(j, qt, kt);
    if (pair == ATTN_PAIR_SKIP) continue;
    int64_t j0 = kt * ATTN_T, bk = attn_min(ATTN_T, j->nk - j0), ldv;
    const float *kb = j->k + attn_tok(j, b, j->nk, j0, j->Hkv, kvh);
    const float *vb = j->v + attn_tok(j, b, j->nk, j0, j->Hkv, kvh);
    attn_gemm(bk, ATTN_T, j->d, kb, j->ldk, 1, qtile, ATTN_T, st, ATTN_T, false); /* S^T */
    attn_mask_cols(j, pair, j0, bk, thr, st);
    /* Online softmax down the columns: new max, rescale factor, p and its column sums. */
    memcpy(ms, m, ATTN_T * sizeof(float));
    for (int64_t jj = 0; jj < bk; jj++) attn_row_max(ms, st + jj * ATTN_T);
    for (int i = 0; i < ATTN_T; i++) {
      float mnew = ms[i];
      ms[i] = mnew == -INFINITY ? 0.0f : mnew; /* no key yet: any finite shift, p is 0 */
      alpha[i] = attn_exp2(m[i] - ms[i]);      /* m = -inf: 0 */
      m[i] = mnew;
      lsum[i] = 0.0f;
    }
    for (int64_t jj = 0; jj < bk; jj++) attn_row_exp(st + jj * ATTN_T, ms, lsum);
    for (int64_t i = 0; i < bq; i++) {
      l[i] = l[i] * alpha[i] + lsum[i];
      if (alpha[i] != 1.0f)
        for (int64_t c0 = 0; c0 < dp; c0 += ATTN_NR) attn_row_scale(o + i * dp + c0, alpha[i]);
    }
    const float *vrows = attn_rows(j, vb, j->ldk, bk, vpad, &ldv);
    attn_gemm(bq, dp, bk, st, 1, ATTN_T, vrows, ldv, o, dp, true); /* O += P V */
  }
  float *lse = j->lse_out + (b * j->H + h) * j->nq + i0;
  for (int64_t i = 0; i < bq; i++) {
    float *orow = j->out + attn_tok(j, b, j->nq, i0 + i, j->H, h);
    float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f; /* l = 0: no allowed key, out = 0 */
    for (int64_t c = 0; c < j->d; c++) orow[c] = o[i * dp + c] * inv;
    lse[i] = l[i] > 0.0f ? (m[i] + log2f(l[i])) * ATTN_LN2 : -INFINITY;
  }
}

/* dq of query tile qt of (b, h); same item order as the forward. */
ATTN_INLINE void attn_dq_tile(const attn_job_t *j, char *scratch, int64_t item) {
  int64_t bh = item / j->nqt, qt = j->nqt - 1 - item % j->nqt;
  int64_t b = bh / j->H, h = bh % j->H, kvh = h / j->G;
  int64_t i0 = qt * ATTN_T, bq = attn_min(ATTN_T, j->nq - i0), dp = j->dp;
  float *qtile = attn_take(&scratch, j->d * ATTN_T, sizeof(float));  /* [d][64] Q^T */
  float *dotile = attn_take(&scratch, j->d * ATTN_T, sizeof(float)); /* [d][64] dO^T */
  float *st = attn_take(&scratch, ATTN_T * ATTN_T, sizeof(float));   /* P^T */
  float *dst = attn_take(&scratch, ATTN_T * ATTN_T, sizeof(float));  /* dP^T, then dS^T */
  float *acc = attn_take(&scratch, ATTN_T * dp, sizeof(float));      /* [64][dp] dq / scale */
  float *kpad = attn_take(&scratch, ATTN_T * dp, sizeof(float));
  float *lse2 = attn_take(&scratch, ATTN_T, sizeof(float)),
        *dl = attn_take(&scratch, ATTN_T, sizeof(float));
  int64_t *thr = attn_take(&scratch, ATTN_T, sizeof(int64_t));

  attn_transpose(j->q + attn_tok(j, b, j->nq, i0, j->H, h), j->ldq, bq, j->d, qtile);
  attn_transpose(j->dout + attn_tok(j, b, j->nq, i0, j->H, h), j->ldq, bq, j->d, dotile);
  attn_thresholds(j, i0, bq, thr);
  const float *lse = j->lse + (b * j->H + h) * j->nq + i0;
  const float *delta = j->delta + (b * j->H + h) * j->nq + i0;
  for (int64_t i = 0; i < ATTN_T; i++) {
    /* A dead query (padded, past the tile, or no allowed key anywhere) gets lse2 = +inf, so
     * every p of its column is exp2(-inf) = 0 without a test in the loops. */
    bool live = i < bq && thr[i] >= 0 && lse[i] != -INFINITY;
    lse2[i] = live ? lse[i] * ATTN_LOG2E : INFINITY;
    dl[i] = live ? delta[i] : 0.0f;
  }
  memset(acc, 0, (size_t)(ATTN_T * dp) * sizeof(float));
  for (int64_t kt = 0; kt < j->nkt; kt++) {
    attn_pair_t pair = attn_pair(j, qt, kt);
    if (pair == ATTN_PAIR_SKIP) continue;
    int64_t j0 = kt * ATTN_T, bk = attn_min(ATTN_T, j->nk - j0), ldk;
    const float *kb = j->k + attn_tok(j, b, j->nk, j0, j->Hkv, kvh);
    const float *vb = j->v + attn_tok(j, b, j->nk, j0, j->Hkv, kvh);
    attn_gemm(bk, ATTN_T, j->d, kb, j->ldk, 1, qtile, ATTN_T, st, ATTN_T, false);
    attn_mask_cols(j, pair, j0, bk, thr, st);
    attn_gemm(bk, ATTN_T, j->d, vb, j->ldk, 1, dotile, ATTN_T, dst, ATTN_T, false);
    for (int64_t jj = 0; jj < bk; jj++) {
      attn_row_exp(st + jj * ATTN_T, lse2, NULL);
      attn_row_ds(dst + jj * ATTN_T, st + jj * ATTN_T, dl);
    }
    const float *krows = attn_rows(j, kb, j->ldk, bk, kpad, &ldk);
    attn_gemm(bq, dp, bk, dst, 1, ATTN_T, krows, ldk, acc, dp, true); /* += dS K */
  }
  for (int64_t i = 0; i < bq; i++) {
    float *row = j->dq + attn_tok(j, b, j->nq, i0 + i, j->H, h);
    for (int64_t c = 0; c < j->d; c++) row[c] += j->scale * acc[i * dp + c];
  }
}

/* dk, dv of key tile kt of (b, kv head): item = (b*Hkv + kvh) * nkt + kt. */
ATTN_INLINE void attn_dkdv_tile(const attn_job_t *j, char *scratch, int64_t item) {
  int64_t bkv = item / j->nkt, kt = item % j->nkt;
  int64_t b = bkv / j->Hkv, kvh = bkv % j->Hkv;
  int64_t j0 = kt * ATTN_T, bk = attn_min(ATTN_T, j->nk - j0), dp = j->dp;
  float *ktile = attn_take(&scratch, j->d * ATTN_T, sizeof(float)); /* [d][64] K^T */
  float *vtile = attn_take(&scratch, j->d * ATTN_T, sizeof(float)); /* [d][64] V^T */
  float *s = attn_take(&scratch, ATTN_T * ATTN_T, sizeof(float));   /* [64 q][64 k] P */
  float *dps = attn_take(&scratch, ATTN_T * ATTN_T, sizeof(float)); /* dP, then dS */
  float *dkacc = attn_take(&scratch, ATTN_T * dp, sizeof(float));   /* [64 k][dp] dk / scale */
  float *dvacc = attn_take(&scratch, ATTN_T * dp, sizeof(float));
  float *qpad = attn_take(&scratch, ATTN_T * dp, sizeof(float));
  float *dopad = attn_take(&scratch, ATTN_T * dp, sizeof(float));
  int64_t *kp = attn_take(&scratch, ATTN_T, sizeof(int64_t));

  attn_transpose(j->k + attn_tok(j, b, j->nk, j0, j->Hkv, kvh), j->ldk, bk, j->d, ktile);
  attn_transpose(j->v + attn_tok(j, b, j->nk, j0, j->Hkv, kvh), j->ldk, bk, j->d, vtile);
  for (int64_t jj = 0; jj < ATTN_T; jj++) kp[jj] = jj < bk ? j->kv_pos[j0 + jj] : -1;
  memset(dkacc, 0, (size_t)(ATTN_T * dp) * sizeof(float));
  memset(dvacc, 0, (size_t)(ATTN_T * dp) * sizeof(float));
  for (int64_t h = kvh * j->G; h < (kvh + 1) * j->G; h++) {
    const float *lse = j->lse + (b * j->H + h) * j->nq;
    const float *delta = j->delta + (b * j->H + h) * j->nq;
    for (int64_t qt = 0; qt < j->nqt; qt++) {
      attn_pair_t pair = attn_pair(j, qt, kt);
      if (pair == ATTN_PAIR_SKIP) continue;
      int64_t i0 = qt * ATTN_T, bq = attn_min(ATTN_T, j->nq - i0), ldq, lddo;
      const float *qb = j->q + attn_tok(j, b, j->nq, i0, j->H, h);
      const float *dob = j->dout + attn_tok(j, b, j->nq, i0, j->H, h);
      attn_gemm(bq, ATTN_T, j->d, qb, j->ldq, 1, ktile, ATTN_T, s, ATTN_T, false);    /* S */
      attn_gemm(bq, ATTN_T, j->d, dob, j->ldq, 1, vtile, ATTN_T, dps, ATTN_T, false); /* dP */
      for (int64_t i = 0; i < bq; i++) {
        float *p = s + i * ATTN_T, *ds = dps + i * ATTN_T;
        int64_t qp = j->q_pos[i0 + i];
        float l = lse[i0 + i], dl = delta[i0 + i];
        if (qp < 0 || l == -INFINITY) { /* dead query: contributes nothing */
          for (int c = 0; c < ATTN_T; c++) p[c] = ds[c] = 0.0f;
          continue;
        }
        attn_row_p(p, pair == ATTN_PAIR_FULL ? NULL : kp, j->causal ? qp : INT64_MAX, j->c2,
                   l * ATTN_LOG2E);
        attn_row_ds1(ds, p, dl);
      }
      const float *dorows = attn_rows(j, dob, j->ldq, bq, dopad, &lddo);
      const float *qrows = attn_rows(j, qb, j->ldq, bq, qpad, &ldq);
      attn_gemm(bk, dp, bq, s, 1, ATTN_T, dorows, lddo, dvacc, dp, true); /* += P^T dO */
      attn_gemm(bk, dp, bq, dps, 1, ATTN_T, qrows, ldq, dkacc, dp, true); /* += dS^T Q */
    }
  }
  for (int64_t jj = 0; jj < bk; jj++) {
    int64_t off = attn_tok(j, b, j->nk, j0 + jj, j->Hkv, kvh);
    for (int64_t c = 0; c < j->d; c++) {
      j->dv[off + c] += dvacc[jj * dp + c];
      j->dk[off + c] += j->scale * dkacc[jj * dp + c];
    }
  }
}

/* ---- one copy of the work items per instruction set ---- */

typedef void (*attn_item_fn)(const attn_job_t *job, char *scratch, int64_t item);
typedef struct attn_items {
  attn_item_fn forward, dq, dkdv;
} attn_items_t;

/* Wrappers compiled for one target; the tile bodies and every helper are always_inline, so
 * they are compiled for that target too. Chosen at run time by attn_isa, in plain code:
 * target_clones would do the same through an ifunc resolver, but that runs during relocation,
 * where ThreadSanitizer's instrumentation of it crashes, and musl has no ifunc. */
#define ATTN_ITEMS(isa, attr)                                                    \
  attr static void attn_forward_##isa(const attn_job_t *j, char *s, int64_t i) { \
    attn_forward_tile(j, s, i);                                                  \
  }                                                                              \
  attr static void attn_dq_##isa(const attn_job_t *j, char *s, int64_t i) {      \
    attn_dq_tile(j, s, i);                                                       \
  }                                                                              \
  attr static void attn_dkdv_##isa(const attn_job_t *j, char *s, int64_t i) {    \
    attn_dkdv_tile(j, s, i);                                                     \
  }                                                                              \
  static const attn_items_t attn_items_##isa = {attn_forward_##isa, attn_dq_##isa, attn_dkdv_##isa};

ATTN_ITEMS(base, )
#if ATTN_X86_VARIANTS
ATTN_ITEMS(avx2, __attribute__((target("arch=x86-64-v3"))))
ATTN_ITEMS(avx512, __attribute__((target("arch=x86-64-v4"))))
#endif

static const attn_items_t *attn_isa(void) {
#if ATTN_X86_VARIANTS
  __builtin_cpu_init(); /* idempotent; needed if called before constructors ran */
  if (__builtin_cpu_supports("x86-64-v4")) return &attn_items_avx512;
  if (__builtin_cpu_supports("x86-64-v3")) return &attn_items_avx2;
#endif
  return &attn_items_base;
}

/* ---- threads ---- */

/* One call's team: items are taken from a shared counter, so a slow item never holds up the
 * rest, and a worker that failed to start only means fewer hands. */
typedef struct attn_team {
  const attn_job_t *job;
  attn_item_fn fn;
  int64_t items;
  atomic_llong next;
  char *scratch; /* thread t uses scratch + t * stride */
  size_t stride;
} attn_team_t;

typedef struct attn_worker {
  attn_team_t *team;
  int tid;
  pthread_t thread;
} attn_worker_t;

static void attn_team_work(attn_team_t *team, int tid) {
  char *scratch = team->scratch + (size_t)tid * team->stride;
  for (;;) {
    long long i = atomic_fetch_add(&team->next, 1);
    if (i >= team->items) break;
    team->fn(team->job, scratch, (int64_t)i);
  }
}

static void *attn_worker_main(void *arg) {
  attn_worker_t *w = arg;
  attn_team_work(w->team, w->tid);
  return NULL;
}

static void attn_run(const attn_job_t *job, attn_item_fn fn, int64_t items, int threads,
                     char *scratch, size_t stride) {
  attn_team_t team = {.job = job, .fn = fn, .items = items, .scratch = scratch, .stride = stride};
  atomic_init(&team.next, 0);
  attn_worker_t workers[ATTN_MAX_THREADS];
  int started = 0;
  for (int t = 1; t < threads; t++) {
    workers[started] = (attn_worker_t){.team = &team, .tid = t};
    if (pthread_create(&workers[started].thread, NULL, attn_worker_main, &workers[started]) != 0)
      break; /* the calling thread and the workers already started do all items */
    started++;
  }
  attn_team_work(&team, 0);
  for (int t = 0; t < started; t++) pthread_join(workers[t].thread, NULL);
}

/* ---- call setup ---- */

static void attn_ranges(const int64_t *pos, int64_t n, attn_range_t *r) {
  for (int64_t t = 0; t * ATTN_T < n; t++) {
    attn_range_t x = {.lo = INT64_MAX, .hi = -1, .pad = false};
    for (int64_t i = t * ATTN_T; i < attn_min(n, (t + 1) * ATTN_T); i++) {
      if (pos[i] < 0) {
        x.pad = true;
        continue;
      }
      x.lo = pos[i] < x.lo ? pos[i] : x.lo;
      x.hi = pos[i] > x.hi ? pos[i] : x.hi;
    }
    r[t] = x;
  }
}

static attn_job_t attn_job(const weft_attn_shape_t *s) {
  attn_job_t j = {.B = s->batch,
                  .H = s->heads,
                  .Hkv = s->kv_heads,
                  .G = s->heads / s->kv_heads,
                  .nq = s->q_len,
                  .nk = s->kv_len,
                  .d = s->head_dim,
                  .scale = s->scale,
                  .c2 = s->scale * ATTN_LOG2E,
                  .causal = s->causal};
  j.dp = (j.d + ATTN_NR - 1) / ATTN_NR * ATTN_NR;
  j.ldq = j.H * j.d;
  j.ldk = j.Hkv * j.d;
  j.nqt = (j.nq + ATTN_T - 1) / ATTN_T;
  j.nkt = (j.nk + ATTN_T - 1) / ATTN_T;
  return j;
}

/* Per-thread scratch of the largest item (dkdv): 2 [d][64] stages, 2 score tiles, 4 [64][dp]
 * accumulators, 6 vectors of 64, each rounded up to 64 bytes. */
static size_t attn_scratch_stride(const attn_job_t *j) {
  size_t T = ATTN_T;
  return 4 * (2 * (size_t)j->d * T + 2 * T * T + 4 * T * (size_t)j->dp) + 6 * T * 8 + 16 * 64;
}

/* Picks the thread count for `items` items of `macs` multiply-adds in all, gets the workspace
 * (tile ranges, then one scratch region per thread), fills the ranges and runs. */
static weft_status_t attn_launch(weft_kernel_ctx_t *ctx, attn_job_t *j, attn_item_fn fn,
                                 int64_t items, double macs) {
  /* Bounds the scratch arithmetic below (a head of 2^31 floats is far past any model). */
  if (j->d > INT32_MAX) {
    WEFT_ERROR("kernels", "attention (CPU): head_dim=%lld exceeds %d", (long long)j->d, INT32_MAX);
    return WEFT_ERR_UNSUPPORTED;
  }
  int64_t threads = weft_kernels_cpu_threads(); /* each thread gets at least the minimum work */
  threads = attn_min(threads, attn_min(items, ATTN_MAX_THREADS));
  threads = attn_min(threads, (int64_t)(macs / (double)ATTN_MIN_WORK_PER_THREAD));
  if (threads < 1) threads = 1;
  size_t stride = attn_scratch_stride(j);
  size_t ranges = ((size_t)(j->nqt + j->nkt) * sizeof(attn_range_t) + 63) & ~(size_t)63;
  void *ws = NULL;
  WEFT_CHECK(
      weft_kernel_ctx_workspace(ctx, WEFT_KERNEL_WS_ATTN, ranges + (size_t)threads * stride, &ws));
  attn_range_t *qr = ws, *kr = qr + j->nqt;
  attn_ranges(j->q_pos, j->nq, qr);
  attn_ranges(j->kv_pos, j->nk, kr);
  j->qr = qr;
  j->kr = kr;
  attn_run(j, fn, items, (int)threads, (char *)ws + ranges, stride);
  return WEFT_OK;
}

/* ---- back ends ---- */

weft_status_t weft_attn_block_forward_cpu(weft_kernel_ctx_t *ctx, const weft_attn_shape_t *shape,
                                          const void *q, const void *k, const void *v,
                                          const int64_t *q_pos, const int64_t *kv_pos, float *out,
                                          float *lse) {
  attn_job_t j = attn_job(shape);
  if (j.nq == 0) return WEFT_OK;
  if (j.nk == 0) { /* empty KV block: every row attends nothing */
    memset(out, 0, (size_t)(j.B * j.nq * j.ldq) * sizeof(float));
    for (int64_t e = 0; e < j.B * j.H * j.nq; e++) lse[e] = -INFINITY;
    return WEFT_OK;
  }
  j.q = q;
  j.k = k;
  j.v = v;
  j.q_pos = q_pos;
  j.kv_pos = kv_pos;
  j.out = out;
  j.lse_out = lse;
  double macs = 2.0 * (double)j.B * (double)j.H * (double)j.nq * (double)j.nk * (double)j.d;
  return attn_launch(ctx, &j, attn_isa()->forward, j.B * j.H * j.nqt, macs);
}

weft_status_t weft_attn_block_backward_cpu(weft_kernel_ctx_t *ctx, const weft_attn_shape_t *shape,
                                           const void *q, const void *k, const void *v,
                                           const int64_t *q_pos, const int64_t *kv_pos,
                                           const void *dout, const float *lse, const float *delta,
                                           float *dq, float *dk, float *dv) {
  attn_job_t j = attn_job(shape);
  if (j.nq == 0 || j.nk == 0) return WEFT_OK; /* nothing to add */
  j.q = q;
  j.k = k;
  j.v = v;
  j.dout = dout;
  j.lse = lse;
  j.delta = delta;
  j.q_pos = q_pos;
  j.kv_pos = kv_pos;
  j.dq = dq;
  j.dk = dk;
  j.dv = dv;
  double macs = (double)j.B * (double)j.H * (double)j.nq * (double)j.nk * (double)j.d;
  const attn_items_t *isa = attn_isa();
  WEFT_CHECK(attn_launch(ctx, &j, isa->dq, j.B * j.H * j.nqt, 3.0 * macs));
  return attn_launch(ctx, &j, isa->dkdv, j.B * j.Hkv * j.nkt, 4.0 * macs);
}

weft_status_t weft_attn_merge_cpu(weft_kernel_ctx_t *ctx, const weft_attn_shape_t *shape,
                                  float *out, float *lse, const float *out_b, const float *lse_b) {
  (void)ctx;
  int64_t B = shape->batch, H = shape->heads, nq = shape->q_len, d = shape->head_dim;
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t i = 0; i < nq; i++) {
        int64_t r = (b * H + h) * nq + i, off = ((b * nq + i) * H + h) * d;
        float la = lse[r], lb = lse_b[r];
        if (lb == -INFINITY) continue; /* b adds nothing (both -inf: the row stays 0, -inf) */
        if (la == -INFINITY) {         /* a had nothing: take b */
          lse[r] = lb;
          memcpy(out + off, out_b + off, (size_t)d * sizeof(float));
          continue;
        }
        float hi = la > lb ? la : lb, lo = la > lb ? lb : la;
        float l = hi + log1pf(expf(lo - hi)); /* log(e^la + e^lb) without overflow */
        float wa = expf(la - l), wb = expf(lb - l);
        for (int64_t c = 0; c < d; c++) out[off + c] = wa * out[off + c] + wb * out_b[off + c];
        lse[r] = l;
      }
  return WEFT_OK;
}

weft_status_t weft_attn_backward_delta_cpu(weft_kernel_ctx_t *ctx, const weft_attn_shape_t *shape,
                                           const float *out, const void *dout, float *delta) {
  (void)ctx;
  int64_t B = shape->batch, H = shape->heads, nq = shape->q_len, d = shape->head_dim;
  const float *g = dout;
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t i = 0; i < nq; i++) {
        int64_t off = ((b * nq + i) * H + h) * d;
        double sum = 0.0; /* d terms, once per row: double costs nothing here */
        for (int64_t c = 0; c < d; c++) sum += (double)out[off + c] * (double)g[off + c];
        delta[(b * H + h) * nq + i] = (float)sum;
      }
  return WEFT_OK;
}
