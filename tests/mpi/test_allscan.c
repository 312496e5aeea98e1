/* All-Scan (comm/include/weft/allscan.h) at any rank count.
 *
 * The combine composes affine maps whose coefficient depends on the combining rank and on
 * the element's offset in the buffer: y[e] = a(rank, e) * in[e] + x[e]. It does not commute,
 * so a result in the wrong rank order, or a combine handed the wrong offset, shows. Every
 * rank replays the whole scan serially from all ranks' inputs (generated, not exchanged)
 * and compares: |got - ref| <= 1e-6 * (1 + |ref|) (the same f32 operations in the same order;
 * the slack only allows for FMA contraction differing between the two code paths).
 *
 * Covered: forward and reverse, inclusive and exclusive (the first rank of the scan gets
 * zeros), K = auto, 1, 2, 3, 7, count and more than count (clamped), counts 0, 1, 5, 1000
 * (uneven blocks) and 4500 with K = 4500 (more blocks than the scan's internal cap), results
 * in a separate buffer and in place, host and device memory (host memory on the CPU device).
 * Bytes: one scan's weft_comm_total_bytes difference is exactly one buffer to the successor
 * and from the predecessor, none at the ends of the chain, nothing to anyone else; count 0
 * moves nothing and writes nothing. Also weft_allscan_auto_blocks' range and growth, NULL
 * operations refused on every rank, a combine failing on the last rank of a forward inclusive
 * scan (the one rank nobody waits for) returning its status there and OK elsewhere, and
 * (P >= 3) one failing on rank 1: rank 0 finishes, the later ranks time out within two
 * deadlines whatever K is (not one deadline per block), for both kinds.
 *
 * With --gpu (ctest mpi.allscan_gpu) every rank opens its CUDA device and "device" buffers
 * are GPU memory, staged by the scan; the test's combine then copies its blocks to the host
 * and back. Skipped (77) unless every rank has a GPU. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
#include "weft/allscan.h"
#include "weft/bootstrap.h"
#include "weft/check.h"
#include "weft/comm.h"
#include "weft/timer.h"

#define MAX_COUNT 4600 /* at least the largest count below (4500) */

typedef struct combine_ctx {
  int rank;
  int fail;                 /* return this status instead of combining (0 = combine) */
  const weft_device_t *gpu; /* non-NULL: the blocks are in this GPU's memory */
  float in[MAX_COUNT], x[MAX_COUNT], y[MAX_COUNT]; /* host copies of GPU blocks */
} combine_ctx_t;

static float coef(int rank, size_t e) { return 0.5f + 0.4f * sinf((float)(rank * 7) + (float)e); }

static float input(int rank, size_t e) { /* in [-1, 1], distinct per (rank, element) */
  uint64_t x = (uint64_t)rank * 0x9e3779b97f4a7c15ull + e * 0xbf58476d1ce4e5b9ull + 12345;
  x ^= x >> 31;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 29;
  return (float)((double)(x >> 11) / 9007199254740992.0) * 2.0f - 1.0f;
}

static weft_status_t affine_combine(void *user, size_t offset, size_t len, const void *incoming,
                                    const void *local, void *result) {
  combine_ctx_t *c = user;
  if (c->fail) return (weft_status_t)c->fail;
  const float *in = incoming, *x = local;
  float *y = result;
  size_t bytes = len * sizeof(float);
  if (c->gpu) {
    WEFT_CHECK(weft_device_copy(c->gpu, c->in, incoming, bytes, WEFT_COPY_DEVICE_TO_HOST));
    WEFT_CHECK(weft_device_copy(c->gpu, c->x, local, bytes, WEFT_COPY_DEVICE_TO_HOST));
    in = c->in;
    x = c->x;
    y = c->y;
  }
  for (size_t i = 0; i < len; i++) y[i] = coef(c->rank, offset + i) * in[i] + x[i];
  if (c->gpu) WEFT_CHECK(weft_device_copy(c->gpu, result, y, bytes, WEFT_COPY_HOST_TO_DEVICE));
  return WEFT_OK;
}

/* ref [count]: what `rank` must get. */
static void reference(int rank, int size, size_t count, weft_allscan_direction_t dir,
                      weft_allscan_kind_t kind, float *ref) {
  int first = dir == WEFT_ALLSCAN_FORWARD ? 0 : size - 1,
      step = dir == WEFT_ALLSCAN_FORWARD ? 1 : -1;
  int stop = kind == WEFT_ALLSCAN_INCLUSIVE ? rank + step : rank;
  for (size_t e = 0; e < count; e++) {
    float y = 0.0f;
    for (int q = first; q != stop; q += step)
      y = q == first ? input(q, e) : coef(q, e) * y + input(q, e);
    ref[e] = y;
  }
}

