/* CUDA back end of gated linear attention (weft/linear_attention.h): f32 in, f32 out, f32
 * accumulation, chunked.
 *
 * Notation, per (batch b, head h), chunk j of length L (the last chunk may be shorter), tokens
 * r = 0..L-1 of the chunk:
 *   a_r = g_0 + ... + g_r                    chunk-local cumulative log decay, a_r <= 0
 *   aL  = a_{L-1}                            the chunk's total log decay (D_j)
 *   S_j                                      state entering chunk j (S_0 = S_in, or 0)
 *   A[t,s] = sum_i q_t[i] k_s[i] exp(a_t[i] - a_s[i])   for s <= t (0 above the diagonal)
 * Forward:
 *   o_t     = scale * (sum_{s<=t} A[t,s] v_s + (q_t * exp(a_t)) S_j)
 *   S_{j+1} = diag(exp(aL)) S_j + U_j,   U_j = sum_s (k_s * exp(aL - a_s))^T v_s
 * Every exponent is a difference a_t - a_s with s <= t, or a_t, or aL - a_s: all sums of g over
 * a token range, hence <= 0 when g <= 0, so no exp(-a) appears and very negative g only
 * underflows to 0. (Floating-point cumulative sums of non-positive numbers are monotone, so
 * the computed differences are <= 0 too.)
 * The cumulative sums a (and the global c of forward_correct) are kept in double: with very
 * negative g, |a| reaches 10^3..10^4 inside one chunk, and an f32 a_t - a_s would then carry an
 * absolute exponent error of ulp(|a|) ~ 1e-3, i.e. a 1e-3 relative error on every decayed
 * term. In double the difference is exact to ~1e-12 and is rounded to f32 only as the argument
 * of expf; the cost is one FP64 subtraction per decayed term and 8 bytes per [n, dk] element of
 * scratch. All products and sums of q, k, v, states stay f32.
 *
 * Backward, with dS_{j+1} = dLoss/dS_{j+1} (the gradient of the state leaving chunk j):
 *   dS_j    = diag(exp(aL)) dS_{j+1} + W_j,   W_j = scale * sum_t (q_t * exp(a_t))^T do_t
 *   dA[t,s] = scale * do_t . v_s                                             (s <= t)
 *   dq_t[i] = sum_{s<=t} dA[t,s] k_s[i] exp(a_t[i]-a_s[i]) + scale exp(a_t[i]) (do_t S_j^T)[i]
 *   dk_s[i] = sum_{t>=s} dA[t,s] q_t[i] exp(a_t[i]-a_s[i]) + exp(aL[i]-a_s[i]) (v_s dS_{j+1}^T)[i]
 *   dv_s    = scale * sum_{t>=s} A[t,s] do_t + (k_s * exp(aL - a_s)) dS_{j+1}
 * Log-decay gradient. Treat the a_r of chunk j as free variables. Every place a_r[i] enters
 * the loss is a factor exp(+a_r[i]) beside q_r[i] (in A[r,.] and in the S_j term of o_r) or a
 * factor exp(-a_r[i]) beside k_r[i] (in A[.,r] and in U_j), plus exp(aL[i]) in front of S_j
 * and in U_j. d/da of exp(+a) x is x itself, so the q-side contributions sum to q_r[i] dq_r[i]
 * and the k-side ones to -k_r[i] dk_r[i]; the aL contributions sum to
 *   sum_e dS_{j+1}[i,e] (exp(aL[i]) S_j[i,e] + U_j[i,e]) = sum_e S_{j+1}[i,e] dS_{j+1}[i,e].
 * So dLoss/da_r[i] = q_r[i] dq_r[i] - k_r[i] dk_r[i] + [r = L-1] sum_e (S_{j+1} * dS_{j+1})[i,e],
 * and since a_r = sum_{r' <= r} g_{r'}, dg_r = sum_{r' >= r in the chunk} dLoss/da_{r'}:
 *   dg_r[i] = sum_{t=r}^{L-1} (q_t[i] dq_t[i] - k_t[i] dk_t[i]) + sum_e S_{j+1}[i,e] dS_{j+1}[i,e]
 * (S_{j+1} includes S_in's contribution; for the last chunk it is S_n and dS_{j+1} = dS_out.)
 * This is the chunk-local form of the global identity
 *   dg_r = sum_{t>=r} (q_t dq_t - k_t dk_t) + rowsum(S_n * dS_out);
 * the two agree up to rounding.
 *
 * Structure: a few simple kernels, each one thread block per (b, h, chunk) and 32x32 output
 * tile, 32 x 8 threads (each thread owns one column and 4 rows of the tile), operands staged in
 * shared-memory tiles padded to 33 columns so row and column reads are conflict-free:
 *   cumsum     a = chunk-local cumsum of g (one thread per (b, chunk, h, i))
 *   chunk_state U_j or W_j, [dk, dv] per chunk, a reduction over the chunk's tokens
 *   scan_forward / scan_reverse: per (b, h, i, e) a sequential pass over the chunks giving every
 *              chunk's start state S_j / end gradient dS_{j+1} (stored in the workspace)
 *   scores     A or dA per chunk, [C, C], into the workspace (zeros above the diagonal)
 *   value_rows o or dv rows: scores x values plus the state term
 *   key_rows   dq or dk rows: decayed scores x keys plus the state term
 *   rowdot, dg the log-decay gradient above
 * Chunk states live in the workspace, [B, H, chunks + 1, dk, dv], and scores [B, H, chunks, C, C]:
 * O(n dk dv / C + n C) floats per head, the price of the simple parallel-then-scan design.
 * Rejected for now: fused FlashLinearAttention-style kernels with tensor cores (sub-chunk
 * factorisation of the decay); this version is the correct baseline to measure them against.
 * Everything runs on the context's stream; launches are checked with cudaGetLastError. No
 * kernel uses atomics, so results are bitwise reproducible. */
#include "cuda_common.cuh"
#include "linear_attention_internal.h"

/* Output tile edge: one warp spans a tile row. */
#define GLA_TILE 32
/* Rows of threads per block; each thread covers GLA_TILE / GLA_ROWS rows of its tile. 32 x 8 =
 * 256 threads, WEFT_CUDA_BLOCK, so 8 blocks fill an SM. */
#define GLA_ROWS       8
#define GLA_PER_THREAD (GLA_TILE / GLA_ROWS)
/* Workspace sub-buffers start on 64-float (256-byte) boundaries. */
#define GLA_ALIGN_FLOATS 64

typedef struct gla_dims {
  int64_t batch, tokens, heads, dk, dv;
  int64_t chunk;  /* effective chunk length, min(shape chunk, tokens) */
  int64_t chunks; /* ceil(tokens / chunk); 0 when tokens == 0 */
  float scale;
} gla_dims_t;

