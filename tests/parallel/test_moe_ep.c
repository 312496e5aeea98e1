/* Expert-parallel MoE (parallel/moe_ep.h) against a single-rank run of the same inputs.
 *
 * Every rank builds the same global inputs from a hash of (tensor, index): T tokens, the
 * router [h, E] and all E experts. The reference is the same layer on a one-rank communicator
 * over all T tokens with all E experts local (no exchange at all), itself checked here against
 * a plain double-precision forward (y, counts, LBL) and by tests/ref/check_moe.py against
 * PyTorch autograd. The distributed run splits the tokens contiguously (T not divisible by P;
 * some ranks may get none) and the experts in blocks of E/P, and is compared per rank:
 * y and dx on the rank's tokens, the rank's experts' dw1, dw3, dw2, the router gradient summed
 * over the ranks, the counts exactly and the LBL and z-loss summed over the ranks.
 *
 * Tolerance, the same for every P: |got - ref| <= 1e-5 * max|ref over the tensor| + 1e-4 |ref|.
 * Both sides compute in f32 and differ only in summation order (a token's expert outputs are
 * summed per rank first; a weight gradient sums its rows in another grouping).
 *
 * Bytes: the token payload each rank sends (from the communicator's counters) must equal the
 * de-duplicated minimum the routing computes, forward and backward; the counts all-gather
 * costs exactly 8 E (P-1) bytes. Cases cover k = 1, 2, 3, normalize on and off, dropless and
 * capacity, skewed routing where only rank 0's experts are chosen (the others receive
 * nothing), ranks without tokens, the LBL and z-loss gradients, and plan reuse (bitwise). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
#include "weft/bootstrap.h"
#include "weft/comm.h"
#include "weft/kernel_ctx.h"
#include "weft/moe_ep.h"
#include "weft/status.h"

typedef struct test_case {
  int64_t T, h, f, E;
  int k;
  bool normalize;
  double cf, aux, z;
  bool skew; /* route everything to experts 0 and 1 */
} test_case_t;

enum { T_X, T_WR, T_W1, T_W3, T_W2, T_DY, T_COUNT };