static void run_one(weft_comm_t *comm, size_t count, weft_allscan_direction_t dir,
                    weft_allscan_kind_t kind, size_t blocks, bool in_place, weft_mem_t mem) {
  int rank = weft_comm_rank(comm), size = weft_comm_size(comm);
  const weft_device_t *dev = weft_comm_device(comm);
  const bool device = mem == WEFT_MEM_DEVICE;
  size_t bytes = (count ? count : 1) * sizeof(float);
  float *h_local = malloc(bytes), *h_result = malloc(bytes), *ref = malloc(bytes);
  float *local = h_local, *result = h_result;
  for (size_t e = 0; e < count; e++) h_local[e] = input(rank, e);
  for (size_t e = 0; e < count; e++) h_result[e] = NAN;
  if (device) { /* on the CPU device these are host memory too, through the same calls */
    WT_CHECK_OK(weft_device_alloc(dev, bytes, (void **)&local));
    WT_CHECK_OK(weft_device_alloc(dev, bytes, (void **)&result));
    WT_CHECK_OK(weft_device_copy(dev, local, h_local, bytes, WEFT_COPY_HOST_TO_DEVICE));
    WT_CHECK_OK(weft_device_copy(dev, result, h_result, bytes, WEFT_COPY_HOST_TO_DEVICE));
  }
  float *out = in_place ? local : result, *h_out = in_place ? h_local : h_result;
  static combine_ctx_t cc;
  cc.rank = rank;
  cc.fail = 0;
  cc.gpu = device && dev->kind == WEFT_DEVICE_CUDA ? dev : NULL;
  weft_allscan_op_t op = {WEFT_DTYPE_F32, affine_combine, &cc};
  char label[128];
  snprintf(label, sizeof label, "P=%d count=%zu %s %s K=%zu %s %s", size, count,
           dir == WEFT_ALLSCAN_FORWARD ? "forward" : "reverse",
           kind == WEFT_ALLSCAN_INCLUSIVE ? "inclusive" : "exclusive", blocks,
           in_place ? "in-place" : "separate", mem == WEFT_MEM_DEVICE ? "device" : "host");
  WT_CHECK_OK(weft_allscan(comm, local, out, count, &op, dir, kind, blocks, mem));
  if (device) WT_CHECK_OK(weft_device_copy(dev, h_out, out, bytes, WEFT_COPY_DEVICE_TO_HOST));
  out = h_out;
  reference(rank, size, count, dir, kind, ref);
  size_t bad = 0;
  for (size_t e = 0; e < count; e++)
    if (!(fabsf(out[e] - ref[e]) <= 1e-6f * (1.0f + fabsf(ref[e])))) {
      if (bad++ == 0)
        WT_CHECK(false, "%s: rank %d element %zu got %.9g, want %.9g", label, rank, e,
                 (double)out[e], (double)ref[e]);
    }
  WT_CHECK(bad == 0, "%s: %zu wrong element(s) on rank %d", label, bad, rank);
  if (device) {
    weft_device_free(dev, local);
    weft_device_free(dev, result);
  }
  free(h_local);
  free(h_result);
  free(ref);
}

static void check_bytes(weft_comm_t *comm, weft_allscan_direction_t dir) {
  int rank = weft_comm_rank(comm), size = weft_comm_size(comm);
  size_t count = 1000;
  weft_comm_peer_bytes_t *before = calloc((size_t)size, sizeof *before);
  memcpy(before, weft_comm_total_bytes(comm), (size_t)size * sizeof *before);
  run_one(comm, count, dir, WEFT_ALLSCAN_EXCLUSIVE, 7, false, WEFT_MEM_HOST);
  const weft_comm_peer_bytes_t *after = weft_comm_total_bytes(comm);
  int step = dir == WEFT_ALLSCAN_FORWARD ? 1 : -1, pred = rank - step, succ = rank + step;
  for (int p = 0; p < size; p++) {
    uint64_t sent = after[p].sent - before[p].sent, recv = after[p].recv - before[p].recv;
    uint64_t want_sent = p == succ ? count * 4 : 0, want_recv = p == pred ? count * 4 : 0;
    WT_CHECK(sent == want_sent && recv == want_recv,
             "bytes (%s): rank %d to/from peer %d sent %llu recv %llu, want %llu / %llu",
             dir == WEFT_ALLSCAN_FORWARD ? "forward" : "reverse", rank, p, (unsigned long long)sent,
             (unsigned long long)recv, (unsigned long long)want_sent,
             (unsigned long long)want_recv);
  }
  free(before);
}