/* One chunk of one (b, h), decoded from a block index over B * H * chunks. */
typedef struct gla_chunk {
  int64_t b, h, bh, j;
  int64_t t0;  /* first token of the chunk */
  int64_t len; /* tokens in the chunk */
} gla_chunk_t;

__device__ __forceinline__ int64_t gla_min(int64_t x, int64_t y) { return x < y ? x : y; }

/* Offset of token t of (b, h) in a [B, n, H, width] tensor. */
__device__ __forceinline__ int64_t gla_tok(const gla_dims_t &d, int64_t b, int64_t t, int64_t h,
                                           int64_t width) {
  return ((b * d.tokens + t) * d.heads + h) * width;
}

__device__ __forceinline__ gla_chunk_t gla_chunk_of(const gla_dims_t &d, int64_t index) {
  gla_chunk_t c;
  c.j = index % d.chunks;
  c.bh = index / d.chunks;
  c.h = c.bh % d.heads;
  c.b = c.bh / d.heads;
  c.t0 = c.j * d.chunk;
  c.len = gla_min(d.chunk, d.tokens - c.t0);
  return c;
}

/* a[b, t, h, i] = sum of g over t's chunk up to and including t.
 * One thread per (b, chunk, h, i), ordered so neighbouring threads read neighbouring floats. */
__global__ void gla_cumsum_kernel(gla_dims_t d, const float *g, double *a) {
  int64_t count = d.batch * d.chunks * d.heads * d.dk;
  WEFT_CUDA_GRID_STRIDE_LOOP(idx, count) {
    int64_t i = idx % d.dk, rest = idx / d.dk;
    int64_t h = rest % d.heads;
    rest /= d.heads;
    int64_t j = rest % d.chunks, b = rest / d.chunks;
    int64_t t0 = j * d.chunk, len = gla_min(d.chunk, d.tokens - t0);
    int64_t stride = d.heads * d.dk, off = gla_tok(d, b, t0, h, d.dk) + i;
    double sum = 0.0;
    for (int64_t r = 0; r < len; r++, off += stride) {
      sum += (double)g[off];
      a[off] = sum;
    }
  }
}

/* Per (b, h, i): offsets[b, j, h, i] = sum of the chunk totals before chunk j (optional) and
 * total[b, h, i] = sum of all chunk totals = c_n (optional). */
__global__ void gla_chunk_offsets_kernel(gla_dims_t d, const double *a, double *offsets,
                                         float *total) {
  int64_t count = d.batch * d.heads * d.dk;
  WEFT_CUDA_GRID_STRIDE_LOOP(idx, count) {
    int64_t i = idx % d.dk, bh = idx / d.dk;
    int64_t h = bh % d.heads, b = bh / d.heads;
    double sum = 0.0;
    for (int64_t j = 0; j < d.chunks; j++) {
      if (offsets) offsets[((b * d.chunks + j) * d.heads + h) * d.dk + i] = sum;
      int64_t t_end = gla_min((j + 1) * d.chunk, d.tokens) - 1;
      sum += a[gla_tok(d, b, t_end, h, d.dk) + i];
    }
    if (total) total[idx] = (float)sum; /* idx = (b H + h) dk + i: the [B, H, dk] layout */
  }
}

/* Turns chunk-local cumulative sums into sequence-global ones: a[b, t, h, i] += offsets[b, j, h,
 * i]. */
__global__ void gla_add_offsets_kernel(gla_dims_t d, const double *offsets, double *a) {
  int64_t width = d.heads * d.dk, count = d.batch * d.tokens * width;
  WEFT_CUDA_GRID_STRIDE_LOOP(idx, count) {
    int64_t hi = idx % width, bt = idx / width;
    int64_t t = bt % d.tokens, b = bt / d.tokens;
    a[idx] += offsets[(b * d.chunks + t / d.chunk) * width + hi];
  }
}

/* Per chunk: out[bh, j, i, e] = alpha * sum_{r < L} x_r[i] exp(w_r[i]) y_r[e] with
 * w_r = aL - a_r (to_end: U_j from x = k, y = v) or w_r = a_r (W_j from x = q, y = do).
 * out has `slots` [dk, dv] matrices per (b, h). Grid: (B H chunks, dk tiles, dv tiles). */
__global__ void gla_chunk_state_kernel(gla_dims_t d, const float *x, const float *y,
                                       const double *a, bool to_end, float alpha, float *out,
                                       int64_t slots) {
  __shared__ float xs[GLA_TILE][GLA_TILE + 1]; /* [r][i]: x * exp(w) */
  __shared__ float ys[GLA_TILE][GLA_TILE + 1]; /* [r][e] */
  gla_chunk_t c = gla_chunk_of(d, blockIdx.x);
  int tx = threadIdx.x, ty = threadIdx.y;
  int64_t i0 = (int64_t)blockIdx.y * GLA_TILE, e0 = (int64_t)blockIdx.z * GLA_TILE;
  int64_t i_load = i0 + tx, e = e0 + tx;
  double a_end = 0.0;
  if (to_end && i_load < d.dk) a_end = a[gla_tok(d, c.b, c.t0 + c.len - 1, c.h, d.dk) + i_load];
  float acc[GLA_PER_THREAD] = {0.0f};
  for (int64_t r0 = 0; r0 < c.len; r0 += GLA_TILE) {
    for (int m = 0; m < GLA_PER_THREAD; m++) {
      int rr = ty + m * GLA_ROWS;
      int64_t r = r0 + rr;
      float xv = 0.0f, yv = 0.0f;
      if (r < c.len && i_load < d.dk) {
        int64_t off = gla_tok(d, c.b, c.t0 + r, c.h, d.dk) + i_load;
        xv = x[off] * expf((float)(to_end ? a_end - a[off] : a[off]));
      }
      if (r < c.len && e < d.dv) yv = y[gla_tok(d, c.b, c.t0 + r, c.h, d.dv) + e];
      xs[rr][tx] = xv;
      ys[rr][tx] = yv;
    }
    __syncthreads();
    for (int rr = 0; rr < GLA_TILE; rr++) {
      float yv = ys[rr][tx];
      for (int m = 0; m < GLA_PER_THREAD; m++) acc[m] += xs[rr][ty + m * GLA_ROWS] * yv;
    }
    __syncthreads();
  }
  for (int m = 0; m < GLA_PER_THREAD; m++) {
    int64_t i = i0 + ty + m * GLA_ROWS;
    if (i < d.dk && e < d.dv) out[((c.bh * slots + c.j) * d.dk + i) * d.dv + e] = alpha * acc[m];
  }
}

