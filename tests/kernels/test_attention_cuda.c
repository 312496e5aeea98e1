/* CUDA block softmax attention (weft/attention.h) against the CPU back end on the same inputs
 * (style.md rule 9).
 *
 * Every function runs on both devices from identical inputs: the merge, delta and backward
 * take the CPU's forward results (copied to the GPU) so a difference in one function cannot
 * hide or excuse another. bf16 runs give the CUDA back end bf16 q, k, v, dout and the CPU the
 * same values widened to f32 (the CPU takes f32 only), so both compute in f32 on identical
 * numbers and bf16 needs no extra tolerance.
 *
 * Tolerance: both back ends accumulate in f32 and differ only in summation order (CUDA: 32-key
 * tiles, online softmax, float4 dot products; CPU: its own tiling), each within ~1e-6 of the
 * tensor's scale of the exact value. So elementwise |cuda - cpu| <= TOL * M with TOL = 1e-4 and
 * M = max(1e-2, max |cpu|) over the tensor; for the gradients, which accumulate onto a known
 * non-zero pattern `pre`, the comparison is on the increments (x - pre), whose M may be far
 * below |pre|. A wrong mask, head, tile or rescale moves results by 1e-2 of M or more. Where
 * the CPU gives -inf (lse of a row with no allowed key) CUDA must give exactly -inf; NaN never
 * passes. The contract's padded-query rows (out = 0, lse = -inf) are also checked directly on
 * the CUDA results.
 *
 * Per case: forward of two KV blocks; merge of the two partials; the forward of the two
 * blocks concatenated along the keys on the GPU, which must equal the merged result (the ring
 * invariant, independent of the CPU); delta; backward of both blocks (dq accumulating across
 * them); and a second CUDA forward + backward that must be bitwise equal to the first (no
 * atomics). Cases: causal and not, zigzag positions (two disjoint ranges), padded queries and
 * keys, rows and tiles with every key masked, a block with every key padded, GQA (H=8, Hkv=2),
 * MQA, nq = 0, nk = 0, sizes that are not multiples of the 16 x 32 tiles, d = 1, 3, 37, 64, 96,
 * 128, 200, 256 (all three head-dim buckets and their zero padding), in f32 and bf16.
 *
 * Exits 77 (skipped) when the build has no CUDA backend or no GPU is visible. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernel_test_common.h"
#include "test_util.h"
#include "weft/attention.h"
#include "weft/device.h"
#include "weft/kernel_ctx.h"

#define TOL     1e-4
#define MAG_MIN 1e-2

static weft_device_t *g_gpu;

/* Host and device allocations of one case, released together. */
#define POOL_MAX 96
typedef struct pool {
  void *host[POOL_MAX];
  void *dev[POOL_MAX];
  int n_host, n_dev;
} pool_t;

static void *h_alloc(pool_t *p, size_t bytes) {
  void *ptr = calloc(1, bytes ? bytes : 1);
  if (!ptr || p->n_host == POOL_MAX) {
    fprintf(stderr, "test_attention_cuda: out of host memory\n");
    abort();
  }
  p->host[p->n_host++] = ptr;
  return ptr;
}

/* Device copy of `bytes` bytes of `host` (NULL: uninitialised). Never NULL, even when empty. */
static void *d_alloc(pool_t *p, const void *host, size_t bytes) {
  void *dev = NULL;
  WT_CHECK_OK(weft_device_alloc(g_gpu, bytes ? bytes : 1, &dev));
  if (!dev || p->n_dev == POOL_MAX) {
    fprintf(stderr, "test_attention_cuda: out of device memory\n");
    abort();
  }
  p->dev[p->n_dev++] = dev;
  if (host && bytes)
    WT_CHECK_OK(weft_device_copy(g_gpu, dev, host, bytes, WEFT_COPY_HOST_TO_DEVICE));
  return dev;
}

static void pool_free(pool_t *p) {
  for (int i = 0; i < p->n_host; i++) free(p->host[i]);
  for (int i = 0; i < p->n_dev; i++) weft_device_free(g_gpu, p->dev[i]);
}

static void from_gpu(weft_kernel_ctx_t *gctx, void *host, const void *dev, size_t bytes) {
  WT_CHECK_OK(weft_kernel_ctx_synchronize(gctx));
  if (bytes) WT_CHECK_OK(weft_device_copy(g_gpu, host, dev, bytes, WEFT_COPY_DEVICE_TO_HOST));
}

