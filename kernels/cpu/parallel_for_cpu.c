/* The one threading helper of the CPU kernels (see kernel_ctx_internal.h): contiguous ranges
 * over pthreads, sized by the work per item.
 *
 * Rejected: OpenMP (a second runtime next to OpenBLAS's pool, and its thread count would need
 * its own knob) and a persistent pool (the kernels that use this are memory-bound passes of
 * milliseconds, where the ~20-50 us of a thread start is noise; the GEMMs use OpenBLAS's pool). */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "kernel_ctx_internal.h"

/* Work units (about one float read or written) per thread below which a call keeps fewer
 * threads: starting and joining a thread costs ~20-50 us, 2^17 floats stream in ~30 us. */
#define PARALLEL_MIN_WORK_PER_THREAD ((int64_t)1 << 17)
#define PARALLEL_MAX_THREADS         256 /* bounds the worker array; far above any core count */

typedef struct parallel_worker {
  const void *job;
  weft_cpu_range_fn fn;
  int64_t begin, end;
  pthread_t thread;
  bool started;
} parallel_worker_t;

static void *parallel_worker_main(void *arg) {
  parallel_worker_t *w = arg;
  w->fn(w->job, w->begin, w->end);
  return NULL;
}

void weft_cpu_parallel_for(const void *job, weft_cpu_range_fn fn, int64_t n, int64_t work) {
  double total = (double)n * (double)(work > 0 ? work : 1);
  int64_t threads = weft_kernels_cpu_threads();
  if ((double)threads > total / (double)PARALLEL_MIN_WORK_PER_THREAD)
    threads = (int64_t)(total / (double)PARALLEL_MIN_WORK_PER_THREAD);
  if (threads > n) threads = n;
  if (threads > PARALLEL_MAX_THREADS) threads = PARALLEL_MAX_THREADS;
  if (threads <= 1) {
    fn(job, 0, n);
    return;
  }
  parallel_worker_t workers[PARALLEL_MAX_THREADS];
  int64_t base = n / threads, extra = n % threads;
  for (int64_t t = 0; t < threads; t++) {
    int64_t begin = t * base + (t < extra ? t : extra);
    workers[t] = (parallel_worker_t){.job = job, .fn = fn, .begin = begin};
    workers[t].end = begin + base + (t < extra ? 1 : 0);
  }
  for (int64_t t = 1; t < threads; t++)
    workers[t].started =
        pthread_create(&workers[t].thread, NULL, parallel_worker_main, &workers[t]) == 0;
  fn(job, workers[0].begin, workers[0].end);
  for (int64_t t = 1; t < threads; t++) {
    if (workers[t].started)
      pthread_join(workers[t].thread, NULL);
    else
      fn(job, workers[t].begin, workers[t].end);
  }
}
