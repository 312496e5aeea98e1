/* Times the CPU block-attention kernels (weft/attention.h) on one block pair: forward, then
 * delta + backward, best of 3 after one warm-up, on random inputs. The PyTorch side of the
 * comparison in docs/sequence-parallel.md is bench/torch_attention.py with the same shape and
 * thread count. Until `weft bench attention` exists (issue 3), this is how those numbers are
 * reproduced:
 *   build/bench/bench_attention_kernel THREADS N CAUSAL(0|1) HKV     (defaults 2 4096 1 8)
 * B = 1, H = 8, d = 64; nq = nk = N, positions 0..N-1. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "weft/attention.h"
#include "weft/device.h"
#include "weft/kernel_ctx.h"
#include "weft/timer.h"

static float *random_buf(size_t n) {
  float *p = malloc(n * sizeof *p);
  for (size_t i = 0; p && i < n; i++) p[i] = (float)rand() / (float)RAND_MAX * 2.0f - 1.0f;
  return p;
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 2;
  int64_t n = argc > 2 ? atoll(argv[2]) : 4096, hkv = argc > 4 ? atoll(argv[4]) : 8;
  bool causal = argc > 3 ? atoi(argv[3]) != 0 : true;
  const int64_t heads = 8, d = 64;
  weft_device_t *cpu = NULL;
  weft_kernel_ctx_t *ctx = NULL;
  if (weft_device_open(WEFT_DEVICE_CPU, 0, &cpu) != WEFT_OK ||
      weft_kernel_ctx_create(cpu, NULL, &ctx) != WEFT_OK)
    return 1;
  weft_kernels_set_cpu_threads(threads);
  weft_attn_shape_t s = {.batch = 1,
                         .heads = heads,
                         .kv_heads = hkv,
                         .head_dim = d,
                         .q_len = n,
                         .kv_len = n,
                         .scale = 1.0f / sqrtf((float)d),
                         .causal = causal,
                         .dtype = WEFT_DTYPE_F32};
  size_t nq = (size_t)(n * heads * d), nk = (size_t)(n * hkv * d), rows = (size_t)(heads * n);
  float *q = random_buf(nq), *k = random_buf(nk), *v = random_buf(nk), *dout = random_buf(nq);
  float *out = malloc(nq * 4), *lse = malloc(rows * 4), *delta = malloc(rows * 4);
  float *dq = calloc(nq, 4), *dk = calloc(nk, 4), *dv = calloc(nk, 4);
  int64_t *pos = malloc((size_t)n * sizeof *pos);
  if (!q || !k || !v || !dout || !out || !lse || !delta || !dq || !dk || !dv || !pos) return 1;
  for (int64_t i = 0; i < n; i++) pos[i] = i;
  double best_fwd = INFINITY, best_bwd = INFINITY;
  for (int rep = 0; rep < 4; rep++) {
    double t0 = weft_time_now();
    if (weft_attn_block_forward(ctx, &s, q, k, v, pos, pos, out, lse) != WEFT_OK) return 1;
    double t1 = weft_time_now();
    if (weft_attn_backward_delta(ctx, &s, out, dout, delta) != WEFT_OK ||
        weft_attn_block_backward(ctx, &s, q, k, v, pos, pos, dout, lse, delta, dq, dk, dv) !=
            WEFT_OK)
      return 1;
    double t2 = weft_time_now();
    if (rep == 0) continue; /* warm-up: workspace growth, page faults */
    best_fwd = fmin(best_fwd, t1 - t0);
    best_bwd = fmin(best_bwd, t2 - t1);
  }
  /* Useful forward FLOPs: two products (QK^T, PV) over the allowed pairs. */
  double pairs = causal ? (double)n * (double)(n + 1) / 2.0 : (double)n * (double)n;
  double flops = 4.0 * pairs * (double)(heads * d);
  printf(
      "weft threads=%d N=%lld H=%lld Hkv=%lld d=%lld %s: fwd %.1f ms (%.1f GFLOP/s), bwd %.1f "
      "ms, fwd+bwd %.1f ms\n",
      threads, (long long)n, (long long)heads, (long long)hkv, (long long)d,
      causal ? "causal" : "full", best_fwd * 1e3, flops / best_fwd / 1e9, best_bwd * 1e3,
      (best_fwd + best_bwd) * 1e3);
  free(q), free(k), free(v), free(dout), free(out), free(lse), free(delta);
  free(dq), free(dk), free(dv), free(pos);
  weft_kernel_ctx_destroy(ctx);
  weft_device_close(cpu);
  return 0;
}