static void to_gpu(void *dev, const void *host, size_t bytes) {
  if (bytes) WT_CHECK_OK(weft_device_copy(g_gpu, dev, host, bytes, WEFT_COPY_HOST_TO_DEVICE));
}

/* Compares CUDA against CPU; with `pre`, compares the increments x - pre. */
static void compare(const char *label, const char *what, const float *cpu, const float *gpu,
                    const float *pre, size_t n) {
  double mag = MAG_MIN;
  for (size_t x = 0; x < n; x++) {
    double c = (double)cpu[x] - (pre ? (double)pre[x] : 0.0);
    if (isfinite(c) && fabs(c) > mag) mag = fabs(c);
  }
  int bad = 0;
  for (size_t x = 0; x < n; x++) {
    double c = cpu[x], g = gpu[x];
    bool ok;
    if (isinf(c)) {
      ok = g == c;
    } else {
      if (pre) c -= pre[x], g -= pre[x];
      ok = isfinite(g) && fabs(g - c) <= TOL * mag;
    }
    if (!ok && bad++ < 3)
      WT_CHECK(false, "%s %s[%zu]: cpu %.9g cuda %.9g (|diff| %.3g > %.3g)", label, what, x,
               (double)cpu[x], (double)gpu[x], fabs(g - c), TOL * mag);
  }
  if (bad > 3) WT_CHECK(false, "%s %s: %d of %zu elements differ", label, what, bad, n);
}

static void same_bits(const char *label, const char *what, const float *a, const float *b,
                      size_t n) {
  if (n && memcmp(a, b, n * sizeof(float)) != 0)
    WT_CHECK(false, "%s %s: two CUDA runs differ (results must be reproducible)", label, what);
}

/* Positions of a block of n tokens: the first half from `a`, the rest from `b` (two disjoint
 * ranges for zigzag, b = a + n / 2 for a contiguous block); then token i is padding (a
 * negative position) when pad_every divides i + 1 or i is among the last pad_tail. */
typedef struct pos_spec {
  int64_t a, b;
  int pad_every, pad_tail;
} pos_spec_t;

static void make_pos(int64_t *pos, int64_t n, pos_spec_t s) {
  for (int64_t i = 0; i < n; i++) {
    pos[i] = i < n / 2 ? s.a + i : s.b + (i - n / 2);
    if ((s.pad_every && (i + 1) % s.pad_every == 0) || i >= n - s.pad_tail) pos[i] = -1 - i % 3;
  }
}

typedef struct attn_case {
  const char *name;
  int64_t batch, heads, kv_heads, head_dim, nq, nk;
  bool causal;
  pos_spec_t q, kv1, kv2; /* query block and the two KV blocks */
} attn_case_t;

/* Random values in [-amp, amp), as the CUDA input (dtype) and the CPU input (f32, the same
 * numbers). */
static void rand_input(pool_t *p, size_t n, float amp, weft_dtype_t dtype, uint64_t *st,
                       float **f32_p, void **typed_p) {
  float *f = h_alloc(p, n * sizeof(float));
  void *t = h_alloc(p, n * (dtype == WEFT_DTYPE_BF16 ? 2 : 4));
  for (size_t x = 0; x < n; x++) {
    kt_store(dtype, t, x, amp * kt_rand_uniform(st));
    f[x] = kt_load(dtype, t, x);
  }
  *f32_p = f;
  *typed_p = t;
}

/* k and v of [B, nk, Hkv, d] blocks 1 and 2 concatenated along the tokens: [B, 2 nk, Hkv, d]. */
static void concat_tokens(const void *x1, const void *x2, int64_t batch, size_t row_bytes,
                          void *out) {
  for (int64_t b = 0; b < batch; b++) {
    memcpy((char *)out + (size_t)(2 * b) * row_bytes, (const char *)x1 + (size_t)b * row_bytes,
           row_bytes);
    memcpy((char *)out + (size_t)(2 * b + 1) * row_bytes, (const char *)x2 + (size_t)b * row_bytes,
           row_bytes);
  }
}

