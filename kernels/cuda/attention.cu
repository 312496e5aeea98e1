/* CUDA back end of block softmax attention (weft/attention.h): flash-attention-2 style tiling
 * in f32 SIMT arithmetic (no tensor cores yet), f32 or bf16 inputs.
 *
 * Tiles: ATTN_BQ = 16 query rows by ATTN_BK = 32 keys. A key tile holds one key per lane, so
 * the score row of a query inside a tile lives in one warp (one value per lane) and every
 * softmax reduction is a warp shuffle; no [nq, nk] matrix exists anywhere. Operands are
 * widened to f32 while they are staged in shared memory, so the arithmetic is the same for
 * both input types. Head dims are compiled for three buckets, DMAX = 64, 128 and 256; a head
 * dim d <= DMAX runs in the smallest bucket that holds it, with the columns d..DMAX-1 of
 * every staged tile zeroed so that no loop needs a bounds check on d (any d up to 256, odd
 * ones included, is exact; larger d is rejected as unsupported).
 *
 * Kernels, all on the context's stream:
 *   forward  one block per (b, h, query tile), 4 warps x 4 query rows. Q tile staged once;
 *            K, V tiles stream through shared memory; per row a running max m, sum l and
 *            output accumulator o (lane owns columns lane + 32 c), updated online.
 *   dq       the same grid and structure, recomputing s = q.k and dp = dout.v per tile:
 *            dq_i += scale * sum_j p_ij (dp_ij - delta_i) k_j.
 *   dkdv     one block per (b, kv head, key tile), 8 warps. The block owns its keys' dk, dv
 *            rows (in registers, 4 keys per warp) and loops over the G query heads of its
 *            group and over every query tile: p and ds for the 16 x 32 pair go through shared
 *            memory, then dv_j += sum_i p_ij dout_i and dk_j += scale sum_i ds_ij q_i.
 *   delta, merge  one warp per (b, i, h) row.
 * A separate dq pass instead of atomicAdd into dq (as flash-attention 2 does) costs two extra
 * tile products per pair (s and dp are recomputed) but leaves every output owned by exactly
 * one thread: no atomics, so results are bitwise reproducible run to run, like the other CUDA
 * kernels of weft.
 *
 * Masking follows the header exactly: pair (i, j) is allowed iff q_pos[i] >= 0, kv_pos[j] >= 0
 * and, when causal, kv_pos[j] <= q_pos[i]. A key tile is skipped for a query tile when no
 * pair can be allowed: every key padded, every query padded, or (causal) the smallest key
 * position exceeds the largest query position. Positions need not be sorted (zigzag blocks),
 * so these bounds are reduced per tile. The skip decision is computed identically by every
 * warp, so it is block-uniform and __syncthreads inside the tile loop is safe.
 *
 * Shared-memory layout: K and V tiles use a row stride of DMAX + 4 floats, so lane j reading
 * row j as float4 hits distinct banks (each quarter-warp covers all 32 banks); Q and dout
 * tiles are only read as broadcasts or consecutive columns and use stride DMAX. Kernels past
 * the 48 KiB default of dynamic shared memory (DMAX = 256; dq and dkdv at 128) opt in with
 * cudaFuncSetAttribute: at most 101 KiB (dkdv at 256), within sm_90's 227 KiB.
 *
 * No workspace is used: all scratch is shared memory and registers.
 * Rejected for now: tensor cores (wmma/mma). f32 inputs would need TF32, whose 10-bit mantissa
 * breaks the header's f32 compute contract, and bf16 MMAs would round p to bf16 before P V;
 * a tensor-core path needs a GPU to validate and measure against this baseline. */
#include <limits.h>
#include <math.h>

#include "attention_internal.h"
#include "cuda_common.cuh"

#define ATTN_WARP      32
#define ATTN_FULL_MASK 0xffffffffu
/* Query rows per tile: 4 rows per warp in the row kernels keeps the o accumulators at
 * 4 * DMAX / 32 <= 32 registers per thread while reusing each staged key 4 times. */
#define ATTN_BQ 16
/* Keys per tile: one per lane of a warp (see the note at the top). */
#define ATTN_BK 32
/* Row kernels (forward, dq): 4 warps, each owning ATTN_BQ / 4 query rows. */
#define ATTN_ROW_WARPS 4
#define ATTN_ROW_ROWS  (ATTN_BQ / ATTN_ROW_WARPS)
/* dk/dv kernel: 8 warps; in the score step a warp owns 2 query rows (lane = key), in the
 * accumulate step 4 keys (lane = column), so dk + dv take 2 * 4 * DMAX / 32 <= 64 registers. */
#define ATTN_KEY_WARPS 8
#define ATTN_KEY_ROWS  (ATTN_BQ / ATTN_KEY_WARPS)
#define ATTN_KEY_KEYS  (ATTN_BK / ATTN_KEY_WARPS)
/* The largest head-dim bucket. */
#define ATTN_MAX_HEAD_DIM 256
/* Smallest key position of a tile whose keys are all padding. */
#define ATTN_NO_KEY LLONG_MAX

typedef struct attn_dims {
  int64_t batch, heads, kv_heads;
  int64_t group; /* heads / kv_heads: query heads per kv head */
  int64_t nq, nk;
  int64_t q_tiles, k_tiles; /* ceil(nq / ATTN_BQ), ceil(nk / ATTN_BK) */
  int64_t d;                /* head_dim; <= ATTN_MAX_HEAD_DIM in the tiled kernels */
  float scale;
  bool causal;
} attn_dims_t;