/* Forward scan over chunks, one thread per (b, h, i, e). On entry states[bh, j + 1] holds U_j;
 * on exit states[bh, j] holds S_j for j = 0..chunks (S_0 = init, or 0 when init is NULL), and
 * final_state (optional, [B, H, dk, dv]) holds S_chunks. */
__global__ void gla_scan_forward_kernel(gla_dims_t d, const double *a, const float *init,
                                        float *states, float *final_state) {
  int64_t mat = d.dk * d.dv, count = d.batch * d.heads * mat;
  WEFT_CUDA_GRID_STRIDE_LOOP(idx, count) {
    int64_t ie = idx % mat, bh = idx / mat;
    int64_t i = ie / d.dv, h = bh % d.heads, b = bh / d.heads;
    float *s = states + bh * (d.chunks + 1) * mat + ie;
    float state = init ? init[idx] : 0.0f; /* idx = bh dk dv + i dv + e: [B, H, dk, dv] */
    s[0] = state;
    for (int64_t j = 0; j < d.chunks; j++) {
      int64_t t_end = gla_min((j + 1) * d.chunk, d.tokens) - 1;
      float decay = expf((float)a[gla_tok(d, b, t_end, h, d.dk) + i]);
      state = decay * state + s[(j + 1) * mat];
      s[(j + 1) * mat] = state;
    }
    if (final_state) final_state[idx] = state;
  }
}

/* Reverse scan over chunks, one thread per (b, h, i, e). On entry dstates[bh, j] holds W_j; on
 * exit it holds dS_{j+1}, the gradient of the state leaving chunk j, starting from
 * dS_chunks = init (0 when NULL). final_grad (optional) receives dS_0. */
__global__ void gla_scan_reverse_kernel(gla_dims_t d, const double *a, const float *init,
                                        float *dstates, float *final_grad) {
  int64_t mat = d.dk * d.dv, count = d.batch * d.heads * mat;
  WEFT_CUDA_GRID_STRIDE_LOOP(idx, count) {
    int64_t ie = idx % mat, bh = idx / mat;
    int64_t i = ie / d.dv, h = bh % d.heads, b = bh / d.heads;
    float *w = dstates + bh * d.chunks * mat + ie;
    float grad = init ? init[idx] : 0.0f;
    for (int64_t j = d.chunks - 1; j >= 0; j--) {
      int64_t t_end = gla_min((j + 1) * d.chunk, d.tokens) - 1;
      float decay = expf((float)a[gla_tok(d, b, t_end, h, d.dk) + i]);
      float wj = w[j * mat];
      w[j * mat] = grad;
      grad = decay * grad + wj;
    }
    if (final_grad) final_grad[idx] = grad;
  }
}

/* Per chunk: scores[bh, j, t, s] = alpha * sum_c x_t[c] y_s[c] (DECAY: * exp(a_t[c] - a_s[c]))
 * for s <= t < L, 0 for s > t; width is dk with DECAY, else any (dv for dA).
 * Grid: (B H chunks, t tiles, s tiles). */
template <bool DECAY>
__global__ void gla_scores_kernel(gla_dims_t d, const float *x, const float *y, const double *a,
                                  int64_t width, float alpha, float *scores) {
  __shared__ float xs[GLA_TILE][GLA_TILE + 1]; /* [t][c] */
  __shared__ float ys[GLA_TILE][GLA_TILE + 1]; /* [s][c] */
  __shared__ double axs[DECAY ? GLA_TILE : 1][GLA_TILE + 1];
  __shared__ double ays[DECAY ? GLA_TILE : 1][GLA_TILE + 1];
  gla_chunk_t c = gla_chunk_of(d, blockIdx.x);
  int tx = threadIdx.x, ty = threadIdx.y;
  int64_t t0 = (int64_t)blockIdx.y * GLA_TILE, s0 = (int64_t)blockIdx.z * GLA_TILE;
  if (t0 >= c.len || s0 >= c.len) return; /* uniform over the block, before any barrier */
  float *out = scores + (c.bh * d.chunks + c.j) * d.chunk * d.chunk;
  int64_t s = s0 + tx;
  if (s0 > t0) { /* strictly above the diagonal */
    for (int m = 0; m < GLA_PER_THREAD; m++) {
      int64_t t = t0 + ty + m * GLA_ROWS;
      if (t < c.len && s < c.len) out[t * d.chunk + s] = 0.0f;
    }
    return;
  }
  float acc[GLA_PER_THREAD] = {0.0f};
  for (int64_t c0 = 0; c0 < width; c0 += GLA_TILE) {
    int64_t col = c0 + tx;
    for (int m = 0; m < GLA_PER_THREAD; m++) {
      int rr = ty + m * GLA_ROWS;
      int64_t t = t0 + rr, s_row = s0 + rr;
      bool t_in = t < c.len && col < width, s_in = s_row < c.len && col < width;
      int64_t t_off = gla_tok(d, c.b, c.t0 + t, c.h, width) + col;
      int64_t s_off = gla_tok(d, c.b, c.t0 + s_row, c.h, width) + col;
      xs[rr][tx] = t_in ? x[t_off] : 0.0f;
      ys[rr][tx] = s_in ? y[s_off] : 0.0f;
      if (DECAY) {
        axs[rr][tx] = t_in ? a[t_off] : 0.0;
        ays[rr][tx] = s_in ? a[s_off] : 0.0;
      }
    }
    __syncthreads();
    for (int cc = 0; cc < GLA_TILE; cc++) {
      float yv = ys[tx][cc];
      for (int m = 0; m < GLA_PER_THREAD; m++) {
        int rr = ty + m * GLA_ROWS;
        /* Above the diagonal the exponent is positive and may overflow; those entries are
         * replaced by 0 at the store below (a select, so no inf * 0 reaches the result). */
        float term = xs[rr][cc] * yv;
        if (DECAY) term *= expf((float)(axs[rr][cc] - ays[tx][cc]));
        acc[m] += term;
      }
    }
    __syncthreads();
  }
  for (int m = 0; m < GLA_PER_THREAD; m++) {
    int64_t t = t0 + ty + m * GLA_ROWS;
    if (t < c.len && s < c.len) out[t * d.chunk + s] = s <= t ? alpha * acc[m] : 0.0f;
  }
}

