/* Autoregressive generation with the model of docs/model.md on one rank (docs/generation.md).
 *
 * A generator holds the parameters of a checkpoint in its own table (every tensor whole: one
 * rank holds all experts) and the per-layer decoding state: a KV cache [capacity, Hkv, dh] for
 * each softmax layer (keys stored after RoPE at their absolute positions) and the recurrent
 * state S [H, dh, dh] of each gated linear attention layer. weft_generator_feed runs the
 * model over the next tokens of the sequence (a whole prompt, cut into chunks of at most
 * `chunk` tokens, or one sampled token) and returns the logits of the last one.
 *
 * Why not weft_model_t: the trainer's model is built around a fixed micro-batch of N-token
 * windows on a mesh (zigzag positions, SP plans, activations saved for the backward); decoding
 * needs none of that but a cache that grows one token at a time. The parameter names and
 * shapes are docs/model.md's table, so a file written by `weft train --save` (or any
 * checkpoint with the same /params datasets) loads here.
 *
 * Devices: the GEMMs, norms, RoPE, gate, softmax attention over the cache and the MoE experts
 * run through the kernels on the context's device. The linear-attention recurrence is plain C
 * on the host (its state stays in host memory): one token's update is H dh^2 multiply-adds, too
 * little to launch work for, and it keeps the decode path independent of the chunked GLA
 * kernels, which compute the same function for training. */
#ifndef WEFT_RUNTIME_GENERATE_H
#define WEFT_RUNTIME_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "weft/kernel_ctx.h"
#include "weft/status.h"
#include "weft/tensor_file.h"

#define WEFT_GENERATE_DEFAULT_CHUNK 256 /* prefill tokens per forward (bounds activations) */

typedef struct weft_generator weft_generator_t;

/* The model configuration from the JSON of a checkpoint's root "config" attribute (the keys
 * of `weft train --config`: dim, layers, heads, kv-heads, experts, topk, ffn-dim, optional
 * moe-layers and seq; underscores may replace dashes). Other keys are ignored. Checked with
 * weft_model_config_check for one rank. On failure one line naming the key in `err`;
 * WEFT_ERR_INVALID_ARG. */
weft_status_t weft_generate_config_parse(const char *json, weft_model_config_t *cfg, char *err,
                                         size_t err_size);

/* Creates a generator with zeroed parameters and an empty cache.
 * [in] cfg: checked model configuration (copied)
 * [in] ctx: kernel context (borrowed; its device holds the parameters and the KV caches)
 * [in] capacity: most tokens the sequence may reach (prompt + tokens to generate), >= 1
 * [in] chunk: most tokens per forward (prefill chunk), >= 1 */
weft_status_t weft_generator_create(const weft_model_config_t *cfg, weft_kernel_ctx_t *ctx,
                                    int64_t capacity, int64_t chunk, weft_generator_t **gen_p);
void weft_generator_destroy(weft_generator_t *gen);

/* Reads every parameter from "/<group>/<name>" of a serial file (f32, or bf16 widened).
 * A missing dataset or one of another shape is WEFT_ERR_INVALID_ARG with one line in `err`
 * naming it and the expected shape. */
weft_status_t weft_generator_load(weft_generator_t *gen, weft_tensor_file_t *file,
                                  const char *group, char *err, size_t err_size);

/* Runs the next `count` tokens of the sequence (positions length .. length + count - 1)
 * through the model, adding them to the caches, in chunks of at most `chunk` tokens.
 * [in] ids [count]: host array of bytes 0..255; count >= 1 and length + count <= capacity
 * [out] logits [256]: host array, the next-token logits after the last of them (f32) */
weft_status_t weft_generator_feed(weft_generator_t *gen, const int32_t *ids, int64_t count,
                                  float *logits);

/* Tokens in the cache (the position of the next token). */
int64_t weft_generator_length(const weft_generator_t *gen);
/* Empties the caches and the recurrent states (the parameters stay). */
void weft_generator_reset(weft_generator_t *gen);
/* Bytes of device memory for the KV caches and of host memory for the recurrent states. */
size_t weft_generator_cache_bytes(const weft_generator_t *gen);

/* Next-token sampling: greedy when temperature == 0 (or top_k == 1), else softmax of
 * logits / temperature over the top_k largest logits (0 = all 256). Ties in logit order go to
 * the lower byte, so greedy is argmax with the lowest index. The random stream is splitmix64
 * from `seed`: one draw per sampled token, so a seed gives the same text on any machine
 * (given the same logits). */
typedef struct weft_sampler {
  double temperature;
  int top_k;
  uint64_t state;
} weft_sampler_t;

void weft_sampler_init(weft_sampler_t *sampler, double temperature, int top_k, uint64_t seed);
/* [in] logits [256] host. Returns the byte drawn. */
int weft_sampler_draw(weft_sampler_t *sampler, const float *logits);

#endif /* WEFT_RUNTIME_GENERATE_H */