static void run_case(weft_kernel_ctx_t *cctx, weft_kernel_ctx_t *gctx, const attn_case_t *tc,
                     weft_dtype_t dtype, uint64_t seed) {
  pool_t p = {0};
  char label[200];
  snprintf(label, sizeof label, "%s %s B=%lld H=%lld Hkv=%lld d=%lld nq=%lld nk=%lld%s", tc->name,
           weft_dtype_name(dtype), (long long)tc->batch, (long long)tc->heads,
           (long long)tc->kv_heads, (long long)tc->head_dim, (long long)tc->nq, (long long)tc->nk,
           tc->causal ? " causal" : "");
  const int64_t B = tc->batch, H = tc->heads, d = tc->head_dim, nq = tc->nq, nk = tc->nk;
  weft_attn_shape_t cs = {.batch = B,
                          .heads = H,
                          .kv_heads = tc->kv_heads,
                          .head_dim = d,
                          .q_len = nq,
                          .kv_len = nk,
                          .scale = 1.0f / sqrtf((float)d),
                          .causal = tc->causal,
                          .dtype = WEFT_DTYPE_F32};
  weft_attn_shape_t gs = cs, gs_cat = cs;
  gs.dtype = gs_cat.dtype = dtype;
  gs_cat.kv_len = 2 * nk;
  const size_t nqe = (size_t)(B * nq * H * d), nke = (size_t)(B * nk * tc->kv_heads * d);
  const size_t nle = (size_t)(B * H * nq), esize = dtype == WEFT_DTYPE_BF16 ? 2 : 4;
  const size_t fq = nqe * sizeof(float), fk = nke * sizeof(float), fl = nle * sizeof(float);

  uint64_t st = seed;
  float *q, *k1, *v1, *k2, *v2, *dout;
  void *tq, *tk1, *tv1, *tk2, *tv2, *tdout;
  rand_input(&p, nqe, 3.0f, dtype, &st, &q, &tq); /* |s| up to ~3: peaked softmax rows */
  rand_input(&p, nke, 1.0f, dtype, &st, &k1, &tk1);
  rand_input(&p, nke, 1.0f, dtype, &st, &v1, &tv1);
  rand_input(&p, nke, 1.0f, dtype, &st, &k2, &tk2);
  rand_input(&p, nke, 1.0f, dtype, &st, &v2, &tv2);
  rand_input(&p, nqe, 1.0f, dtype, &st, &dout, &tdout);
  int64_t *qp = h_alloc(&p, (size_t)nq * sizeof(int64_t));
  int64_t *kp = h_alloc(&p, (size_t)(2 * nk) * sizeof(int64_t)); /* blocks 1 and 2 */
  make_pos(qp, nq, tc->q);
  make_pos(kp, nk, tc->kv1);
  make_pos(kp + nk, nk, tc->kv2);
  const size_t row_bytes = (size_t)(nk * tc->kv_heads * d) * esize; /* one batch entry */
  void *tk_cat = h_alloc(&p, 2 * nke * esize), *tv_cat = h_alloc(&p, 2 * nke * esize);
  concat_tokens(tk1, tk2, B, row_bytes, tk_cat);
  concat_tokens(tv1, tv2, B, row_bytes, tv_cat);

  void *d_q = d_alloc(&p, tq, nqe * esize), *d_dout = d_alloc(&p, tdout, nqe * esize);
  void *d_k1 = d_alloc(&p, tk1, nke * esize), *d_v1 = d_alloc(&p, tv1, nke * esize);
  void *d_k2 = d_alloc(&p, tk2, nke * esize), *d_v2 = d_alloc(&p, tv2, nke * esize);
  void *d_kc = d_alloc(&p, tk_cat, 2 * nke * esize), *d_vc = d_alloc(&p, tv_cat, 2 * nke * esize);
  int64_t *d_qp = d_alloc(&p, qp, (size_t)nq * sizeof(int64_t));
  int64_t *d_kp = d_alloc(&p, kp, (size_t)(2 * nk) * sizeof(int64_t));

  /* Outputs start as NaN on the GPU, so an element the kernels forget to write shows up. */
  float *nan_q = h_alloc(&p, fq), *nan_l = h_alloc(&p, fl);
  for (size_t x = 0; x < nqe; x++) nan_q[x] = NAN;
  for (size_t x = 0; x < nle; x++) nan_l[x] = NAN;
  float *d_o1 = d_alloc(&p, nan_q, fq), *d_l1 = d_alloc(&p, nan_l, fl);
  float *d_o2 = d_alloc(&p, nan_q, fq), *d_l2 = d_alloc(&p, nan_l, fl);
  float *d_oc = d_alloc(&p, nan_q, fq), *d_lc = d_alloc(&p, nan_l, fl);
  float *d_delta = d_alloc(&p, nan_l, fl);

  /* ---- forward of each KV block ---- */
  float *o1 = h_alloc(&p, fq), *l1 = h_alloc(&p, fl), *o2 = h_alloc(&p, fq), *l2 = h_alloc(&p, fl);
  float *g_o = h_alloc(&p, fq), *g_l = h_alloc(&p, fl);
  WT_CHECK_OK(weft_attn_block_forward(cctx, &cs, q, k1, v1, qp, kp, o1, l1));
  WT_CHECK_OK(weft_attn_block_forward(cctx, &cs, q, k2, v2, qp, kp + nk, o2, l2));
  WT_CHECK_OK(weft_attn_block_forward(gctx, &gs, d_q, d_k1, d_v1, d_qp, d_kp, d_o1, d_l1));
  WT_CHECK_OK(weft_attn_block_forward(gctx, &gs, d_q, d_k2, d_v2, d_qp, d_kp + nk, d_o2, d_l2));
  from_gpu(gctx, g_o, d_o1, fq);
  from_gpu(gctx, g_l, d_l1, fl);
  compare(label, "forward(kv1) out", o1, g_o, NULL, nqe);
  compare(label, "forward(kv1) lse", l1, g_l, NULL, nle);
  for (int64_t i = 0; i < nq; i++) /* the contract for padded queries, on CUDA alone */
    if (qp[i] < 0)
      for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++) {
          const float *row = g_o + ((b * nq + i) * H + h) * d;
          bool zero = true;
          for (int64_t c = 0; c < d; c++) zero = zero && row[c] == 0.0f;
          WT_CHECK(zero && isinf(g_l[(b * H + h) * nq + i]) && g_l[(b * H + h) * nq + i] < 0,
                   "%s: padded query %lld (b %lld, h %lld): out not 0 or lse %g not -inf", label,
                   (long long)i, (long long)b, (long long)h, (double)g_l[(b * H + h) * nq + i]);
        }
  from_gpu(gctx, g_o, d_o2, fq);
  from_gpu(gctx, g_l, d_l2, fl);
  compare(label, "forward(kv2) out", o2, g_o, NULL, nqe);
  compare(label, "forward(kv2) lse", l2, g_l, NULL, nle);

  /* ---- merge, from the CPU's partials on both devices ---- */
  to_gpu(d_o1, o1, fq);
  to_gpu(d_l1, l1, fl);
  to_gpu(d_o2, o2, fq);
  to_gpu(d_l2, l2, fl);
  WT_CHECK_OK(weft_attn_merge(cctx, &cs, o1, l1, o2, l2)); /* o1, l1: the final result */
  WT_CHECK_OK(weft_attn_merge(gctx, &gs, d_o1, d_l1, d_o2, d_l2));
  from_gpu(gctx, g_o, d_o1, fq);
  from_gpu(gctx, g_l, d_l1, fl);
  compare(label, "merge out", o1, g_o, NULL, nqe);
  compare(label, "merge lse", l1, g_l, NULL, nle);

  /* ---- the concatenated KV block in one call equals the merged pair ---- */
  WT_CHECK_OK(weft_attn_block_forward(gctx, &gs_cat, d_q, d_kc, d_vc, d_qp, d_kp, d_oc, d_lc));
  from_gpu(gctx, g_o, d_oc, fq);
  from_gpu(gctx, g_l, d_lc, fl);
  compare(label, "forward(kv1 ++ kv2) vs merge out", o1, g_o, NULL, nqe);
  compare(label, "forward(kv1 ++ kv2) vs merge lse", l1, g_l, NULL, nle);

  /* ---- delta, from the CPU's merged out ---- */
  float *delta = h_alloc(&p, fl);
  to_gpu(d_o1, o1, fq);
  WT_CHECK_OK(weft_attn_backward_delta(cctx, &cs, o1, dout, delta));
  WT_CHECK_OK(weft_attn_backward_delta(gctx, &gs, d_o1, d_dout, d_delta));
  from_gpu(gctx, g_l, d_delta, fl);
  compare(label, "delta", delta, g_l, NULL, nle);

  /* ---- backward of both blocks with the CPU's final lse and delta ---- */
  to_gpu(d_l1, l1, fl);
  to_gpu(d_delta, delta, fl);
  float *pre_q = h_alloc(&p, fq), *pre_k = h_alloc(&p, fk); /* gradients start here */
  for (size_t x = 0; x < nqe; x++) pre_q[x] = 0.5f * kt_rand_uniform(&st);
  for (size_t x = 0; x < nke; x++) pre_k[x] = 0.5f * kt_rand_uniform(&st);
  float *dq = h_alloc(&p, fq), *dk1 = h_alloc(&p, fk), *dv1 = h_alloc(&p, fk);
  float *dk2 = h_alloc(&p, fk), *dv2 = h_alloc(&p, fk);
  memcpy(dq, pre_q, fq);
  memcpy(dk1, pre_k, fk), memcpy(dv1, pre_k, fk), memcpy(dk2, pre_k, fk), memcpy(dv2, pre_k, fk);
  float *d_dq = d_alloc(&p, pre_q, fq), *d_dk1 = d_alloc(&p, pre_k, fk);
  float *d_dv1 = d_alloc(&p, pre_k, fk), *d_dk2 = d_alloc(&p, pre_k, fk);
  float *d_dv2 = d_alloc(&p, pre_k, fk);
  WT_CHECK_OK(
      weft_attn_block_backward(cctx, &cs, q, k1, v1, qp, kp, dout, l1, delta, dq, dk1, dv1));
  WT_CHECK_OK(
      weft_attn_block_backward(cctx, &cs, q, k2, v2, qp, kp + nk, dout, l1, delta, dq, dk2, dv2));
  WT_CHECK_OK(weft_attn_block_backward(gctx, &gs, d_q, d_k1, d_v1, d_qp, d_kp, d_dout, d_l1,
                                       d_delta, d_dq, d_dk1, d_dv1));
  WT_CHECK_OK(weft_attn_block_backward(gctx, &gs, d_q, d_k2, d_v2, d_qp, d_kp + nk, d_dout, d_l1,
                                       d_delta, d_dq, d_dk2, d_dv2));
  float *g_q = h_alloc(&p, fq), *g_k = h_alloc(&p, fk);
  from_gpu(gctx, g_q, d_dq, fq);
  compare(label, "backward dq", dq, g_q, pre_q, nqe);
  from_gpu(gctx, g_k, d_dk1, fk);
  compare(label, "backward(kv1) dk", dk1, g_k, pre_k, nke);
  from_gpu(gctx, g_k, d_dv1, fk);
  compare(label, "backward(kv1) dv", dv1, g_k, pre_k, nke);
  from_gpu(gctx, g_k, d_dk2, fk);
  compare(label, "backward(kv2) dk", dk2, g_k, pre_k, nke);
  from_gpu(gctx, g_k, d_dv2, fk);
  compare(label, "backward(kv2) dv", dv2, g_k, pre_k, nke);

  /* ---- reproducibility: forward and backward of block 1 again, bitwise ---- */
  float *a_o = h_alloc(&p, fq), *a_q = h_alloc(&p, fq), *a_k = h_alloc(&p, fk);
  float *a_v = h_alloc(&p, fk), *b_q = h_alloc(&p, fq), *b_k = h_alloc(&p, fk);
  float *b_v = h_alloc(&p, fk);
  for (int run = 0; run < 2; run++) {
    to_gpu(d_dq, pre_q, fq);
    to_gpu(d_dk1, pre_k, fk);
    to_gpu(d_dv1, pre_k, fk);
    WT_CHECK_OK(weft_attn_block_forward(gctx, &gs, d_q, d_k1, d_v1, d_qp, d_kp, d_o2, d_l2));
    WT_CHECK_OK(weft_attn_block_backward(gctx, &gs, d_q, d_k1, d_v1, d_qp, d_kp, d_dout, d_l1,
                                         d_delta, d_dq, d_dk1, d_dv1));
    from_gpu(gctx, run ? g_o : a_o, d_o2, fq);
    from_gpu(gctx, run ? b_q : a_q, d_dq, fq);
    from_gpu(gctx, run ? b_k : a_k, d_dk1, fk);
    from_gpu(gctx, run ? b_v : a_v, d_dv1, fk);
  }
  same_bits(label, "forward out", a_o, g_o, nqe);
  same_bits(label, "backward dq", a_q, b_q, nqe);
  same_bits(label, "backward dk", a_k, b_k, nke);
  same_bits(label, "backward dv", a_v, b_v, nke);

  pool_free(&p);
}