/* Rows of a value-width output ([B, n, H, dv]), per chunk:
 *   out[r, e] = (accumulate ? out[r, e] : 0) + alpha * sum_u P(r, u) y_u[e]
 *               + coef * sum_i x_r[i] exp(w_r[i]) M[i, e]
 * P(r, u) = scores[r][u] (u <= r), or with TRANSPOSE scores[u][r] (u >= r); no such term when
 * scores is NULL. w_r = a_r, or aL - a_r with to_end. M = m_base + bh m_bh + j m_chunk ([dk, dv]);
 * no such term when m_base is NULL.
 *   o:       P = A,  y = v,  x = q, w = a_r,      M = S_j,      alpha = coef = scale
 *   dv:      P = A^T, y = do, x = k, w = aL - a_r, M = dS_{j+1}, alpha = scale, coef = 1
 *   correct: no P,           x = q, w = c_t (global), M = S_in,  coef = scale, accumulate
 * Grid: (B H chunks, row tiles, dv tiles). */
template <bool TRANSPOSE>
__global__ void gla_value_rows_kernel(gla_dims_t d, const float *scores, float alpha,
                                      const float *y, const float *x, const double *a, bool to_end,
                                      const float *m_base, int64_t m_bh, int64_t m_chunk,
                                      float coef, bool accumulate, float *out) {
  __shared__ float ps[GLA_TILE][GLA_TILE + 1]; /* [r][u] */
  __shared__ float vs[GLA_TILE][GLA_TILE + 1]; /* [u][e], then the M tile [i][e] */
  __shared__ float xs[GLA_TILE][GLA_TILE + 1]; /* [r][i]: x * exp(w) */
  gla_chunk_t c = gla_chunk_of(d, blockIdx.x);
  int tx = threadIdx.x, ty = threadIdx.y;
  int64_t r0 = (int64_t)blockIdx.y * GLA_TILE;
  if (r0 >= c.len) return; /* uniform over the block */
  int64_t e = (int64_t)blockIdx.z * GLA_TILE + tx;
  float acc[GLA_PER_THREAD] = {0.0f}, acc_state[GLA_PER_THREAD] = {0.0f};
  if (scores) {
    const float *sc = scores + (c.bh * d.chunks + c.j) * d.chunk * d.chunk;
    int64_t u_begin = TRANSPOSE ? r0 : 0;
    int64_t u_end = TRANSPOSE ? c.len : gla_min(r0 + GLA_TILE, c.len);
    for (int64_t u0 = u_begin; u0 < u_end; u0 += GLA_TILE) {
      for (int m = 0; m < GLA_PER_THREAD; m++) {
        int k = ty + m * GLA_ROWS;
        if (!TRANSPOSE) {
          int64_t r = r0 + k, u = u0 + tx;
          ps[k][tx] = r < c.len && u < c.len ? sc[r * d.chunk + u] : 0.0f;
        } else { /* read scores[u][r] along r (coalesced), store transposed */
          int64_t u = u0 + k, r = r0 + tx;
          ps[tx][k] = r < c.len && u < c.len ? sc[u * d.chunk + r] : 0.0f;
        }
        int64_t u = u0 + k;
        vs[k][tx] = u < c.len && e < d.dv ? y[gla_tok(d, c.b, c.t0 + u, c.h, d.dv) + e] : 0.0f;
      }
      __syncthreads();
      for (int uu = 0; uu < GLA_TILE; uu++) {
        float yv = vs[uu][tx];
        for (int m = 0; m < GLA_PER_THREAD; m++) acc[m] += ps[ty + m * GLA_ROWS][uu] * yv;
      }
      __syncthreads();
    }
  }
  if (m_base) {
    const float *M = m_base + c.bh * m_bh + c.j * m_chunk;
    int64_t end_off = gla_tok(d, c.b, c.t0 + c.len - 1, c.h, d.dk);
    for (int64_t i0 = 0; i0 < d.dk; i0 += GLA_TILE) {
      int64_t i_load = i0 + tx;
      double a_end = to_end && i_load < d.dk ? a[end_off + i_load] : 0.0;
      for (int m = 0; m < GLA_PER_THREAD; m++) {
        int k = ty + m * GLA_ROWS;
        int64_t r = r0 + k;
        float xv = 0.0f;
        if (r < c.len && i_load < d.dk) {
          int64_t off = gla_tok(d, c.b, c.t0 + r, c.h, d.dk) + i_load;
          xv = x[off] * expf((float)(to_end ? a_end - a[off] : a[off]));
        }
        xs[k][tx] = xv;
        int64_t i = i0 + k;
        vs[k][tx] = i < d.dk && e < d.dv ? M[i * d.dv + e] : 0.0f;
      }
      __syncthreads();
      for (int ii = 0; ii < GLA_TILE; ii++) {
        float mv = vs[ii][tx];
        for (int m = 0; m < GLA_PER_THREAD; m++) acc_state[m] += xs[ty + m * GLA_ROWS][ii] * mv;
      }
      __syncthreads();
    }
  }
  for (int m = 0; m < GLA_PER_THREAD; m++) {
    int64_t r = r0 + ty + m * GLA_ROWS;
    if (r >= c.len || e >= d.dv) continue;
    float *o = out + gla_tok(d, c.b, c.t0 + r, c.h, d.dv) + e;
    float value = alpha * acc[m] + coef * acc_state[m];
    *o = accumulate ? *o + value : value;
  }
}

/* Rows of a key-width output ([B, n, H, dk]), per chunk:
 *   out[r, i] = sum_u P(r, u) x_u[i] exp(a_hi[i] - a_lo[i]) + coef exp(w_r[i]) sum_e y_r[e] M[i, e]
 *   dq (!TRANSPOSE): P(r, u) = dA[r][u], u <= r, hi = r, lo = u; x = k, y = do, M = S_j,
 *                    w_r = a_r, coef = scale
 *   dk (TRANSPOSE):  P(r, u) = dA[u][r], u >= r, hi = u, lo = r; x = q, y = v, M = dS_{j+1},
 *                    w_r = aL - a_r, coef = 1
 * M = m_base + bh m_bh + j m_chunk. Grid: (B H chunks, row tiles, dk tiles). */
