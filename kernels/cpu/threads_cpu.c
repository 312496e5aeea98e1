/* Thread budget of CPU kernels. OpenBLAS keeps its own pool; its thread count is the only
 * knob it has, so weft forwards the budget there (and later CPU kernels read it back). */
#include <cblas.h>

#include "weft/kernel_ctx.h"

/* Declared by OpenBLAS's cblas.h; repeated here for CBLAS headers that omit it. */
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);

static int g_cpu_threads;

void weft_kernels_set_cpu_threads(int threads) {
  g_cpu_threads = threads < 1 ? 1 : threads;
  openblas_set_num_threads(g_cpu_threads);
}

int weft_kernels_cpu_threads(void) {
  return g_cpu_threads > 0 ? g_cpu_threads : openblas_get_num_threads();
}