__device__ __forceinline__ int64_t attn_min64(int64_t x, int64_t y) { return x < y ? x : y; }

__device__ __forceinline__ float attn_warp_max(float x) {
  for (int off = ATTN_WARP / 2; off > 0; off /= 2)
    x = fmaxf(x, __shfl_xor_sync(ATTN_FULL_MASK, x, off));
  return x;
}

__device__ __forceinline__ float attn_warp_sum(float x) {
  for (int off = ATTN_WARP / 2; off > 0; off /= 2) x += __shfl_xor_sync(ATTN_FULL_MASK, x, off);
  return x;
}

__device__ __forceinline__ long long attn_warp_max_ll(long long x) {
  for (int off = ATTN_WARP / 2; off > 0; off /= 2) {
    long long y = __shfl_xor_sync(ATTN_FULL_MASK, x, off);
    x = y > x ? y : x;
  }
  return x;
}

__device__ __forceinline__ long long attn_warp_min_ll(long long x) {
  for (int off = ATTN_WARP / 2; off > 0; off /= 2) {
    long long y = __shfl_xor_sync(ATTN_FULL_MASK, x, off);
    x = y < x ? y : x;
  }
  return x;
}

/* The header's mask: may query position qp attend key position kp? */
__device__ __forceinline__ bool attn_allowed(long long qp, long long kp, bool causal) {
  return qp >= 0 && kp >= 0 && (!causal || kp <= qp);
}

/* Largest position of the query rows [i0, i0 + rows), rows <= ATTN_BQ <= 32; negative when
 * every row is padding. Every lane of every warp returns the same value. */
__device__ __forceinline__ long long attn_tile_qmax(const int64_t *q_pos, int64_t i0, int rows) {
  int lane = (int)threadIdx.x % ATTN_WARP;
  long long p = lane < rows ? (long long)q_pos[i0 + lane] : -1;
  return attn_warp_max_ll(p);
}

/* Position of this lane's key j0 + lane of a tile of `rows` keys; -1 (padding) past the end. */
__device__ __forceinline__ long long attn_lane_kpos(const int64_t *kv_pos, int64_t j0, int rows) {
  int lane = (int)threadIdx.x % ATTN_WARP;
  return lane < rows ? (long long)kv_pos[j0 + lane] : -1;
}

/* Smallest non-padding key position of the tile (lane_kp from attn_lane_kpos); ATTN_NO_KEY
 * when every key is padding. Warp-uniform. */
__device__ __forceinline__ long long attn_tile_kmin(long long lane_kp) {
  return attn_warp_min_ll(lane_kp >= 0 ? lane_kp : ATTN_NO_KEY);
}

/* true when no (query, key) pair of the two tiles is allowed. */
__device__ __forceinline__ bool attn_tile_skip(long long qmax, long long kmin, bool causal) {
  return qmax < 0 || kmin == ATTN_NO_KEY || (causal && kmin > qmax);
}

/* Stages `tile_rows` token rows of one head into shared memory as f32:
 * dst[r * stride + c] = src[first + r * row_step + c] for r < valid_rows and c < d, and 0 for
 * the other rows and the columns d..DMAX-1, so dot products over DMAX columns and sums over a
 * whole tile need no bounds checks. All threads of the block take part; the caller syncs. */
template <typename T, int DMAX>
__device__ __forceinline__ void attn_stage(float *dst, int stride, int tile_rows, const T *src,
                                           int64_t first, int64_t row_step, int valid_rows, int d) {
  for (int idx = (int)threadIdx.x; idx < tile_rows * DMAX; idx += (int)blockDim.x) {
    int r = idx / DMAX, c = idx % DMAX;
    float x = 0.0f;
    if (r < valid_rows && c < d) x = weft_cuda_load(src, first + (int64_t)r * row_step + c);
    dst[r * stride + c] = x;
  }
}

__device__ __forceinline__ float attn_dot4(float4 a, float4 b, float acc) {
  acc = fmaf(a.x, b.x, acc);
  acc = fmaf(a.y, b.y, acc);
  acc = fmaf(a.z, b.z, acc);
  return fmaf(a.w, b.w, acc);
}

/* Shared-memory floats of each kernel (see the layouts in the kernels). */
template <int DMAX>
constexpr int attn_forward_smem_floats() {
  return ATTN_BQ * DMAX + 2 * ATTN_BK * (DMAX + 4);
}
template <int DMAX>
constexpr int attn_dq_smem_floats() {
  return 2 * ATTN_BQ * DMAX + 2 * ATTN_BK * (DMAX + 4);
}
template <int DMAX>
constexpr int attn_dkdv_smem_floats() {
  return 2 * ATTN_BK * (DMAX + 4) + 2 * ATTN_BQ * DMAX + 2 * ATTN_BQ * ATTN_BK;
}

/* Forward of one (b, h, query tile): out rows and lse of the tile.
 * Grid: B * H * q_tiles blocks (x), ATTN_ROW_WARPS warps. */