template <bool TRANSPOSE>
__global__ void gla_key_rows_kernel(gla_dims_t d, const float *dscores, const float *x,
                                    const double *a, const float *y, const float *m_base,
                                    int64_t m_bh, int64_t m_chunk, float coef, float *out) {
  __shared__ float ps[GLA_TILE][GLA_TILE + 1];  /* [r][u] */
  __shared__ float xs[GLA_TILE][GLA_TILE + 1];  /* [u][i], then y as [r][e] */
  __shared__ double as[GLA_TILE][GLA_TILE + 1]; /* [u][i] */
  __shared__ float ms[GLA_TILE][GLA_TILE + 1];  /* the M tile [i][e] */
  gla_chunk_t c = gla_chunk_of(d, blockIdx.x);
  int tx = threadIdx.x, ty = threadIdx.y;
  int64_t r0 = (int64_t)blockIdx.y * GLA_TILE;
  if (r0 >= c.len) return; /* uniform over the block */
  int64_t i0 = (int64_t)blockIdx.z * GLA_TILE, i = i0 + tx;
  double a_row[GLA_PER_THREAD];
  for (int m = 0; m < GLA_PER_THREAD; m++) {
    int64_t r = r0 + ty + m * GLA_ROWS;
    a_row[m] = r < c.len && i < d.dk ? a[gla_tok(d, c.b, c.t0 + r, c.h, d.dk) + i] : 0.0;
  }
  double a_end = i < d.dk ? a[gla_tok(d, c.b, c.t0 + c.len - 1, c.h, d.dk) + i] : 0.0;
  float acc[GLA_PER_THREAD] = {0.0f}, acc_state[GLA_PER_THREAD] = {0.0f};
  const float *sc = dscores + (c.bh * d.chunks + c.j) * d.chunk * d.chunk;
  int64_t u_begin = TRANSPOSE ? r0 : 0;
  int64_t u_end = TRANSPOSE ? c.len : gla_min(r0 + GLA_TILE, c.len);
  for (int64_t u0 = u_begin; u0 < u_end; u0 += GLA_TILE) {
    for (int m = 0; m < GLA_PER_THREAD; m++) {
      int k = ty + m * GLA_ROWS;
      if (!TRANSPOSE) {
        int64_t r = r0 + k, u = u0 + tx;
        ps[k][tx] = r < c.len && u < c.len ? sc[r * d.chunk + u] : 0.0f;
      } else {
        int64_t u = u0 + k, r = r0 + tx;
        ps[tx][k] = r < c.len && u < c.len ? sc[u * d.chunk + r] : 0.0f;
      }
      int64_t u = u0 + k;
      bool in = u < c.len && i < d.dk;
      int64_t off = gla_tok(d, c.b, c.t0 + u, c.h, d.dk) + i;
      xs[k][tx] = in ? x[off] : 0.0f;
      as[k][tx] = in ? a[off] : 0.0;
    }
    __syncthreads();
    for (int uu = 0; uu < GLA_TILE; uu++) {
      int64_t u = u0 + uu;
      float xv = xs[uu][tx];
      double au = as[uu][tx];
      for (int m = 0; m < GLA_PER_THREAD; m++) {
        int64_t r = r0 + ty + m * GLA_ROWS;
        /* Only pairs inside the causal triangle have a non-positive exponent; outside it the
         * score is 0 and the decay is replaced by 0 (a select) so inf * 0 cannot occur. */
        bool pair = (TRANSPOSE ? u >= r : u <= r) && u < c.len && r < c.len;
        float exponent = (float)(TRANSPOSE ? au - a_row[m] : a_row[m] - au);
        float decay = pair ? expf(exponent) : 0.0f;
        acc[m] += ps[ty + m * GLA_ROWS][uu] * xv * decay;
      }
    }
    __syncthreads();
  }
  const float *M = m_base + c.bh * m_bh + c.j * m_chunk;
  for (int64_t e0 = 0; e0 < d.dv; e0 += GLA_TILE) {
    for (int m = 0; m < GLA_PER_THREAD; m++) {
      int k = ty + m * GLA_ROWS;
      int64_t r = r0 + k, e = e0 + tx, i_load = i0 + k;
      xs[k][tx] = r < c.len && e < d.dv ? y[gla_tok(d, c.b, c.t0 + r, c.h, d.dv) + e] : 0.0f;
      ms[k][tx] = i_load < d.dk && e < d.dv ? M[i_load * d.dv + e] : 0.0f;
    }
    __syncthreads();
    for (int ee = 0; ee < GLA_TILE; ee++) {
      float mv = ms[tx][ee]; /* M[i][e0 + ee] */
      for (int m = 0; m < GLA_PER_THREAD; m++) acc_state[m] += xs[ty + m * GLA_ROWS][ee] * mv;
    }
    __syncthreads();
  }
  for (int m = 0; m < GLA_PER_THREAD; m++) {
    int64_t r = r0 + ty + m * GLA_ROWS;
    if (r >= c.len || i >= d.dk) continue;
    float w = (float)(TRANSPOSE ? a_end - a_row[m] : a_row[m]);
    out[gla_tok(d, c.b, c.t0 + r, c.h, d.dk) + i] = acc[m] + coef * expf(w) * acc_state[m];
  }
}

/* rowdot[bh, j, i] = sum_e S_{j+1}[i, e] dS_{j+1}[i, e]: one warp per row, lanes over e. */
__global__ void gla_rowdot_kernel(gla_dims_t d, const float *states, const float *dstates,
                                  float *rowdot) {
  int lane = threadIdx.x & 31;
  int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  int64_t warps = ((int64_t)gridDim.x * blockDim.x) >> 5;
  int64_t rows = d.batch * d.heads * d.chunks * d.dk;
  for (int64_t row = warp; row < rows; row += warps) { /* row is uniform over the warp */
    int64_t i = row % d.dk, rest = row / d.dk;
    int64_t j = rest % d.chunks, bh = rest / d.chunks;
    const float *s = states + ((bh * (d.chunks + 1) + j + 1) * d.dk + i) * d.dv;
    const float *ds = dstates + ((bh * d.chunks + j) * d.dk + i) * d.dv;
    float sum = 0.0f;
    for (int64_t e = lane; e < d.dv; e += 32) sum += s[e] * ds[e];
    for (int offset = 16; offset > 0; offset >>= 1)
      sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    if (lane == 0) rowdot[row] = sum;
  }
}

/* dg_r[i] = sum_{t >= r in the chunk} (q_t[i] dq_t[i] - k_t[i] dk_t[i]) + rowdot[bh, j, i]
 * (the identity in the file comment). One thread per (b, chunk, h, i). */
__global__ void gla_dg_kernel(gla_dims_t d, const float *q, const float *k, const float *dq,
                              const float *dk, const float *rowdot, float *dg) {
  int64_t count = d.batch * d.chunks * d.heads * d.dk;
  WEFT_CUDA_GRID_STRIDE_LOOP(idx, count) {
    int64_t i = idx % d.dk, rest = idx / d.dk;
    int64_t h = rest % d.heads;
    rest /= d.heads;
    int64_t j = rest % d.chunks, b = rest / d.chunks;
    int64_t t0 = j * d.chunk, len = gla_min(d.chunk, d.tokens - t0);
    int64_t stride = d.heads * d.dk, off = gla_tok(d, b, t0 + len - 1, h, d.dk) + i;
    float sum = rowdot[((b * d.heads + h) * d.chunks + j) * d.dk + i];
    for (int64_t r = len - 1; r >= 0; r--, off -= stride) {
      sum += q[off] * dq[off] - k[off] * dk[off];
      dg[off] = sum;
    }
  }
}

