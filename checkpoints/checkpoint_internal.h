/* Private parts of the checkpoint module shared by checkpoint.c (resolve, open, read, verify),
 * checkpoint_save.c (save, commit, background writer) and checksum.c. */
#ifndef WEFT_CHECKPOINT_INTERNAL_H
#define WEFT_CHECKPOINT_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "weft/checkpoint.h"

/* The checksum contribution of src[0 .. n), whose first element has global index `first`
 * within its dataset; copies src to dst on the way when dst is not NULL. */
uint64_t ckpt_checksum_copy(float *dst, const float *src, int64_t n, uint64_t first);

/* Wrapping sum over the ranks of each of `count` partial checksums, in place. comm NULL or
 * one rank: nothing to do. Collective. */
weft_status_t ckpt_sum_partials(weft_comm_t *comm, uint64_t *partials, int count);

/* Step number of "step-NNNNNNNN.h5" (tmp: of "step-NNNNNNNN.h5.tmp"), or -1. */
long long ckpt_parse_step(const char *name, bool tmp);

#endif /* WEFT_CHECKPOINT_INTERNAL_H */