template <typename T, int DMAX>
__global__ void __launch_bounds__(ATTN_ROW_WARPS *ATTN_WARP)
    attn_forward_kernel(attn_dims_t a, const T *q, const T *k, const T *v, const int64_t *q_pos,
                        const int64_t *kv_pos, float *out, float *lse) {
  constexpr int KS = DMAX + 4, CC = DMAX / ATTN_WARP, R = ATTN_ROW_ROWS;
  extern __shared__ float4 attn_smem[];
  float *q_s = (float *)attn_smem;   /* [BQ][DMAX] */
  float *k_s = q_s + ATTN_BQ * DMAX; /* [BK][KS] */
  float *v_s = k_s + ATTN_BK * KS;   /* [BK][KS] */
  const int warp = (int)threadIdx.x / ATTN_WARP, lane = (int)threadIdx.x % ATTN_WARP;
  const int64_t qt = blockIdx.x % a.q_tiles, bh = blockIdx.x / a.q_tiles;
  const int64_t h = bh % a.heads, b = bh / a.heads, hk = h / a.group;
  const int64_t i0 = qt * ATTN_BQ;
  const int q_rows = (int)attn_min64(ATTN_BQ, a.nq - i0), d = (int)a.d, d4 = (d + 3) / 4;

  long long qp[R]; /* this warp's rows warp * R + r */
  float o[R][CC], m[R], l[R];
#pragma unroll
  for (int r = 0; r < R; r++) {
    int row = warp * R + r;
    qp[r] = row < q_rows ? (long long)q_pos[i0 + row] : -1;
    m[r] = -INFINITY;
    l[r] = 0.0f;
#pragma unroll
    for (int cc = 0; cc < CC; cc++) o[r][cc] = 0.0f;
  }
  const long long qmax = attn_tile_qmax(q_pos, i0, q_rows);
  attn_stage<T, DMAX>(q_s, DMAX, ATTN_BQ, q, ((b * a.nq + i0) * a.heads + h) * d, a.heads * d,
                      q_rows, d);

  for (int64_t j0 = 0; qmax >= 0 && j0 < a.nk; j0 += ATTN_BK) {
    const int k_rows = (int)attn_min64(ATTN_BK, a.nk - j0);
    const long long kp = attn_lane_kpos(kv_pos, j0, k_rows);
    if (attn_tile_skip(qmax, attn_tile_kmin(kp), a.causal)) continue;
    __syncthreads(); /* every warp is done reading the previous K, V tile */
    const int64_t first = ((b * a.nk + j0) * a.kv_heads + hk) * d, step = a.kv_heads * d;
    attn_stage<T, DMAX>(k_s, KS, ATTN_BK, k, first, step, k_rows, d);
    attn_stage<T, DMAX>(v_s, KS, ATTN_BK, v, first, step, k_rows, d);
    __syncthreads(); /* K, V (and, the first time, Q) staged */

    /* s[r] = q_row . k_lane */
    float s[R];
#pragma unroll
    for (int r = 0; r < R; r++) s[r] = 0.0f;
    const float4 *k4 = (const float4 *)(k_s + lane * KS);
    for (int c4 = 0; c4 < d4; c4++) {
      float4 kk = k4[c4];
#pragma unroll
      for (int r = 0; r < R; r++)
        s[r] = attn_dot4(((const float4 *)(q_s + (warp * R + r) * DMAX))[c4], kk, s[r]);
    }

    /* Online softmax: rescale the running sums to the new row max. A row with no allowed key
     * so far keeps m = -inf, l = 0, o = 0 (m_new is warp-uniform, so is the branch). */
    float p[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
      float x = attn_allowed(qp[r], kp, a.causal) ? s[r] * a.scale : -INFINITY;
      float m_new = fmaxf(m[r], attn_warp_max(x));
      float alpha = 1.0f;
      p[r] = 0.0f;
      if (m_new != -INFINITY) {
        alpha = expf(m[r] - m_new); /* 0 when m[r] = -inf */
        p[r] = expf(x - m_new);     /* 0 for a masked key */
      }
      l[r] = l[r] * alpha + attn_warp_sum(p[r]);
      m[r] = m_new;
#pragma unroll
      for (int cc = 0; cc < CC; cc++) o[r][cc] *= alpha;
    }

    /* o[r] += sum_j p[r]_j v_j; p of key j comes from lane j. */
    for (int j = 0; j < k_rows; j++) {
      float vv[CC];
#pragma unroll
      for (int cc = 0; cc < CC; cc++) vv[cc] = v_s[j * KS + lane + cc * ATTN_WARP];
#pragma unroll
      for (int r = 0; r < R; r++) {
        float pj = __shfl_sync(ATTN_FULL_MASK, p[r], j);
#pragma unroll
        for (int cc = 0; cc < CC; cc++) o[r][cc] = fmaf(pj, vv[cc], o[r][cc]);
      }
    }
  }

#pragma unroll
  for (int r = 0; r < R; r++) {
    int row = warp * R + r;
    if (row >= q_rows) continue;
    const int64_t i = i0 + row;
    const bool empty = m[r] == -INFINITY; /* no allowed key: out 0, lse -inf */
    float *orow = out + ((b * a.nq + i) * a.heads + h) * d;
#pragma unroll
    for (int cc = 0; cc < CC; cc++) {
      int c = lane + cc * ATTN_WARP;
      if (c < d) orow[c] = empty ? 0.0f : o[r][cc] / l[r];
    }
    if (lane == 0) lse[(b * a.heads + h) * a.nq + i] = empty ? -INFINITY : m[r] + logf(l[r]);
  }
}