/* ---- host side ---- */

static weft_status_t gla_dims_init(const weft_gla_shape_t *shape, gla_dims_t *d) {
  d->batch = shape->batch;
  d->tokens = shape->tokens;
  d->heads = shape->heads;
  d->dk = shape->dk;
  d->dv = shape->dv;
  d->scale = shape->scale;
  int64_t chunk = shape->chunk > 0 ? shape->chunk : 64; /* the header's default */
  /* A single short chunk needs no [C, C] score space beyond its tokens. */
  if (d->tokens > 0 && chunk > d->tokens) chunk = d->tokens;
  if (chunk < 1) chunk = 1;
  d->chunk = chunk;
  d->chunks = (d->tokens + chunk - 1) / chunk;
  /* Grid limits: x (B H chunks) below 2^31, y and z (tiles of C, dk, dv) below 2^16. */
  int64_t blocks_x = d->batch * d->heads * d->chunks;
  int64_t widest = chunk;
  if (d->dk > widest) widest = d->dk;
  if (d->dv > widest) widest = d->dv;
  int64_t tiles_max = (widest + GLA_TILE - 1) / GLA_TILE;
  if (blocks_x > INT32_MAX || tiles_max > 65535) {
    WEFT_ERROR("kernels",
               "gla (CUDA): shape B=%lld n=%lld H=%lld dk=%lld dv=%lld chunk=%lld exceeds the "
               "launch grid (B*H*chunks=%lld must be < 2^31, max(chunk,dk,dv)/%d < 65536)",
               (long long)d->batch, (long long)d->tokens, (long long)d->heads, (long long)d->dk,
               (long long)d->dv, (long long)chunk, (long long)blocks_x, GLA_TILE);
    return WEFT_ERR_UNSUPPORTED;
  }
  return WEFT_OK;
}

/* Workspace sub-buffers; unused ones are empty (and alias the next one). */
typedef struct gla_ws {
  double *a;       /* [B, n, H, dk] chunk-local (or global) cumulative log decay */
  double *offsets; /* [B, chunks, H, dk] */
  float *states;   /* [B, H, chunks + 1, dk, dv] chunk-start states */
  float *dstates;  /* [B, H, chunks, dk, dv] W_j, then chunk-end state gradients */
  float *scores;   /* [B, H, chunks, C, C] A */
  float *dscores;  /* [B, H, chunks, C, C] dA */
  float *rowdot;   /* [B, H, chunks, dk] */
} gla_ws_t;

enum {
  GLA_WS_A = 1,
  GLA_WS_OFFSETS = 2,
  GLA_WS_STATES = 4,
  GLA_WS_DSTATES = 8,
  GLA_WS_SCORES = 16,
  GLA_WS_DSCORES = 32,
  GLA_WS_ROWDOT = 64
};

static int64_t gla_align(int64_t floats) {
  return (floats + GLA_ALIGN_FLOATS - 1) / GLA_ALIGN_FLOATS * GLA_ALIGN_FLOATS;
}

static weft_status_t gla_ws_get(weft_kernel_ctx_t *ctx, const gla_dims_t *d, int want,
                                gla_ws_t *ws) {
  int64_t bh = d->batch * d->heads, mat = d->dk * d->dv;
  int64_t sizes[7] = {
      want & GLA_WS_A ? 2 * d->batch * d->tokens * d->heads * d->dk : 0, /* doubles */
      want & GLA_WS_OFFSETS ? 2 * bh * d->chunks * d->dk : 0,            /* doubles */
      want & GLA_WS_STATES ? bh * (d->chunks + 1) * mat : 0,
      want & GLA_WS_DSTATES ? bh * d->chunks * mat : 0,
      want & GLA_WS_SCORES ? bh * d->chunks * d->chunk * d->chunk : 0,
      want & GLA_WS_DSCORES ? bh * d->chunks * d->chunk * d->chunk : 0,
      want & GLA_WS_ROWDOT ? bh * d->chunks * d->dk : 0,
  };
  int64_t total = 0;
  for (int s = 0; s < 7; s++) total += gla_align(sizes[s]);
  void *base = NULL;
  WEFT_CHECK(
      weft_kernel_ctx_workspace(ctx, WEFT_KERNEL_WS_GLA, (size_t)total * sizeof(float), &base));
  float *p = (float *)base;
  /* Every pointer is set, even for an empty buffer, so no kernel sees NULL. */
  ws->a = (double *)p;
  p += gla_align(sizes[0]);
  ws->offsets = (double *)p;
  p += gla_align(sizes[1]);
  float **slots[5] = {&ws->states, &ws->dstates, &ws->scores, &ws->dscores, &ws->rowdot};
  for (int s = 0; s < 5; s++) {
    *slots[s] = p;
    p += gla_align(sizes[s + 2]);
  }
  return WEFT_OK;
}

static cudaStream_t gla_stream(const weft_kernel_ctx_t *ctx) {
  return (cudaStream_t)ctx->cuda_stream;
}

static weft_status_t gla_check(const char *kernel, const gla_dims_t *d) {
  return weft_cuda_launch_check(kernel, WEFT_DTYPE_F32, d->tokens);
}

/* Grid over the chunks (x), tiles of `rows` (y) and of `cols` (z). */
static dim3 gla_tile_grid(const gla_dims_t *d, int64_t rows, int64_t cols) {
  return dim3((unsigned)(d->batch * d->heads * d->chunks),
              (unsigned)((rows + GLA_TILE - 1) / GLA_TILE),
              (unsigned)((cols + GLA_TILE - 1) / GLA_TILE));
}

static bool gla_has_chunks(const gla_dims_t *d) {
  return d->batch * d->heads * d->chunks > 0 && d->dk > 0 && d->dv > 0;
}

static weft_status_t gla_cumsum(weft_kernel_ctx_t *ctx, const gla_dims_t *d, const float *g,
                                double *a) {
  int64_t count = d->batch * d->chunks * d->heads * d->dk;
  if (count == 0) return WEFT_OK;
  gla_cumsum_kernel<<<weft_cuda_grid(ctx, count), WEFT_CUDA_BLOCK, 0, gla_stream(ctx)>>>(*d, g, a);
  return gla_check("gla_cumsum", d);
}