static float value(uint32_t tensor, uint64_t index) { /* in [-1, 1) */
  uint64_t x = index * 0x9E3779B97F4A7C15ull + (uint64_t)tensor * 0xBF58476D1CE4E5B9ull + 7;
  x ^= x >> 31;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 29;
  return (float)((double)(x >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static float *alloc_f(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

typedef struct inputs {
  float *t[T_COUNT];
} inputs_t;

static size_t tensor_count(const test_case_t *c, int t) {
  switch (t) {
  case T_X:
  case T_DY: return (size_t)(c->T * c->h);
  case T_WR: return (size_t)(c->h * c->E);
  default: return (size_t)(c->E * c->h * c->f);
  }
}

static void make_inputs(const test_case_t *c, inputs_t *in) {
  for (int t = 0; t < T_COUNT; t++) {
    size_t n = tensor_count(c, t);
    in->t[t] = alloc_f(n);
    float scale = t == T_X || t == T_DY ? 1.0f : 0.5f;
    for (size_t i = 0; i < n; i++) in->t[t][i] = scale * value((uint32_t)t, i);
  }
  if (c->skew) { /* x[:,0] = 1 and a router row that strongly prefers experts 0 and 1 */
    for (int64_t t = 0; t < c->T; t++) in->t[T_X][t * c->h] = 1.0f;
    for (int64_t e = 0; e < c->E; e++) in->t[T_WR][e] = e < 2 ? 40.0f - (float)e : -40.0f;
  }
}

/* Plain double forward of one token: y (into out[h]) and the chosen experts (into ids).
 * Dropless only (the capacity rule is checked through the single-rank plan). */
static void naive_token(const test_case_t *c, const inputs_t *in, int64_t t, double *out, int *ids,
                        double *probs) {
  const int64_t h = c->h, f = c->f, E = c->E;
  const float *x = in->t[T_X] + t * h;
  double mx = -INFINITY, sum = 0;
  double *logit = malloc((size_t)E * sizeof(double));
  for (int64_t e = 0; e < E; e++) {
    double l = 0;
    for (int64_t i = 0; i < h; i++) l += (double)x[i] * in->t[T_WR][i * E + e];
    logit[e] = l;
    mx = l > mx ? l : mx;
  }
  for (int64_t e = 0; e < E; e++) sum += exp(logit[e] - mx);
  for (int64_t e = 0; e < E; e++) probs[e] = exp(logit[e] - mx) / sum;
  double wsum = 0, w[8];
  for (int j = 0; j < c->k; j++) {
    int best = -1;
    for (int64_t e = 0; e < E; e++) {
      bool taken = false;
      for (int i = 0; i < j; i++) taken = taken || ids[i] == e;
      if (!taken && (best < 0 || logit[e] > logit[best])) best = (int)e;
    }
    ids[j] = best;
    w[j] = probs[best];
    wsum += w[j];
  }
  for (int64_t i = 0; i < h; i++) out[i] = 0;
  double *act = malloc((size_t)f * sizeof(double));
  for (int j = 0; j < c->k; j++) {
    double wj = c->normalize ? w[j] / wsum : w[j];
    const float *w1 = in->t[T_W1] + (size_t)ids[j] * h * f,
                *w3 = in->t[T_W3] + (size_t)ids[j] * h * f;
    const float *w2 = in->t[T_W2] + (size_t)ids[j] * f * h;
    for (int64_t q = 0; q < f; q++) {
      double a = 0, b = 0;
      for (int64_t i = 0; i < h; i++) {
        a += (double)x[i] * w1[i * f + q];
        b += (double)x[i] * w3[i * f + q];
      }
      act[q] = a / (1 + exp(-a)) * b;
    }
    for (int64_t i = 0; i < h; i++) {
      double s = 0;
      for (int64_t q = 0; q < f; q++) s += act[q] * w2[q * h + i];
      out[i] += wj * s;
    }
  }
  free(act);
  free(logit);
}

static double max_abs(const float *x, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++) m = fabs(x[i]) > m ? fabs(x[i]) : m;
  return m;
}

/* got vs ref with the file's tolerance; reports the worst element. */
static void compare(const char *what, const test_case_t *c, const float *got, const float *ref,
                    size_t n) {
  double atol = 1e-5 * max_abs(ref, n), worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < n; i++) {
    double e = fabs((double)got[i] - ref[i]) / (atol + 1e-4 * fabs(ref[i]) + 1e-30);
    if (!(e <= worst)) {
      worst = e;
      at = i;
    }
  }
  WT_CHECK(worst <= 1.0,
           "%s (T=%lld E=%lld k=%d norm=%d cf=%g skew=%d): element %zu got %.9g ref %.9g "
           "(%.2fx the tolerance)",
           what, (long long)c->T, (long long)c->E, c->k, c->normalize, c->cf, c->skew, at,
           (double)got[at], (double)ref[at], worst);
}

typedef struct result {
  float *y, *dx, *dwr, *dw1, *dw3, *dw2;
  int64_t *counts;
  double aux, z;
  int64_t dropped;
} result_t;

static void result_free(result_t *r) {
  free(r->y);
  free(r->dx);
  free(r->dwr);
  free(r->dw1);
  free(r->dw3);
  free(r->dw2);
  free(r->counts);
}

/* Runs the layer on `comm` for tokens [t0, t0 + n) with the plan's local experts. */
static void run(weft_comm_t *comm, weft_comm_t *replicas, weft_kernel_ctx_t *ctx,
                const test_case_t *c, const inputs_t *in, int64_t t0, int64_t n, result_t *res,
                weft_moe_stats_t *stats_p) {
  weft_moe_config_t cfg = {c->h, c->f, c->E, c->k, c->normalize, c->cf, c->aux, c->z};
  weft_moe_plan_t *plan = NULL;
  WT_CHECK_OK(weft_moe_plan_create(comm, replicas, ctx, &cfg, &plan));
  if (!plan) return;
  const int64_t El = weft_moe_plan_local_experts(plan), e0 = weft_moe_plan_first_expert(plan);
  const size_t hf = (size_t)(c->h * c->f);
  weft_moe_weights_t w = {in->t[T_WR], in->t[T_W1] + e0 * hf, in->t[T_W3] + e0 * hf,
                          in->t[T_W2] + e0 * hf};
  const float *x = in->t[T_X] + t0 * c->h, *dy = in->t[T_DY] + t0 * c->h;
  res->y = alloc_f((size_t)(n * c->h));
  res->dx = alloc_f((size_t)(n * c->h));
  res->dwr = alloc_f((size_t)(c->h * c->E));
  res->dw1 = alloc_f((size_t)El * hf);
  res->dw3 = alloc_f((size_t)El * hf);
  res->dw2 = alloc_f((size_t)El * hf);
  res->counts = calloc((size_t)c->E, sizeof(int64_t));
  weft_moe_grads_t g = {res->dwr, res->dw1, res->dw3, res->dw2};
  WT_CHECK_OK(weft_moe_forward(plan, n, x, &w, res->y));
  WT_CHECK_OK(weft_moe_backward(plan, x, &w, dy, res->dx, &g));
  const weft_moe_stats_t *st = weft_moe_plan_stats(plan);
  memcpy(res->counts, st->counts, (size_t)c->E * sizeof(int64_t));
  res->aux = st->aux_loss_partial;
  res->z = st->z_loss_partial;
  res->dropped = st->dropped;
  *stats_p = *st;

  /* Reuse: a second pass gives the same y and dx bitwise (gradients accumulate). */
  float *y2 = alloc_f((size_t)(n * c->h)), *dx2 = alloc_f((size_t)(n * c->h));
  float *scratch[4] = {alloc_f((size_t)(c->h * c->E)), alloc_f((size_t)El * hf),
                       alloc_f((size_t)El * hf), alloc_f((size_t)El * hf)};
  weft_moe_grads_t g2 = {scratch[0], scratch[1], scratch[2], scratch[3]};
  WT_CHECK_OK(weft_moe_forward(plan, n, x, &w, y2));
  WT_CHECK_OK(weft_moe_backward(plan, x, &w, dy, dx2, &g2));
  WT_CHECK(memcmp(y2, res->y, (size_t)(n * c->h) * sizeof(float)) == 0, "plan reuse: y differs");
  WT_CHECK(memcmp(dx2, res->dx, (size_t)(n * c->h) * sizeof(float)) == 0, "plan reuse: dx differs");
  WT_CHECK(memcmp(scratch[1], res->dw1, (size_t)El * hf * sizeof(float)) == 0,
           "plan reuse: dw1 differs");
  for (int i = 0; i < 4; i++) free(scratch[i]);
  free(y2);
  free(dx2);
  weft_moe_plan_destroy(plan);
}

/* The single-rank plan against the plain double forward (dropless cases only). */
static void check_reference(const test_case_t *c, const inputs_t *in, const result_t *ref) {
  if (c->cf > 0) return;
  float *naive = alloc_f((size_t)(c->T * c->h));
  int64_t *counts = calloc((size_t)c->E, sizeof(int64_t));
  double *probs = malloc((size_t)c->E * sizeof(double)),
         *psum = calloc((size_t)c->E, sizeof(double));
  double *out = malloc((size_t)c->h * sizeof(double));
  for (int64_t t = 0; t < c->T; t++) {
    int ids[8];
    naive_token(c, in, t, out, ids, probs);
    for (int64_t i = 0; i < c->h; i++) naive[t * c->h + i] = (float)out[i];
    for (int j = 0; j < c->k; j++) counts[ids[j]]++;
    for (int64_t e = 0; e < c->E; e++) psum[e] += probs[e];
  }
  double lbl = 0;
  for (int64_t e = 0; e < c->E; e++)
    lbl += (double)c->E * ((double)counts[e] / (double)(c->k * c->T)) * psum[e] / (double)c->T;
  compare("single-rank y vs double reference", c, ref->y, naive, (size_t)(c->T * c->h));
  for (int64_t e = 0; e < c->E; e++)
    WT_CHECK(counts[e] == ref->counts[e], "counts[%lld]: plan %lld, double reference %lld",
             (long long)e, (long long)ref->counts[e], (long long)counts[e]);
  WT_CHECK(fabs(ref->aux - lbl) <= 1e-5 * fabs(lbl), "LBL: plan %.9g, double reference %.9g",
           ref->aux, lbl);
  free(naive);
  free(counts);
  free(probs);
  free(psum);
  free(out);
}

/* The de-duplicated payload of one pass for rank r, from the plain double routing (dropless):
 * h * 4 bytes per (own token, distinct remote rank owning one of its experts) and per
 * (remote token, rank r) pair. */
static uint64_t expected_payload(const test_case_t *c, const inputs_t *in, int P, int r) {
  const int64_t base = c->T / P, extra = c->T % P, El = c->E / P;
  double *out = malloc((size_t)c->h * sizeof(double)),
         *probs = malloc((size_t)c->E * sizeof(double));
  uint64_t pairs = 0;
  for (int64_t t = 0; t < c->T; t++) {
    int owner = 0;
    while ((owner + 1) * base + (owner + 1 < extra ? owner + 1 : extra) <= t) owner++;
    int ids[8];
    naive_token(c, in, t, out, ids, probs);
    bool seen[64] = {false};
    for (int j = 0; j < c->k; j++) {
      int dest = (int)(ids[j] / El);
      if (seen[dest] || dest == owner) continue;
      seen[dest] = true;
      pairs += owner == r || dest == r;
    }
  }
  free(out);
  free(probs);
  return pairs * (uint64_t)c->h * sizeof(float);
}

/* P = 4 as two ep groups of 2 ({0,1}, {2,3}) that replicate the experts: the counts are summed
 * over the replicas ({0,2}, {1,3}), so every result must still equal the single-rank run;
 * an expert's gradient is the sum of its two replicas'. Dropless only (capacity is per ep
 * group, so it differs from one group holding every token by design). */
static void run_replicas(weft_comm_t *world, weft_kernel_ctx_t *ctx, const test_case_t *c,
                         const inputs_t *in, const result_t *ref) {
  const int r = weft_comm_rank(world);
  weft_comm_t *ep = NULL, *rep = NULL;
  WT_CHECK_OK(weft_comm_split(world, r / 2, r, "ep", &ep));
  WT_CHECK_OK(weft_comm_split(world, r % 2, r, "replicas", &rep));
  const int64_t base = c->T / 4, extra = c->T % 4;
  const int64_t t0 = r * base + (r < extra ? r : extra), n = base + (r < extra ? 1 : 0);
  result_t got = {0};
  weft_moe_stats_t st;
  run(ep, rep, ctx, c, in, t0, n, &got, &st);
  const size_t hf = (size_t)(c->h * c->f), El = (size_t)(c->E / 2), e0 = (size_t)(r % 2) * El;
  compare("replicas: y", c, got.y, ref->y + t0 * c->h, (size_t)(n * c->h));
  compare("replicas: dx", c, got.dx, ref->dx + t0 * c->h, (size_t)(n * c->h));
  float *grads[3] = {got.dw1, got.dw3, got.dw2}, *refs[3] = {ref->dw1, ref->dw3, ref->dw2};
  for (int i = 0; i < 3; i++) {
    WT_CHECK_OK(weft_comm_allreduce(rep, grads[i], grads[i], El * hf, WEFT_DTYPE_F32,
                                    WEFT_REDUCE_SUM, WEFT_MEM_HOST));
    compare("replicas: expert gradient", c, grads[i], refs[i] + e0 * hf, El * hf);
  }
  for (int64_t e = 0; e < c->E; e++)
    WT_CHECK(got.counts[e] == ref->counts[e], "replicas: counts[%lld] = %lld, single rank %lld",
             (long long)e, (long long)got.counts[e], (long long)ref->counts[e]);
  double mine = got.aux, all[4];
  WT_CHECK_OK(weft_comm_allgather(world, &mine, all, 1, WEFT_DTYPE_I64, WEFT_MEM_HOST));
  double aux = all[0] + all[1] + all[2] + all[3];
  WT_CHECK(fabs(aux - ref->aux) <= 1e-6 * fabs(ref->aux), "replicas: LBL %.9g, single rank %.9g",
           aux, ref->aux);
  result_free(&got);
  weft_comm_destroy(rep);
  weft_comm_destroy(ep);
}

static void run_case(weft_comm_t *world, weft_comm_t *self, weft_kernel_ctx_t *ctx,
                     const test_case_t *c) {
  const int P = weft_comm_size(world), r = weft_comm_rank(world);
  inputs_t in = {0};
  make_inputs(c, &in);
  result_t ref = {0}, got = {0};
  weft_moe_stats_t ref_stats, st;
  run(self, NULL, ctx, c, &in, 0, c->T, &ref, &ref_stats);
  check_reference(c, &in, &ref);

  const int64_t base = c->T / P, extra = c->T % P;
  const int64_t t0 = r * base + (r < extra ? r : extra), n = base + (r < extra ? 1 : 0);
  run(world, NULL, ctx, c, &in, t0, n, &got, &st);
  const size_t hf = (size_t)(c->h * c->f), El = (size_t)(c->E / P);
  compare("y", c, got.y, ref.y + t0 * c->h, (size_t)(n * c->h));
  compare("dx", c, got.dx, ref.dx + t0 * c->h, (size_t)(n * c->h));
  compare("dw1", c, got.dw1, ref.dw1 + (size_t)r * El * hf, El * hf);
  compare("dw3", c, got.dw3, ref.dw3 + (size_t)r * El * hf, El * hf);
  compare("dw2", c, got.dw2, ref.dw2 + (size_t)r * El * hf, El * hf);
  WT_CHECK_OK(weft_comm_allreduce(world, got.dwr, got.dwr, (size_t)(c->h * c->E), WEFT_DTYPE_F32,
                                  WEFT_REDUCE_SUM, WEFT_MEM_HOST));
  compare("dw_router (summed over ranks)", c, got.dwr, ref.dwr, (size_t)(c->h * c->E));
  for (int64_t e = 0; e < c->E; e++)
    WT_CHECK(got.counts[e] == ref.counts[e], "counts[%lld] = %lld, single rank %lld", (long long)e,
             (long long)got.counts[e], (long long)ref.counts[e]);
  /* The losses' shares, summed over the ranks in double (all-gathered as 8-byte words). */
  double aux_all = 0, z_all = 0, dropped_all = 0;
  double mine[3] = {got.aux, got.z, (double)got.dropped};
  double *all = malloc((size_t)P * sizeof mine);
  WT_CHECK_OK(weft_comm_allgather(world, mine, all, 3, WEFT_DTYPE_I64, WEFT_MEM_HOST));
  for (int p = 0; p < P; p++) {
    aux_all += all[3 * p];
    z_all += all[3 * p + 1];
    dropped_all += all[3 * p + 2];
  }
  free(all);
  WT_CHECK(fabs(aux_all - ref.aux) <= 1e-6 * fabs(ref.aux), "LBL %.9g, single rank %.9g", aux_all,
           ref.aux);
  WT_CHECK(fabs(z_all - ref.z) <= 1e-6 * fabs(ref.z), "z-loss %.9g, single rank %.9g", z_all,
           ref.z);
  WT_CHECK(dropped_all == (double)ref.dropped, "dropped %g, single rank %lld", dropped_all,
           (long long)ref.dropped);
  WT_CHECK(c->cf > 0 || ref.dropped == 0, "dropless run dropped %lld slots",
           (long long)ref.dropped);

  /* Bytes: payload = de-duplicated minimum, both passes; counts = 8 E (P - 1). */
  WT_CHECK(st.fwd.payload == st.fwd.minimum && st.bwd.payload == st.bwd.minimum,
           "payload bytes fwd %llu bwd %llu, de-duplicated minimum %llu",
           (unsigned long long)st.fwd.payload, (unsigned long long)st.bwd.payload,
           (unsigned long long)st.fwd.minimum);
  if (c->cf == 0) {
    uint64_t want = expected_payload(c, &in, P, r);
    WT_CHECK(st.fwd.minimum == want, "de-duplicated minimum %llu, plain routing gives %llu",
             (unsigned long long)st.fwd.minimum, (unsigned long long)want);
  }
  if (P == 4 && c->cf == 0 && c->E % 2 == 0) run_replicas(world, ctx, c, &in, &ref);
  WT_CHECK(st.fwd.meta >= (uint64_t)(8 * c->E * (P - 1)), "forward metadata %llu < counts %lld",
           (unsigned long long)st.fwd.meta, (long long)(8 * c->E * (P - 1)));
  if (c->skew && P > 1 && c->E / P >= 2)
    WT_CHECK(r == 0 || st.rows_received == 0, "skewed routing: rank %d received %lld rows", r,
             (long long)st.rows_received);
  (void)ref_stats;
  result_free(&ref);
  result_free(&got);
  for (int t = 0; t < T_COUNT; t++) free(in.t[t]);
}

/* Bad configurations fail on every rank with WEFT_ERR_INVALID_ARG, none left hanging. */
static void check_invalid(weft_comm_t *world, weft_kernel_ctx_t *ctx) {
  const int P = weft_comm_size(world), r = weft_comm_rank(world);
  weft_moe_plan_t *plan = NULL;
  weft_moe_config_t ok = {8, 8, 4 * P, 2, true, 0, 0, 0};
  weft_moe_config_t c = ok;
  if (P > 1) {
    c.experts = 4 * P + 1; /* not divisible by the ep size */
    WT_CHECK_STATUS(weft_moe_plan_create(world, NULL, ctx, &c, &plan), WEFT_ERR_INVALID_ARG);
  }
  c = ok;
  c.topk = 0;
  WT_CHECK_STATUS(weft_moe_plan_create(world, NULL, ctx, &c, &plan), WEFT_ERR_INVALID_ARG);
  c = ok;
  c.capacity_factor = -1;
  WT_CHECK_STATUS(weft_moe_plan_create(world, NULL, ctx, &c, &plan), WEFT_ERR_INVALID_ARG);
  c = ok;
  if (r == P - 1) c.topk = 3; /* one rank disagrees: everybody fails */
  WT_CHECK_STATUS(weft_moe_plan_create(world, NULL, ctx, &c, &plan),
                  P > 1 ? WEFT_ERR_INVALID_ARG : WEFT_OK);
  weft_moe_plan_destroy(plan);
  plan = NULL;
  c = ok;
  WT_CHECK_OK(weft_moe_plan_create(world, NULL, ctx, &c, &plan));
  float dummy[8] = {0};
  weft_moe_weights_t w = {dummy, dummy, dummy, dummy};
  weft_moe_grads_t g = {dummy, dummy, dummy, dummy};
  WT_CHECK_STATUS(weft_moe_backward(plan, dummy, &w, dummy, dummy, &g), WEFT_ERR_INVALID_ARG);
  weft_moe_plan_destroy(plan);
}

int main(int argc, char **argv) {
  weft_bootstrap_t boot;
  if (weft_comm_bootstrap(&argc, &argv, WEFT_DEVICE_REQUEST_CPU, &boot) != WEFT_OK)
    weft_comm_abort(1);
  weft_test_set_rank(boot.world_rank);
  weft_comm_t *world = NULL, *self = NULL;
  if (weft_comm_create_world(&boot, &world) != WEFT_OK) weft_comm_abort(1);
  weft_comm_set_timeout(world, 60.0);
  if (weft_comm_split(world, boot.world_rank, 0, "self", &self) != WEFT_OK) weft_comm_abort(1);
  weft_kernel_ctx_t *ctx = NULL;
  if (weft_kernel_ctx_create(boot.device, NULL, &ctx) != WEFT_OK) weft_comm_abort(1);

  const int P = weft_comm_size(world);
  const int64_t E = P == 3 ? 6 : 8; /* the E = 8 at P = 1, 2, 4 and E = 6 at P = 3 */
  /*  T   h   f   E   k  norm   cf   aux   z    skew */
  const test_case_t cases[] = {
      {37, 16, 24, E, 2, true, 0, 0, 0, false},        {37, 16, 24, E, 1, false, 0, 0.1, 0, false},
      {40, 16, 24, E, 2, false, 0, 0.05, 0.01, false}, {29, 8, 12, E, 3, true, 0, 0.1, 0.02, false},
      {37, 16, 24, E, 2, true, 1.0, 0.1, 0, false},    {50, 8, 16, E, 1, false, 0.75, 0, 0, false},
      {23, 16, 8, E, 2, true, 0, 0.1, 0, true},        {23, 16, 8, E, 2, false, 1.25, 0, 0, true},
      {3, 8, 8, E, 2, true, 0, 0.1, 0.01, false},      {60, 32, 48, 12, 2, true, 0, 0.01, 0, false},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    if (cases[i].E % P == 0) run_case(world, self, ctx, &cases[i]);
  }
  check_invalid(world, ctx);

  weft_kernel_ctx_destroy(ctx);
  weft_comm_destroy(self);
  weft_comm_destroy(world);
  int rc = weft_test_exit_code("test_moe_ep");
  weft_comm_finalize(&boot);
  return rc;
}
