/* Benchmark drivers behind `weft bench`. argv[0] is the benchmark name. */
#ifndef WEFT_BENCH_H
#define WEFT_BENCH_H

int weft_bench_comm(int argc, char **argv);
int weft_bench_linear(int argc, char **argv);
int weft_bench_attention(int argc, char **argv);
int weft_bench_moe(int argc, char **argv);
int weft_bench_train(int argc, char **argv);
int weft_bench_ckpt(int argc, char **argv);

#endif /* WEFT_BENCH_H */
