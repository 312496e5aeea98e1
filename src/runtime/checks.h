/* `weft check <what>`: correctness drivers that run one distributed algorithm on inputs from a
 * file and write its outputs to a file, for comparison with an outside oracle (PyTorch). */
#ifndef WEFT_RUNTIME_CHECKS_H
#define WEFT_RUNTIME_CHECKS_H

/* `weft check linear-attention` (check_linear.c). argv[0] is "linear-attention". Returns a
 * process exit code. */
int weft_check_linear(int argc, char **argv);

/* `weft check attention` (check_attention.c): sequence-parallel softmax attention. argv[0] is
 * "attention". Returns a process exit code. */
int weft_check_attention(int argc, char **argv);

/* `weft check moe` (check_moe.c): the expert-parallel MoE layer. argv[0] is "moe". Returns a
 * process exit code. */
int weft_check_moe(int argc, char **argv);

/* `weft check model` (check_model.c): one training step's loss and gradients of the whole
 * model. argv[0] is "model". Returns a process exit code. */
int weft_check_model(int argc, char **argv);

#endif /* WEFT_RUNTIME_CHECKS_H */