int main(void) {
  if (!WEFT_HAVE_CUDA || weft_device_cuda_count() == 0) {
    printf("test_attention_cuda: skipped (%s)\n",
           WEFT_HAVE_CUDA ? "no CUDA GPU visible" : "built without CUDA");
    return WEFT_TEST_SKIP;
  }
  weft_device_t *cpu = NULL;
  weft_kernel_ctx_t *cctx = NULL, *gctx = NULL;
  WT_CHECK_OK(weft_device_open(WEFT_DEVICE_CPU, 0, &cpu));
  WT_CHECK_OK(weft_device_open(WEFT_DEVICE_CUDA, 0, &g_gpu));
  if (cpu) WT_CHECK_OK(weft_kernel_ctx_create(cpu, NULL, &cctx));
  if (g_gpu) WT_CHECK_OK(weft_kernel_ctx_create(g_gpu, NULL, &gctx));
  if (cctx && gctx) {
    static const attn_case_t cases[] = {
        /* name, B, H, Hkv, d, nq, nk, causal,
         * q {a, b, pad_every, pad_tail}, kv1 {...}, kv2 {...} */
        {"contiguous", 1, 2, 2, 64, 64, 64, false, {128, 160, 0, 0}, {0, 32, 0, 0}, {64, 96, 0, 0}},
        {"causal, q after kv, odd sizes",
         2,
         2,
         2,
         64,
         37,
         45,
         true,
         {40, 58, 0, 0},
         {0, 22, 0, 0},
         {45, 67, 0, 0}},
        /* zigzag with P = 2 ranks of chunk 20: rank 0 holds chunks 0 and 3, the KV blocks are
         * chunks 1, 2 (rank 1) and chunk 0 with chunk 3 (own): chunk-0 queries see no key of
         * block 1 (fully masked rows, skipped tiles) */
        {"zigzag GQA", 1, 8, 2, 128, 40, 40, true, {0, 60, 0, 0}, {20, 40, 0, 0}, {0, 60, 0, 0}},
        {"padded MQA", 1, 8, 1, 128, 33, 65, false, {0, 16, 5, 3}, {0, 32, 7, 4}, {65, 97, 0, 2}},
        {"fully masked rows, odd d",
         1,
         2,
         1,
         37,
         50,
         40,
         true,
         {10, 60, 0, 4},
         {20, 40, 0, 0},
         {60, 80, 9, 0}},
        {"d 200", 1, 3, 3, 200, 17, 31, true, {30, 100, 4, 0}, {0, 20, 0, 1}, {50, 70, 0, 0}},
        {"d 256 zigzag", 1, 2, 1, 256, 20, 34, true, {0, 60, 0, 0}, {20, 40, 0, 0}, {10, 50, 0, 0}},
        {"d 1", 1, 1, 1, 1, 5, 7, false, {0, 2, 0, 0}, {0, 3, 0, 0}, {7, 10, 0, 0}},
        {"d 3", 2, 2, 1, 3, 18, 35, true, {5, 30, 0, 0}, {0, 17, 0, 0}, {35, 52, 0, 0}},
        {"nq 0", 1, 2, 2, 64, 0, 20, true, {0, 0, 0, 0}, {0, 10, 0, 0}, {20, 30, 0, 0}},
        {"nk 0", 1, 2, 2, 64, 20, 0, true, {0, 10, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}},
        {"every key padded",
         1,
         2,
         1,
         64,
         20,
         33,
         false,
         {0, 10, 0, 0},
         {0, 0, 0, 33},
         {0, 16, 0, 0}},
        {"zigzag GQA padded, many tiles",
         2,
         8,
         2,
         96,
         130,
         129,
         true,
         {0, 390, 11, 0},
         {130, 260, 0, 5},
         {65, 325, 13, 0}},
        {"long causal",
         1,
         4,
         4,
         128,
         300,
         300,
         true,
         {300, 450, 0, 0},
         {0, 150, 0, 0},
         {300, 450, 0, 0}},
    };
    static const weft_dtype_t dtypes[] = {WEFT_DTYPE_F32, WEFT_DTYPE_BF16};
    uint64_t seed = 1;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
      for (size_t t = 0; t < 2; t++) run_case(cctx, gctx, &cases[c], dtypes[t], seed++);
  }
  weft_kernel_ctx_destroy(gctx);
  weft_kernel_ctx_destroy(cctx);
  weft_device_close(g_gpu);
  weft_device_close(cpu);
  return weft_test_exit_code("test_attention_cuda");
}