/* count 0: succeeds, writes nothing, moves no bytes (every kind and direction). */
static void check_empty(weft_comm_t *comm) {
  int size = weft_comm_size(comm);
  static combine_ctx_t cc;
  weft_allscan_op_t op = {WEFT_DTYPE_F32, affine_combine, &cc};
  weft_comm_peer_bytes_t *before = calloc((size_t)size, sizeof *before);
  memcpy(before, weft_comm_total_bytes(comm), (size_t)size * sizeof *before);
  float x = 1.0f, y = 2.0f;
  for (int d = 0; d < 2; d++)
    for (int k = 0; k < 2; k++)
      WT_CHECK_OK(weft_allscan(comm, &x, &y, 0, &op, (weft_allscan_direction_t)d,
                               (weft_allscan_kind_t)k, 3, WEFT_MEM_HOST));
  WT_CHECK(x == 1.0f && y == 2.0f, "count 0 wrote to the buffers: local %g result %g", (double)x,
           (double)y);
  const weft_comm_peer_bytes_t *after = weft_comm_total_bytes(comm);
  for (int p = 0; p < size; p++)
    WT_CHECK(after[p].sent == before[p].sent && after[p].recv == before[p].recv,
             "count 0 moved bytes to/from peer %d", p);
  free(before);
}

static void check_auto_blocks(void) {
  /* Always in [1, count], over a sweep of sizes, rank counts and link models. */
  for (size_t count = 1; count <= (1u << 24); count *= 7)
    for (int ranks = 1; ranks <= 64; ranks *= 2)
      for (double alpha = 1e-7; alpha < 1e-3; alpha *= 10) {
        size_t k = weft_allscan_auto_blocks(count * 4, count, ranks, alpha, 1e10);
        WT_CHECK(k >= 1 && k <= count, "auto K = %zu for count %zu, P = %d, alpha %g", k, count,
                 ranks, alpha);
      }

  WT_CHECK(weft_allscan_auto_blocks(1 << 20, 1 << 18, 1, 5e-6, 1e10) == 1, "P = 1 gives K = 1");
  WT_CHECK(weft_allscan_auto_blocks(64, 16, 4, 5e-6, 1e10) == 1, "a tiny buffer gives K = 1");
  size_t k1 = weft_allscan_auto_blocks(1 << 20, 1 << 18, 4, 5e-6, 1e10);
  size_t k16 = weft_allscan_auto_blocks(16 << 20, 4 << 20, 4, 5e-6, 1e10);
  WT_CHECK(k1 > 1 && k16 > k1, "K grows with the buffer: 1 MiB -> %zu, 16 MiB -> %zu", k1, k16);
  WT_CHECK(weft_allscan_auto_blocks(1 << 30, 3, 8, 5e-6, 1e10) == 3, "K is clamped to count");
  WT_CHECK(weft_allscan_auto_blocks(0, 0, 4, 5e-6, 1e10) == 1, "count 0 gives K = 1");
}

static void check_errors(weft_comm_t *comm) {
  int rank = weft_comm_rank(comm), size = weft_comm_size(comm);
  float x[8] = {0}, y[8];
  WT_CHECK_STATUS(weft_allscan(comm, x, y, 8, NULL, WEFT_ALLSCAN_FORWARD, WEFT_ALLSCAN_INCLUSIVE, 0,
                               WEFT_MEM_HOST),
                  WEFT_ERR_INVALID_ARG);
  weft_allscan_op_t no_fn = {WEFT_DTYPE_F32, NULL, NULL};
  WT_CHECK_STATUS(weft_allscan(comm, x, y, 8, &no_fn, WEFT_ALLSCAN_FORWARD, WEFT_ALLSCAN_INCLUSIVE,
                               0, WEFT_MEM_HOST),
                  WEFT_ERR_INVALID_ARG);
  /* The last rank of a forward inclusive scan combines but sends nothing: its failure must
   * come back to it and leave the others unaffected. */
  static combine_ctx_t cc;
  cc.rank = rank;
  cc.fail = rank == size - 1 && size > 1 ? (int)WEFT_ERR_DEVICE : 0;
  cc.gpu = NULL;
  weft_allscan_op_t op = {WEFT_DTYPE_F32, affine_combine, &cc};
  weft_status_t st = weft_allscan(comm, x, y, 8, &op, WEFT_ALLSCAN_FORWARD, WEFT_ALLSCAN_INCLUSIVE,
                                  2, WEFT_MEM_HOST);
  WT_CHECK(st == (cc.fail ? WEFT_ERR_DEVICE : WEFT_OK), "failing combine: rank %d got %s", rank,
           weft_status_str(st));

  /* A middle rank's combine fails (P >= 3): it drains what its predecessor sends, so rank 0
   * finishes; its successors time out (short deadline here) instead of hanging, and the
   * communicator stays usable because no block is left unmatched. A later rank may spend one
   * deadline on the block it waits for and one settling the rest (allscan.c), never one per
   * block: with K = 8 that would be 8 s, a hang at the default deadline and a large K. */
  if (size < 3) return;
  const double saved = weft_comm_timeout(comm), deadline_s = 1.0, slack_s = 1.5;
  cc.fail = rank == 1 ? (int)WEFT_ERR_DEVICE : 0;
  for (int k = 0; k < 2; k++) {
    const char *kind = k == WEFT_ALLSCAN_INCLUSIVE ? "inclusive" : "exclusive";
    float big[512] = {0}, out[512];
    weft_comm_set_timeout(comm, deadline_s);
    double t0 = weft_time_now();
    st = weft_allscan(comm, big, out, 512, &op, WEFT_ALLSCAN_FORWARD, (weft_allscan_kind_t)k, 8,
                      WEFT_MEM_HOST);
    double elapsed = weft_time_now() - t0;
    weft_status_t want = rank == 0 ? WEFT_OK : rank == 1 ? WEFT_ERR_DEVICE : WEFT_ERR_TIMEOUT;
    WT_CHECK(st == want, "rank 1 failing (%s): rank %d got %s, want %s", kind, rank,
             weft_status_str(st), weft_status_str(want));
    WT_CHECK(elapsed <= 2 * deadline_s + slack_s,
             "rank 1 failing (%s): rank %d returned after %.1f s, over two %.1f s deadlines", kind,
             rank, elapsed, deadline_s);
    weft_comm_set_timeout(comm, saved);
    WT_CHECK_OK(weft_comm_barrier(comm));
  }
}