/* dq of one (b, h, query tile): dq_i += scale * sum_j p_ij (dp_ij - delta_i) k_j over the
 * allowed keys of the block. Grid and warps as attn_forward_kernel. */
template <typename T, int DMAX>
__global__ void __launch_bounds__(ATTN_ROW_WARPS *ATTN_WARP)
    attn_dq_kernel(attn_dims_t a, const T *q, const T *k, const T *v, const int64_t *q_pos,
                   const int64_t *kv_pos, const T *dout, const float *lse, const float *delta,
                   float *dq) {
  constexpr int KS = DMAX + 4, CC = DMAX / ATTN_WARP, R = ATTN_ROW_ROWS;
  extern __shared__ float4 attn_smem[];
  float *q_s = (float *)attn_smem;    /* [BQ][DMAX] */
  float *do_s = q_s + ATTN_BQ * DMAX; /* [BQ][DMAX] */
  float *k_s = do_s + ATTN_BQ * DMAX; /* [BK][KS] */
  float *v_s = k_s + ATTN_BK * KS;    /* [BK][KS] */
  const int warp = (int)threadIdx.x / ATTN_WARP, lane = (int)threadIdx.x % ATTN_WARP;
  const int64_t qt = blockIdx.x % a.q_tiles, bh = blockIdx.x / a.q_tiles;
  const int64_t h = bh % a.heads, b = bh / a.heads, hk = h / a.group;
  const int64_t i0 = qt * ATTN_BQ;
  const int q_rows = (int)attn_min64(ATTN_BQ, a.nq - i0), d = (int)a.d, d4 = (d + 3) / 4;

  const long long qmax = attn_tile_qmax(q_pos, i0, q_rows);
  if (qmax < 0) return; /* every query padded: nothing to add (block-uniform) */
  long long qp[R];
  float lse_r[R], delta_r[R], acc[R][CC];
#pragma unroll
  for (int r = 0; r < R; r++) {
    int row = warp * R + r;
    qp[r] = -1;
    lse_r[r] = -INFINITY;
    delta_r[r] = 0.0f;
    if (row < q_rows) {
      const int64_t i = i0 + row, li = (b * a.heads + h) * a.nq + i;
      qp[r] = (long long)q_pos[i];
      lse_r[r] = lse[li];
      delta_r[r] = delta[li];
    }
#pragma unroll
    for (int cc = 0; cc < CC; cc++) acc[r][cc] = 0.0f;
  }
  const int64_t qfirst = ((b * a.nq + i0) * a.heads + h) * d, qstep = a.heads * d;
  attn_stage<T, DMAX>(q_s, DMAX, ATTN_BQ, q, qfirst, qstep, q_rows, d);
  attn_stage<T, DMAX>(do_s, DMAX, ATTN_BQ, dout, qfirst, qstep, q_rows, d);

  for (int64_t j0 = 0; j0 < a.nk; j0 += ATTN_BK) {
    const int k_rows = (int)attn_min64(ATTN_BK, a.nk - j0);
    const long long kp = attn_lane_kpos(kv_pos, j0, k_rows);
    if (attn_tile_skip(qmax, attn_tile_kmin(kp), a.causal)) continue;
    __syncthreads(); /* every warp is done reading the previous K tile */
    const int64_t first = ((b * a.nk + j0) * a.kv_heads + hk) * d, step = a.kv_heads * d;
    attn_stage<T, DMAX>(k_s, KS, ATTN_BK, k, first, step, k_rows, d);
    attn_stage<T, DMAX>(v_s, KS, ATTN_BK, v, first, step, k_rows, d);
    __syncthreads();

    float s[R], dp[R];
#pragma unroll
    for (int r = 0; r < R; r++) s[r] = dp[r] = 0.0f;
    const float4 *k4 = (const float4 *)(k_s + lane * KS), *v4 = (const float4 *)(v_s + lane * KS);
    for (int c4 = 0; c4 < d4; c4++) {
      float4 kk = k4[c4], vv = v4[c4];
#pragma unroll
      for (int r = 0; r < R; r++) {
        int row = warp * R + r;
        s[r] = attn_dot4(((const float4 *)(q_s + row * DMAX))[c4], kk, s[r]);
        dp[r] = attn_dot4(((const float4 *)(do_s + row * DMAX))[c4], vv, dp[r]);
      }
    }
    float ds[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
      bool ok = attn_allowed(qp[r], kp, a.causal) && lse_r[r] != -INFINITY;
      ds[r] = ok ? expf(s[r] * a.scale - lse_r[r]) * (dp[r] - delta_r[r]) : 0.0f;
    }
    for (int j = 0; j < k_rows; j++) {
      float kv[CC];
#pragma unroll
      for (int cc = 0; cc < CC; cc++) kv[cc] = k_s[j * KS + lane + cc * ATTN_WARP];
#pragma unroll
      for (int r = 0; r < R; r++) {
        float dsj = __shfl_sync(ATTN_FULL_MASK, ds[r], j);
#pragma unroll
        for (int cc = 0; cc < CC; cc++) acc[r][cc] = fmaf(dsj, kv[cc], acc[r][cc]);
      }
    }
  }

#pragma unroll
  for (int r = 0; r < R; r++) {
    int row = warp * R + r;
    if (row >= q_rows) continue;
    float *dqrow = dq + qfirst + (int64_t)row * qstep;
#pragma unroll
    for (int cc = 0; cc < CC; cc++) {
      int c = lane + cc * ATTN_WARP;
      if (c < d) dqrow[c] += a.scale * acc[r][cc];
    }
  }
}