static weft_status_t gla_chunk_offsets(weft_kernel_ctx_t *ctx, const gla_dims_t *d, const double *a,
                                       double *offsets, float *total) {
  int64_t count = d->batch * d->heads * d->dk;
  if (count == 0) return WEFT_OK;
  gla_chunk_offsets_kernel<<<weft_cuda_grid(ctx, count), WEFT_CUDA_BLOCK, 0, gla_stream(ctx)>>>(
      *d, a, offsets, total);
  return gla_check("gla_chunk_offsets", d);
}

static weft_status_t gla_chunk_state(weft_kernel_ctx_t *ctx, const gla_dims_t *d, const float *x,
                                     const float *y, const double *a, bool to_end, float alpha,
                                     float *out, int64_t slots) {
  if (!gla_has_chunks(d)) return WEFT_OK;
  gla_chunk_state_kernel<<<gla_tile_grid(d, d->dk, d->dv), dim3(GLA_TILE, GLA_ROWS), 0,
                           gla_stream(ctx)>>>(*d, x, y, a, to_end, alpha, out, slots);
  return gla_check("gla_chunk_state", d);
}

static weft_status_t gla_scan_forward(weft_kernel_ctx_t *ctx, const gla_dims_t *d, const double *a,
                                      const float *init, float *states, float *final_state) {
  int64_t count = d->batch * d->heads * d->dk * d->dv;
  if (count == 0) return WEFT_OK;
  gla_scan_forward_kernel<<<weft_cuda_grid(ctx, count), WEFT_CUDA_BLOCK, 0, gla_stream(ctx)>>>(
      *d, a, init, states, final_state);
  return gla_check("gla_scan_forward", d);
}

static weft_status_t gla_scan_reverse(weft_kernel_ctx_t *ctx, const gla_dims_t *d, const double *a,
                                      const float *init, float *dstates, float *final_grad) {
  int64_t count = d->batch * d->heads * d->dk * d->dv;
  if (count == 0) return WEFT_OK;
  gla_scan_reverse_kernel<<<weft_cuda_grid(ctx, count), WEFT_CUDA_BLOCK, 0, gla_stream(ctx)>>>(
      *d, a, init, dstates, final_grad);
  return gla_check("gla_scan_reverse", d);
}

static weft_status_t gla_scores(weft_kernel_ctx_t *ctx, const gla_dims_t *d, const float *x,
                                const float *y, const double *a, int64_t width, float alpha,
                                float *scores) {
  if (!gla_has_chunks(d)) return WEFT_OK;
  dim3 grid = gla_tile_grid(d, d->chunk, d->chunk), block(GLA_TILE, GLA_ROWS);
  if (a)
    gla_scores_kernel<true><<<grid, block, 0, gla_stream(ctx)>>>(*d, x, y, a, width, alpha, scores);
  else
    gla_scores_kernel<false>
        <<<grid, block, 0, gla_stream(ctx)>>>(*d, x, y, a, width, alpha, scores);
  return gla_check("gla_scores", d);
}

/* Arguments of gla_value_rows_kernel, named so the call sites read. */
typedef struct gla_value_rows_args {
  const float *scores; /* NULL: no score term */
  bool transpose;
  float alpha;
  const float *y;
  const float *x;
  const double *a;
  bool to_end;
  const float *m_base; /* NULL: no state term */
  int64_t m_bh, m_chunk;
  float coef;
  bool accumulate;
  float *out;
} gla_value_rows_args_t;

static weft_status_t gla_value_rows(weft_kernel_ctx_t *ctx, const gla_dims_t *d,
                                    const gla_value_rows_args_t *p) {
  if (!gla_has_chunks(d)) return WEFT_OK;
  dim3 grid = gla_tile_grid(d, d->chunk, d->dv), block(GLA_TILE, GLA_ROWS);
  if (p->transpose)
    gla_value_rows_kernel<true><<<grid, block, 0, gla_stream(ctx)>>>(
        *d, p->scores, p->alpha, p->y, p->x, p->a, p->to_end, p->m_base, p->m_bh, p->m_chunk,
        p->coef, p->accumulate, p->out);
  else
    gla_value_rows_kernel<false><<<grid, block, 0, gla_stream(ctx)>>>(
        *d, p->scores, p->alpha, p->y, p->x, p->a, p->to_end, p->m_base, p->m_bh, p->m_chunk,
        p->coef, p->accumulate, p->out);
  return gla_check("gla_value_rows", d);
}

static weft_status_t gla_key_rows(weft_kernel_ctx_t *ctx, const gla_dims_t *d, bool transpose,
                                  const float *dscores, const float *x, const double *a,
                                  const float *y, const float *m_base, int64_t m_bh,
                                  int64_t m_chunk, float coef, float *out) {
  if (!gla_has_chunks(d)) return WEFT_OK;
  dim3 grid = gla_tile_grid(d, d->chunk, d->dk), block(GLA_TILE, GLA_ROWS);
  if (transpose)
    gla_key_rows_kernel<true><<<grid, block, 0, gla_stream(ctx)>>>(*d, dscores, x, a, y, m_base,
                                                                   m_bh, m_chunk, coef, out);
  else
    gla_key_rows_kernel<false><<<grid, block, 0, gla_stream(ctx)>>>(*d, dscores, x, a, y, m_base,
                                                                    m_bh, m_chunk, coef, out);
  return gla_check("gla_key_rows", d);
}

static weft_status_t gla_rowdot(weft_kernel_ctx_t *ctx, const gla_dims_t *d, const float *states,
                                const float *dstates, float *rowdot) {
  int64_t rows = d->batch * d->heads * d->chunks * d->dk;
  if (rows == 0) return WEFT_OK;
  gla_rowdot_kernel<<<weft_cuda_grid(ctx, rows * 32), WEFT_CUDA_BLOCK, 0, gla_stream(ctx)>>>(
      *d, states, dstates, rowdot);
  return gla_check("gla_rowdot", d);
}

static weft_status_t gla_dg(weft_kernel_ctx_t *ctx, const gla_dims_t *d, const float *q,
                            const float *k, const float *dq, const float *dk, const float *rowdot,
                            float *dg) {
  int64_t count = d->batch * d->chunks * d->heads * d->dk;
  if (count == 0) return WEFT_OK;
  gla_dg_kernel<<<weft_cuda_grid(ctx, count), WEFT_CUDA_BLOCK, 0, gla_stream(ctx)>>>(
      *d, q, k, dq, dk, rowdot, dg);
  return gla_check("gla_dg", d);
}

/* ---- the four back ends ---- */