int main(int argc, char **argv) {
  const bool gpu = argc > 1 && strcmp(argv[1], "--gpu") == 0;
  weft_bootstrap_t boot;
  if (weft_comm_bootstrap(&argc, &argv, gpu ? WEFT_DEVICE_REQUEST_AUTO : WEFT_DEVICE_REQUEST_CPU,
                          &boot) != WEFT_OK)
    weft_comm_abort(1);
  weft_test_set_rank(boot.world_rank);
  weft_comm_t *world = NULL;
  if (weft_comm_create_world(&boot, &world) != WEFT_OK) weft_comm_abort(1);
  weft_comm_set_timeout(world, 60.0);
  if (gpu) {
    int32_t on_gpu = boot.device->kind == WEFT_DEVICE_CUDA, all = 0;
    WT_CHECK_OK(weft_comm_allreduce(world, &on_gpu, &all, 1, WEFT_DTYPE_I32, WEFT_REDUCE_MIN,
                                    WEFT_MEM_HOST));
    if (!all) {
      if (boot.world_rank == 0) printf("test_allscan --gpu: skipped (not every rank has a GPU)\n");
      weft_comm_destroy(world);
      weft_comm_finalize(&boot);
      return WEFT_TEST_SKIP;
    }
  }

  static const size_t counts[] = {0, 1, 5, 1000};
  static const weft_allscan_direction_t dirs[] = {WEFT_ALLSCAN_FORWARD, WEFT_ALLSCAN_REVERSE};
  static const weft_allscan_kind_t kinds[] = {WEFT_ALLSCAN_INCLUSIVE, WEFT_ALLSCAN_EXCLUSIVE};
  for (size_t c = 0; c < 4; c++) {
    size_t n = counts[c];
    const size_t blocks[] = {0, 1, 2, 3, 7, n, n + 5};
    for (size_t d = 0; d < 2; d++)
      for (size_t k = 0; k < 2; k++)
        for (size_t b = 0; b < sizeof blocks / sizeof blocks[0]; b++)
          for (int in_place = 0; in_place < 2; in_place++)
            for (int mem = 0; mem < 2; mem++)
              run_one(world, n, dirs[d], kinds[k], blocks[b], in_place,
                      mem ? WEFT_MEM_DEVICE : WEFT_MEM_HOST);
  }
  /* K = count above the scan's internal cap on blocks (4096): still exact. */
  for (size_t d = 0; d < 2; d++)
    for (int mem = 0; mem < 2; mem++)
      run_one(world, 4500, dirs[d], WEFT_ALLSCAN_EXCLUSIVE, 4500, true,
              mem ? WEFT_MEM_DEVICE : WEFT_MEM_HOST);
  check_empty(world);
  check_bytes(world, WEFT_ALLSCAN_FORWARD);
  check_bytes(world, WEFT_ALLSCAN_REVERSE);
  check_auto_blocks();
  check_errors(world);

  weft_comm_destroy(world);
  int rc = weft_test_exit_code("test_allscan");
  weft_comm_finalize(&boot);
  return rc;
}