/* dk, dv of one (b, kv head, key tile), over every query head of the group and every query
 * tile: dv_j += sum_i p_ij dout_i, dk_j += scale * sum_i ds_ij q_i.
 * Grid: B * Hkv * k_tiles blocks (x), ATTN_KEY_WARPS warps. */
template <typename T, int DMAX>
__global__ void __launch_bounds__(ATTN_KEY_WARPS *ATTN_WARP)
    attn_dkdv_kernel(attn_dims_t a, const T *q, const T *k, const T *v, const int64_t *q_pos,
                     const int64_t *kv_pos, const T *dout, const float *lse, const float *delta,
                     float *dk, float *dv) {
  constexpr int KS = DMAX + 4, CC = DMAX / ATTN_WARP, R = ATTN_KEY_ROWS, KW = ATTN_KEY_KEYS;
  extern __shared__ float4 attn_smem[];
  float *k_s = (float *)attn_smem;       /* [BK][KS] */
  float *v_s = k_s + ATTN_BK * KS;       /* [BK][KS] */
  float *q_s = v_s + ATTN_BK * KS;       /* [BQ][DMAX] */
  float *do_s = q_s + ATTN_BQ * DMAX;    /* [BQ][DMAX] */
  float *p_s = do_s + ATTN_BQ * DMAX;    /* [BQ][BK] */
  float *ds_s = p_s + ATTN_BQ * ATTN_BK; /* [BQ][BK] */
  const int warp = (int)threadIdx.x / ATTN_WARP, lane = (int)threadIdx.x % ATTN_WARP;
  const int64_t kt = blockIdx.x % a.k_tiles, bg = blockIdx.x / a.k_tiles;
  const int64_t hk = bg % a.kv_heads, b = bg / a.kv_heads;
  const int64_t j0 = kt * ATTN_BK;
  const int k_rows = (int)attn_min64(ATTN_BK, a.nk - j0), d = (int)a.d, d4 = (d + 3) / 4;

  const long long kp = attn_lane_kpos(kv_pos, j0, k_rows); /* score step: lane = key */
  const long long kmin = attn_tile_kmin(kp);
  if (kmin == ATTN_NO_KEY) return; /* every key padded: nothing to add (block-uniform) */
  const int64_t kfirst = ((b * a.nk + j0) * a.kv_heads + hk) * d, kstep = a.kv_heads * d;
  attn_stage<T, DMAX>(k_s, KS, ATTN_BK, k, kfirst, kstep, k_rows, d);
  attn_stage<T, DMAX>(v_s, KS, ATTN_BK, v, kfirst, kstep, k_rows, d);

  float dk_acc[KW][CC], dv_acc[KW][CC]; /* keys warp * KW + jj, columns lane + 32 cc */
#pragma unroll
  for (int jj = 0; jj < KW; jj++)
#pragma unroll
    for (int cc = 0; cc < CC; cc++) dk_acc[jj][cc] = dv_acc[jj][cc] = 0.0f;
  bool touched = false; /* block-uniform: some query tile was not skipped */

  for (int64_t g = 0; g < a.group; g++) {
    const int64_t h = hk * a.group + g;
    for (int64_t qt = 0; qt < a.q_tiles; qt++) {
      const int64_t i0 = qt * ATTN_BQ;
      const int q_rows = (int)attn_min64(ATTN_BQ, a.nq - i0);
      if (attn_tile_skip(attn_tile_qmax(q_pos, i0, q_rows), kmin, a.causal)) continue;
      touched = true;
      __syncthreads(); /* every warp is done reading the previous Q, dout, p, ds tiles */
      const int64_t qfirst = ((b * a.nq + i0) * a.heads + h) * d, qstep = a.heads * d;
      attn_stage<T, DMAX>(q_s, DMAX, ATTN_BQ, q, qfirst, qstep, q_rows, d);
      attn_stage<T, DMAX>(do_s, DMAX, ATTN_BQ, dout, qfirst, qstep, q_rows, d);
      __syncthreads(); /* Q, dout (and, the first time, K, V) staged */

      /* Score step: rows warp * R + r against key lane: p and ds into shared memory. */
      float s[R], dp[R];
#pragma unroll
      for (int r = 0; r < R; r++) s[r] = dp[r] = 0.0f;
      const float4 *k4 = (const float4 *)(k_s + lane * KS);
      const float4 *v4 = (const float4 *)(v_s + lane * KS);
      for (int c4 = 0; c4 < d4; c4++) {
        float4 kk = k4[c4], vv = v4[c4];
#pragma unroll
        for (int r = 0; r < R; r++) {
          int row = warp * R + r;
          s[r] = attn_dot4(((const float4 *)(q_s + row * DMAX))[c4], kk, s[r]);
          dp[r] = attn_dot4(((const float4 *)(do_s + row * DMAX))[c4], vv, dp[r]);
        }
      }
#pragma unroll
      for (int r = 0; r < R; r++) {
        int row = warp * R + r;
        long long qp = -1;
        float lse_i = -INFINITY, delta_i = 0.0f;
        if (row < q_rows) {
          const int64_t i = i0 + row, li = (b * a.heads + h) * a.nq + i;
          qp = (long long)q_pos[i];
          lse_i = lse[li];
          delta_i = delta[li];
        }
        bool ok = attn_allowed(qp, kp, a.causal) && lse_i != -INFINITY;
        float p = ok ? expf(s[r] * a.scale - lse_i) : 0.0f;
        p_s[row * ATTN_BK + lane] = p;
        ds_s[row * ATTN_BK + lane] = ok ? p * (dp[r] - delta_i) : 0.0f;
      }
      __syncthreads(); /* p, ds complete */

      /* Accumulate step: keys warp * KW + jj, columns lane + 32 cc. */
      for (int row = 0; row < q_rows; row++) {
        float qv[CC], dov[CC];
#pragma unroll
        for (int cc = 0; cc < CC; cc++) {
          qv[cc] = q_s[row * DMAX + lane + cc * ATTN_WARP];
          dov[cc] = do_s[row * DMAX + lane + cc * ATTN_WARP];
        }
#pragma unroll
        for (int jj = 0; jj < KW; jj++) {
          float pj = p_s[row * ATTN_BK + warp * KW + jj];
          float dsj = ds_s[row * ATTN_BK + warp * KW + jj];
#pragma unroll
          for (int cc = 0; cc < CC; cc++) {
            dv_acc[jj][cc] = fmaf(pj, dov[cc], dv_acc[jj][cc]);
            dk_acc[jj][cc] = fmaf(dsj, qv[cc], dk_acc[jj][cc]);
          }
        }
      }
    }
  }
  if (!touched) return;

#pragma unroll
  for (int jj = 0; jj < KW; jj++) {
    int j = warp * KW + jj;
    if (j >= k_rows) continue;
    const int64_t off = kfirst + (int64_t)j * kstep;
#pragma unroll
    for (int cc = 0; cc < CC; cc++) {
      int c = lane + cc * ATTN_WARP;
      if (c < d) {
        dk[off + c] += a.scale * dk_acc[jj][cc];
        dv[off + c] += dv_acc[jj][cc];
      }
    }
  }
}