extern "C" weft_status_t weft_gla_forward_local_cuda(weft_kernel_ctx_t *ctx,
                                                     const weft_gla_shape_t *shape, const float *q,
                                                     const float *k, const float *v, const float *g,
                                                     float *out, float *s_local, float *log_gamma) {
  gla_dims_t d;
  gla_ws_t ws;
  WEFT_CHECK(gla_dims_init(shape, &d));
  WEFT_CHECK(gla_ws_get(ctx, &d, GLA_WS_A | GLA_WS_STATES | GLA_WS_SCORES, &ws));
  int64_t mat = d.dk * d.dv;
  WEFT_CHECK(gla_cumsum(ctx, &d, g, ws.a));
  /* U_j into states[j + 1], then S_j in place; n = 0 leaves s_local = 0. */
  WEFT_CHECK(gla_chunk_state(ctx, &d, k, v, ws.a, true, 1.0f, ws.states + mat, d.chunks + 1));
  WEFT_CHECK(gla_scan_forward(ctx, &d, ws.a, NULL, ws.states, s_local));
  WEFT_CHECK(gla_chunk_offsets(ctx, &d, ws.a, NULL, log_gamma)); /* c_n; 0 when n = 0 */
  WEFT_CHECK(gla_scores(ctx, &d, q, k, ws.a, d.dk, 1.0f, ws.scores));
  gla_value_rows_args_t o = {
      ws.scores, false,   d.scale, v,  q, ws.a, false, ws.states, (d.chunks + 1) * mat,
      mat,       d.scale, false,   out};
  return gla_value_rows(ctx, &d, &o);
}

extern "C" weft_status_t weft_gla_forward_correct_cuda(weft_kernel_ctx_t *ctx,
                                                       const weft_gla_shape_t *shape,
                                                       const float *q, const float *g,
                                                       const float *s_in, float *out) {
  gla_dims_t d;
  gla_ws_t ws;
  WEFT_CHECK(gla_dims_init(shape, &d));
  if (d.chunks == 0) return WEFT_OK;
  WEFT_CHECK(gla_ws_get(ctx, &d, GLA_WS_A | GLA_WS_OFFSETS, &ws));
  /* c_t = a_t + (sum of earlier chunks' totals): sequence-global cumulative log decay. */
  WEFT_CHECK(gla_cumsum(ctx, &d, g, ws.a));
  WEFT_CHECK(gla_chunk_offsets(ctx, &d, ws.a, ws.offsets, NULL));
  int64_t count = d.batch * d.tokens * d.heads * d.dk;
  if (count > 0) {
    gla_add_offsets_kernel<<<weft_cuda_grid(ctx, count), WEFT_CUDA_BLOCK, 0, gla_stream(ctx)>>>(
        d, ws.offsets, ws.a);
    WEFT_CHECK(gla_check("gla_add_offsets", &d));
  }
  gla_value_rows_args_t o = {NULL, false,       0.0f, NULL,    q,    ws.a, false,
                             s_in, d.dk * d.dv, 0,    d.scale, true, out};
  return gla_value_rows(ctx, &d, &o);
}

extern "C" weft_status_t weft_gla_backward_state_local_cuda(weft_kernel_ctx_t *ctx,
                                                            const weft_gla_shape_t *shape,
                                                            const float *q, const float *g,
                                                            const float *dout, float *ds_local) {
  gla_dims_t d;
  gla_ws_t ws;
  WEFT_CHECK(gla_dims_init(shape, &d));
  WEFT_CHECK(gla_ws_get(ctx, &d, GLA_WS_A | GLA_WS_DSTATES, &ws));
  /* ds_local = sum_j diag(exp(c at chunk j's start)) W_j: the reverse scan from 0. */
  WEFT_CHECK(gla_cumsum(ctx, &d, g, ws.a));
  WEFT_CHECK(gla_chunk_state(ctx, &d, q, dout, ws.a, false, d.scale, ws.dstates, d.chunks));
  return gla_scan_reverse(ctx, &d, ws.a, NULL, ws.dstates, ds_local);
}

extern "C" weft_status_t weft_gla_backward_cuda(weft_kernel_ctx_t *ctx,
                                                const weft_gla_shape_t *shape, const float *q,
                                                const float *k, const float *v, const float *g,
                                                const float *dout, const float *s_in,
                                                const float *ds_out, float *dq, float *dk,
                                                float *dv, float *dg) {
  gla_dims_t d;
  gla_ws_t ws;
  WEFT_CHECK(gla_dims_init(shape, &d));
  if (d.chunks == 0) return WEFT_OK; /* no tokens: every output is empty */
  WEFT_CHECK(gla_ws_get(
      ctx, &d,
      GLA_WS_A | GLA_WS_STATES | GLA_WS_DSTATES | GLA_WS_SCORES | GLA_WS_DSCORES | GLA_WS_ROWDOT,
      &ws));
  int64_t mat = d.dk * d.dv;
  WEFT_CHECK(gla_cumsum(ctx, &d, g, ws.a));
  /* Chunk-start states S_j recomputed from s_in (S_chunks = S_n). */
  WEFT_CHECK(gla_chunk_state(ctx, &d, k, v, ws.a, true, 1.0f, ws.states + mat, d.chunks + 1));
  WEFT_CHECK(gla_scan_forward(ctx, &d, ws.a, s_in, ws.states, NULL));
  /* Chunk-end state gradients dS_{j+1}, carried backwards from ds_out. */
  WEFT_CHECK(gla_chunk_state(ctx, &d, q, dout, ws.a, false, d.scale, ws.dstates, d.chunks));
  WEFT_CHECK(gla_scan_reverse(ctx, &d, ws.a, ds_out, ws.dstates, NULL));
  /* A and dA = scale do v^T per chunk. */
  WEFT_CHECK(gla_scores(ctx, &d, q, k, ws.a, d.dk, 1.0f, ws.scores));
  WEFT_CHECK(gla_scores(ctx, &d, dout, v, NULL, d.dv, d.scale, ws.dscores));
  WEFT_CHECK(gla_key_rows(ctx, &d, false, ws.dscores, k, ws.a, dout, ws.states,
                          (d.chunks + 1) * mat, mat, d.scale, dq));
  WEFT_CHECK(gla_key_rows(ctx, &d, true, ws.dscores, q, ws.a, v, ws.dstates, d.chunks * mat, mat,
                          1.0f, dk));
  gla_value_rows_args_t o = {ws.scores,  true,           d.scale, dout, k,     ws.a, true,
                             ws.dstates, d.chunks * mat, mat,     1.0f, false, dv};
  WEFT_CHECK(gla_value_rows(ctx, &d, &o));
  WEFT_CHECK(gla_rowdot(ctx, &d, ws.states, ws.dstates, ws.rowdot));
  return gla_dg(ctx, &d, q, k, dq, dk, ws.rowdot, dg);
}
