#!/usr/bin/env python3
# PyTorch side of the CPU attention comparison in docs/sequence-parallel.md (bench/attention_kernel.c
# is the weft side). Usage: python3 bench/torch_attention.py THREADS N
# Times the math path of scaled_dot_product_attention (torch 1.13 has no F.sdpa; this is what
# torch 2.x's CPU "math" backend computes): forward + backward, causal, f32.
import sys, time, torch
threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
N = int(sys.argv[2]) if len(sys.argv) > 2 else 4096
torch.set_num_threads(threads)
B, H, d = 1, 8, 64
torch.manual_seed(0)
q = torch.randn(B, H, N, d, requires_grad=True)
k = torch.randn(B, H, N, d, requires_grad=True)
v = torch.randn(B, H, N, d, requires_grad=True)
do = torch.randn(B, H, N, d)
mask = torch.ones(N, N, dtype=torch.bool).tril()
def sdpa(q, k, v):
    s = (q @ k.transpose(-2, -1)) * (1.0 / d ** 0.5)
    s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, dim=-1) @ v
def step():
    q.grad = k.grad = v.grad = None
    t0 = time.perf_counter()
    o = sdpa(q, k, v)
    t1 = time.perf_counter()
    o.backward(do)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t0
step()
runs = [step() for _ in range(3)]
fw = min(r[0] for r in runs); tot = min(r[1] for r in runs)
print(f"torch threads={torch.get_num_threads()} N={N} H={H} d={d} causal fwd {fw*1e3:.1f} ms fwd+bwd {tot*1e3:.1f} ms")