/* One warp per row (b, i, h) of a [B, nq, H, d] tensor, in memory order; a row's lse/delta
 * entry sits at (b * H + h) * nq + i. */
#define ATTN_ROW_LOOP(row, rows)                                                                 \
  for (int64_t row = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / ATTN_WARP; row < (rows); \
       row += (int64_t)gridDim.x * blockDim.x / ATTN_WARP)

__device__ __forceinline__ int64_t attn_lse_index(const attn_dims_t &a, int64_t row) {
  const int64_t h = row % a.heads, bi = row / a.heads;
  const int64_t i = bi % a.nq, b = bi / a.nq;
  return (b * a.heads + h) * a.nq + i;
}

/* delta[b, h, i] = sum_c dout[b, i, h, c] * out[b, i, h, c] */
template <typename T>
__global__ void attn_delta_kernel(attn_dims_t a, const float *out, const T *dout, float *delta) {
  const int lane = (int)threadIdx.x % ATTN_WARP;
  ATTN_ROW_LOOP(row, a.batch * a.nq * a.heads) {
    const int64_t base = row * a.d;
    float sum = 0.0f;
    for (int64_t c = lane; c < a.d; c += ATTN_WARP)
      sum = fmaf(weft_cuda_load(dout, base + c), out[base + c], sum);
    sum = attn_warp_sum(sum);
    if (lane == 0) delta[attn_lse_index(a, row)] = sum;
  }
}

/* (out, lse) <- merge((out, lse), (out_b, lse_b)) in place. A side with lse = -inf has no
 * allowed key and weight 0, and its out is not read, so (0, -inf) rows never make NaN. */
__global__ void attn_merge_kernel(attn_dims_t a, float *out, float *lse, const float *out_b,
                                  const float *lse_b) {
  const int lane = (int)threadIdx.x % ATTN_WARP;
  ATTN_ROW_LOOP(row, a.batch * a.nq * a.heads) {
    const int64_t li = attn_lse_index(a, row), base = row * a.d;
    const float la = lse[li], lb = lse_b[li];
    const float hi = fmaxf(la, lb), lo = fminf(la, lb);
    float l = -INFINITY, wa = 0.0f, wb = 0.0f;
    if (hi != -INFINITY) {
      l = hi + log1pf(expf(lo - hi)); /* log(exp(la) + exp(lb)) without overflow */
      if (la != -INFINITY) wa = expf(la - l);
      if (lb != -INFINITY) wb = expf(lb - l);
    }
    for (int64_t c = lane; c < a.d; c += ATTN_WARP) {
      float x = 0.0f;
      if (wa != 0.0f) x = wa * out[base + c];
      if (wb != 0.0f) x = fmaf(wb, out_b[base + c], x);
      out[base + c] = x;
    }
    __syncwarp(); /* every lane has read lse[li] before lane 0 overwrites it */
    if (lane == 0) lse[li] = l;
  }
}

/* ---- host side: launches and the four back ends ---- */

static cudaStream_t attn_stream(const weft_kernel_ctx_t *ctx) {
  return (cudaStream_t)ctx->cuda_stream;
}

/* Fills the kernel dimensions from a shape the front end has validated. `tiled` (forward,
 * backward) also rejects what the tiled kernels cannot run: head_dim > 256, a dtype other than
 * f32/bf16, a grid beyond 2^31 - 1 blocks. Merge ignores the kv fields and dtype, and merge
 * and delta take any head_dim. */
static weft_status_t attn_dims_init(const char *fn, const weft_attn_shape_t *s, bool tiled,
                                    attn_dims_t *a) {
  if (tiled && (s->head_dim < 1 || s->head_dim > ATTN_MAX_HEAD_DIM)) {
    WEFT_ERROR("kernels", "%s (CUDA): head_dim=%lld is outside the supported 1..%d", fn,
               (long long)s->head_dim, ATTN_MAX_HEAD_DIM);
    return WEFT_ERR_UNSUPPORTED;
  }
  if (tiled && s->dtype != WEFT_DTYPE_F32 && s->dtype != WEFT_DTYPE_BF16) {
    WEFT_ERROR("kernels", "%s (CUDA): dtype %s is not supported (f32 or bf16)", fn,
               weft_dtype_name(s->dtype));
    return WEFT_ERR_UNSUPPORTED;
  }
  a->batch = s->batch;
  a->heads = s->heads;
  a->kv_heads = s->kv_heads;
  a->group = s->kv_heads > 0 ? s->heads / s->kv_heads : 1;
  a->nq = s->q_len;
  a->nk = s->kv_len;
  a->q_tiles = (s->q_len + ATTN_BQ - 1) / ATTN_BQ;
  a->k_tiles = (s->kv_len + ATTN_BK - 1) / ATTN_BK;
  a->d = s->head_dim;
  a->scale = s->scale;
  a->causal = s->causal;
  if (tiled && (a->batch * a->heads * a->q_tiles > INT32_MAX ||
                a->batch * a->kv_heads * a->k_tiles > INT32_MAX)) {
    WEFT_ERROR("kernels",
               "%s (CUDA): B=%lld H=%lld Hkv=%lld nq=%lld nk=%lld needs more than 2^31-1 blocks "
               "(B*H*ceil(nq/%d), B*Hkv*ceil(nk/%d))",
               fn, (long long)a->batch, (long long)a->heads, (long long)a->kv_heads,
               (long long)a->nq, (long long)a->nk, ATTN_BQ, ATTN_BK);
    return WEFT_ERR_UNSUPPORTED;
  }
  return WEFT_OK;
}

/* Lets `kernel` use `floats` floats of dynamic shared memory (above 48 KiB needs opting in;
 * the attribute is per device, so it is set on every launch, which costs microseconds). */
template <typename K>
static weft_status_t attn_smem_opt_in(K kernel, int floats) {
  WEFT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       floats * (int)sizeof(float)));
  return WEFT_OK;
}

template <typename T, int DMAX>
static weft_status_t attn_forward_launch(weft_kernel_ctx_t *ctx, const attn_dims_t *a,
                                         weft_dtype_t dtype, const void *q, const void *k,
                                         const void *v, const int64_t *q_pos, const int64_t *kv_pos,
                                         float *out, float *lse) {
  const int floats = attn_forward_smem_floats<DMAX>();
  WEFT_CHECK(attn_smem_opt_in(attn_forward_kernel<T, DMAX>, floats));
  attn_forward_kernel<T, DMAX>
      <<<(unsigned)(a->batch * a->heads * a->q_tiles), ATTN_ROW_WARPS * ATTN_WARP,
         (size_t)floats * sizeof(float), attn_stream(ctx)>>>(*a, (const T *)q, (const T *)k,
                                                             (const T *)v, q_pos, kv_pos, out, lse);
  return weft_cuda_launch_check("attn_forward", dtype, a->nq);
}

template <typename T>
static weft_status_t attn_forward_typed(weft_kernel_ctx_t *ctx, const attn_dims_t *a,
                                        weft_dtype_t dtype, const void *q, const void *k,
                                        const void *v, const int64_t *q_pos, const int64_t *kv_pos,
                                        float *out, float *lse) {
  if (a->d <= 64)
    return attn_forward_launch<T, 64>(ctx, a, dtype, q, k, v, q_pos, kv_pos, out, lse);
  if (a->d <= 128)
    return attn_forward_launch<T, 128>(ctx, a, dtype, q, k, v, q_pos, kv_pos, out, lse);
  return attn_forward_launch<T, 256>(ctx, a, dtype, q, k, v, q_pos, kv_pos, out, lse);
}

/* The operands of a backward launch, named so the call sites read. */
typedef struct attn_bwd_args {
  const void *q, *k, *v, *dout;
  const int64_t *q_pos, *kv_pos;
  const float *lse, *delta;
  float *dq, *dk, *dv;
} attn_bwd_args_t;

template <typename T, int DMAX>
static weft_status_t attn_backward_launch(weft_kernel_ctx_t *ctx, const attn_dims_t *a,
                                          weft_dtype_t dtype, const attn_bwd_args_t *p) {
  const int dq_floats = attn_dq_smem_floats<DMAX>();
  WEFT_CHECK(attn_smem_opt_in(attn_dq_kernel<T, DMAX>, dq_floats));
  attn_dq_kernel<T, DMAX>
      <<<(unsigned)(a->batch * a->heads * a->q_tiles), ATTN_ROW_WARPS * ATTN_WARP,
         (size_t)dq_floats * sizeof(float), attn_stream(ctx)>>>(
          *a, (const T *)p->q, (const T *)p->k, (const T *)p->v, p->q_pos, p->kv_pos,
          (const T *)p->dout, p->lse, p->delta, p->dq);
  WEFT_CHECK(weft_cuda_launch_check("attn_backward_dq", dtype, a->nq));
  const int kv_floats = attn_dkdv_smem_floats<DMAX>();
  WEFT_CHECK(attn_smem_opt_in(attn_dkdv_kernel<T, DMAX>, kv_floats));
  attn_dkdv_kernel<T, DMAX>
      <<<(unsigned)(a->batch * a->kv_heads * a->k_tiles), ATTN_KEY_WARPS * ATTN_WARP,
         (size_t)kv_floats * sizeof(float), attn_stream(ctx)>>>(
          *a, (const T *)p->q, (const T *)p->k, (const T *)p->v, p->q_pos, p->kv_pos,
          (const T *)p->dout, p->lse, p->delta, p->dk, p->dv);
  return weft_cuda_launch_check("attn_backward_dkdv", dtype, a->nk);
}

template <typename T>
static weft_status_t attn_backward_typed(weft_kernel_ctx_t *ctx, const attn_dims_t *a,
                                         weft_dtype_t dtype, const attn_bwd_args_t *p) {
  if (a->d <= 64) return attn_backward_launch<T, 64>(ctx, a, dtype, p);
  if (a->d <= 128) return attn_backward_launch<T, 128>(ctx, a, dtype, p);
  return attn_backward_launch<T, 256>(ctx, a, dtype, p);
}

/* Blocks for one warp per row over `rows` rows. */
static unsigned attn_row_grid(const weft_kernel_ctx_t *ctx, int64_t rows) {
  return weft_cuda_grid(ctx, rows * ATTN_WARP);
}

extern "C" weft_status_t weft_attn_block_forward_cuda(weft_kernel_ctx_t *ctx,
                                                      const weft_attn_shape_t *shape, const void *q,
                                                      const void *k, const void *v,
                                                      const int64_t *q_pos, const int64_t *kv_pos,
                                                      float *out, float *lse) {
  attn_dims_t a;
  WEFT_CHECK(attn_dims_init("weft_attn_block_forward", shape, true, &a));
  if (a.batch * a.heads * a.nq == 0) return WEFT_OK; /* no query rows */
  /* nk = 0 runs too: every row then gets out = 0, lse = -inf, and no key is read. */
  if (shape->dtype == WEFT_DTYPE_F32)
    return attn_forward_typed<float>(ctx, &a, shape->dtype, q, k, v, q_pos, kv_pos, out, lse);
  return attn_forward_typed<uint16_t>(ctx, &a, shape->dtype, q, k, v, q_pos, kv_pos, out, lse);
}

extern "C" weft_status_t weft_attn_merge_cuda(weft_kernel_ctx_t *ctx,
                                              const weft_attn_shape_t *shape, float *out,
                                              float *lse, const float *out_b, const float *lse_b) {
  attn_dims_t a;
  WEFT_CHECK(attn_dims_init("weft_attn_merge", shape, false, &a));
  const int64_t rows = a.batch * a.nq * a.heads;
  if (rows == 0) return WEFT_OK;
  attn_merge_kernel<<<attn_row_grid(ctx, rows), WEFT_CUDA_BLOCK, 0, attn_stream(ctx)>>>(
      a, out, lse, out_b, lse_b);
  return weft_cuda_launch_check("attn_merge", WEFT_DTYPE_F32, rows);
}

extern "C" weft_status_t weft_attn_backward_delta_cuda(weft_kernel_ctx_t *ctx,
                                                       const weft_attn_shape_t *shape,
                                                       const float *out, const void *dout,
                                                       float *delta) {
  attn_dims_t a;
  WEFT_CHECK(attn_dims_init("weft_attn_backward_delta", shape, false, &a));
  const int64_t rows = a.batch * a.nq * a.heads;
  if (rows == 0) return WEFT_OK;
  if (shape->dtype == WEFT_DTYPE_F32)
    attn_delta_kernel<<<attn_row_grid(ctx, rows), WEFT_CUDA_BLOCK, 0, attn_stream(ctx)>>>(
        a, out, (const float *)dout, delta);
  else
    attn_delta_kernel<<<attn_row_grid(ctx, rows), WEFT_CUDA_BLOCK, 0, attn_stream(ctx)>>>(
        a, out, (const uint16_t *)dout, delta);
  return weft_cuda_launch_check("attn_backward_delta", shape->dtype, rows);
}

extern "C" weft_status_t weft_attn_block_backward_cuda(
    weft_kernel_ctx_t *ctx, const weft_attn_shape_t *shape, const void *q, const void *k,
    const void *v, const int64_t *q_pos, const int64_t *kv_pos, const void *dout, const float *lse,
    const float *delta, float *dq, float *dk, float *dv) {
  attn_dims_t a;
  WEFT_CHECK(attn_dims_init("weft_attn_block_backward", shape, true, &a));
  if (a.batch * a.heads * a.nq == 0 || a.nk == 0) return WEFT_OK; /* adds nothing */
  const attn_bwd_args_t p = {q, k, v, dout, q_pos, kv_pos, lse, delta, dq, dk, dv};
  if (shape->dtype == WEFT_DTYPE_F32) return attn_backward_typed<float>(ctx, &a, shape->dtype, &p);
  return attn_backward_typed<uint16_t>(ctx, &a, shape->dtype, &p);
}
