#!/usr/bin/env python3
"""PyTorch f32 CPU baseline for `weft bench train`: times training steps of the model of
docs/model.md (same architecture, initialisation, loss and optimiser).

usage: torch_train_ref.py [--dim D] [--layers LLSL|n] [--heads H] [--kv-heads HKV]
                          [--experts E] [--topk K] [--ffn-dim F] [--moe-layers MDMD]
                          [--seq N] [--batch B] [--steps S] [--warmup-steps W]
                          [--threads T] [--seed SEED] [--json] [--check]

One step = forward, loss = CE + 0.01 * sum of the MoE layers' LBL, backward, global-norm
clipping at 1.0, AdamW(lr 1e-3, betas (0.9, 0.95), eps 1e-8, weight decay 0.1 on matrices and
0 on norms), on a fresh random byte batch of B sequences of N tokens. The learning-rate
schedule is left out: it costs nothing and does not change the time of a step. Prints the
median step time over --steps timed steps (after --warmup-steps untimed ones) and the tokens
per second it gives; --json prints one line of JSON instead.

The implementation is what a competent PyTorch user would write, so the comparison is fair:
  softmax attention  torch.nn.functional.scaled_dot_product_attention(is_causal=True) with the
                     KV heads expanded for GQA (torch < 2.0 has no SDPA: the same masked
                     softmax written out, which is what SDPA's CPU math backend computes)
  linear attention   the chunked form (chunks of 64): masked matmuls inside a chunk with the
                     decay from differences of cumulative log decays, a state carried across
                     chunks; not a per-token Python loop
  MoE                routing sorted by expert, then per expert an index_select, the three
                     SwiGLU matmuls and an index_add back
--check compares the chunked linear attention with the naive recurrence and the grouped MoE
with a dense one (f32, small inputs, outputs and gradients to 1e-4 of their largest value) and
exits 1 on a mismatch.
"""
import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB = 256
CHUNK = 64
GATE_SCALE = 1.0 / 16  # GLA's gate temperature (docs/model.md)
ROPE_BASE = 10000.0
NORM_EPS = 1e-5
AUX_WEIGHT = 0.01
INIT_STD = 0.02
HAS_SDPA = hasattr(F, "scaled_dot_product_attention")


# ---- layers -------------------------------------------------------------------------------


def rms_norm(x, gain=None):
    y = x * torch.rsqrt((x * x).mean(dim=-1, keepdim=True) + NORM_EPS)
    return y if gain is None else y * gain


class RMSNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return rms_norm(x, self.weight)


def normal(shape, std, gen):
    """A parameter drawn from N(0, std), stored [in, out] like weft's (x @ W)."""
    return nn.Parameter(torch.randn(shape, generator=gen) * std)


def rope_tables(n, dh):
    """cos, sin [N, dh/2] of the angles p * base^(-2i/dh) of pair (2i, 2i+1) at position p."""
    theta = ROPE_BASE ** (-torch.arange(0, dh, 2, dtype=torch.float64) / dh)
    angle = torch.arange(n, dtype=torch.float64)[:, None] * theta[None, :]
    return torch.cos(angle).float(), torch.sin(angle).float()


def apply_rope(x, cos, sin):
    """x [B, heads, N, dh]: rotate each pair (2i, 2i+1)."""
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


def causal_attention(q, k, v):
    """q, k, v [B, H, N, dh] (KV already expanded to H heads)."""
    if HAS_SDPA:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    n = q.shape[2]
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


class SoftmaxAttention(nn.Module):
    def __init__(self, dim, heads, kv_heads, out_std, gen):
        super().__init__()
        self.heads, self.kv_heads, self.dh = heads, kv_heads, dim // heads
        self.wq = normal((dim, heads * self.dh), INIT_STD, gen)
        self.wk = normal((dim, kv_heads * self.dh), INIT_STD, gen)
        self.wv = normal((dim, kv_heads * self.dh), INIT_STD, gen)
        self.wo = normal((heads * self.dh, dim), out_std, gen)

    def forward(self, a, rope):
        b, n, _ = a.shape

        def heads(x, count):  # [B, N, count dh] -> [B, count, N, dh]
            return x.view(b, n, count, self.dh).transpose(1, 2)
        q = apply_rope(heads(a @ self.wq, self.heads), *rope)
        k = apply_rope(heads(a @ self.wk, self.kv_heads), *rope)
        v = heads(a @ self.wv, self.kv_heads)
        groups = self.heads // self.kv_heads  # query head h reads kv head h // groups
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        o = causal_attention(q, k, v)
        return o.transpose(1, 2).reshape(b, n, -1) @ self.wo


def chunked_gla(q, k, v, g, chunk=CHUNK):
    """Gated linear attention o_t = q_t S_t, S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t, S_0 = 0,
    in chunks. q, k, g [B, H, N, dk], v [B, H, N, dv], g <= 0 the log decay.

    With c the cumulative log decay inside a chunk (inclusive), a token t sees token s <= t of
    its chunk through exp(c_t - c_s), i.e. A = (q exp(c)) (k exp(-c))^T masked to s <= t: two
    batched matmuls for all chunks at once. Earlier chunks reach it through the state at the
    chunk's start, decayed by exp(c_t). exp(-c) <= exp(-c_last) would overflow f32 only if one
    chunk's total log decay were below -88, an average gate pre-activation below -22 for 64
    tokens with the 1/16 temperature; at initialisation the decay per token is about -0.04.
    Only the [dk, dv] state carry is a Python loop, over N / chunk chunks."""
    b, h, n, dk = q.shape
    dv = v.shape[-1]
    pad = -n % chunk  # zero k, v and g at the end change nothing before them
    if pad:
        q, k, v, g = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v, g))
    chunks = (n + pad) // chunk
    q, k, g = (x.reshape(b, h, chunks, chunk, dk) for x in (q, k, g))
    v = v.reshape(b, h, chunks, chunk, dv)
    c = g.cumsum(dim=3)
    c_last = c[:, :, :, -1:]  # [B, H, chunks, 1, dk]: each chunk's total log decay
    q_decayed = q * torch.exp(c)  # decay from the chunk start to t
    scores = q_decayed @ (k * torch.exp(-c)).transpose(-2, -1)  # [.., chunk, chunk]
    causal = torch.ones(chunk, chunk, dtype=torch.bool).tril()
    out = (scores * causal) @ v
    # What each chunk adds to the state at its end, and how it decays the incoming state.
    chunk_states = (k * torch.exp(c_last - c)).transpose(-2, -1) @ v  # [.., dk, dv]
    chunk_decay = torch.exp(c_last).transpose(-2, -1)  # [B, H, chunks, dk, 1]
    state = q.new_zeros(b, h, dk, dv)
    inter = []
    for i in range(chunks):
        inter.append(q_decayed[:, :, i] @ state)
        state = chunk_decay[:, :, i] * state + chunk_states[:, :, i]
    out = out + torch.stack(inter, dim=2)
    return out.reshape(b, h, chunks * chunk, dv)[:, :, :n]


def naive_gla(q, k, v, g):
    """The recurrence token by token (the definition, for --check)."""
    state = q.new_zeros(q.shape[0], q.shape[1], q.shape[3], v.shape[3])
    outs = []
    for t in range(q.shape[2]):
        state = torch.exp(g[:, :, t])[..., None] * state + \
            k[:, :, t, :, None] * v[:, :, t, None, :]
        outs.append((q[:, :, t, None, :] @ state)[:, :, 0])
    return torch.stack(outs, dim=2)


class LinearAttention(nn.Module):
    def __init__(self, dim, heads, out_std, gen):
        super().__init__()
        self.heads, self.dh = heads, dim // heads
        self.wq, self.wk, self.wv, self.wg = (normal((dim, dim), INIT_STD, gen) for _ in range(4))
        self.wo = normal((dim, dim), out_std, gen)

    def forward(self, a, rope):
        b, n, _ = a.shape

        def heads(x):  # [B, N, H dh] -> [B, H, N, dh]
            return x.view(b, n, self.heads, self.dh).transpose(1, 2)
        q, k, v = heads(a @ self.wq), heads(a @ self.wk), heads(a @ self.wv)
        g = heads(F.logsigmoid(a @ self.wg) * GATE_SCALE)
        o = rms_norm(chunked_gla(q, k, v, g) / math.sqrt(self.dh))  # per head, no gain
        return o.transpose(1, 2).reshape(b, n, -1) @ self.wo


class DenseFFN(nn.Module):
    def __init__(self, dim, ffn, out_std, gen):
        super().__init__()
        self.w1, self.w3 = normal((dim, ffn), INIT_STD, gen), normal((dim, ffn), INIT_STD, gen)
        self.w2 = normal((ffn, dim), out_std, gen)

    def forward(self, x):
        return (F.silu(x @ self.w1) * (x @ self.w3)) @ self.w2, x.new_zeros(())


class MoE(nn.Module):
    """Top-k of E SwiGLU experts, normalised weights, dropless; returns (y, LBL)."""

    def __init__(self, dim, ffn, experts, topk, out_std, gen):
        super().__init__()
        self.experts, self.topk = experts, topk
        self.router = normal((dim, experts), INIT_STD, gen)
        self.w1 = normal((experts, dim, ffn), INIT_STD, gen)
        self.w3 = normal((experts, dim, ffn), INIT_STD, gen)
        self.w2 = normal((experts, ffn, dim), out_std, gen)

    def route(self, x):
        """probs [T, E], ids and normalised weights [T, k]."""
        probs = torch.softmax(x @ self.router, dim=1)
        weights, ids = probs.topk(self.topk, dim=1)
        return probs, ids, weights / weights.sum(dim=1, keepdim=True)

    def forward(self, b):
        x = b.reshape(-1, b.shape[-1])
        probs, ids, weights = self.route(x)
        # Sort the (token, slot) pairs by expert so each expert's rows are one contiguous run.
        flat_ids = ids.reshape(-1)
        order = torch.argsort(flat_ids)
        tokens = order // self.topk
        slot_weights = weights.reshape(-1)[order]
        counts = torch.bincount(flat_ids, minlength=self.experts)
        y = torch.zeros_like(x)
        start = 0
        for e, count in enumerate(counts.tolist()):
            if count:
                rows = tokens[start:start + count]
                xe = x.index_select(0, rows)
                ye = (F.silu(xe @ self.w1[e]) * (xe @ self.w3[e])) @ self.w2[e]
                y = y.index_add(0, rows, ye * slot_weights[start:start + count, None])
            start += count
        # Global-batch LBL (expert-parallel.md): f = c / (k T) is a constant for the gradient.
        f = counts.to(x.dtype) / (self.topk * x.shape[0])
        lbl = self.experts * (f * probs.mean(dim=0)).sum()
        return y.view_as(b), lbl

    def dense_reference(self, b):
        """Every expert on every token, weighted by the routing (for --check)."""
        x = b.reshape(-1, b.shape[-1])
        _, ids, weights = self.route(x)
        gate = torch.zeros(x.shape[0], self.experts).scatter(1, ids, weights)  # [T, E]
        hidden = F.silu(torch.einsum("td,edf->etf", x, self.w1)) * \
            torch.einsum("td,edf->etf", x, self.w3)
        y = torch.einsum("etf,efd,te->td", hidden, self.w2, gate)
        return y.view_as(b)


class Block(nn.Module):
    def __init__(self, args, kind, ffn_kind, out_std, gen):
        super().__init__()
        self.attn_norm, self.ffn_norm = RMSNorm(args.dim), RMSNorm(args.dim)
        if kind == "S":
            self.attn = SoftmaxAttention(args.dim, args.heads, args.kv_heads, out_std, gen)
        else:
            self.attn = LinearAttention(args.dim, args.heads, out_std, gen)
        if ffn_kind == "M":
            self.ffn = MoE(args.dim, args.ffn_dim, args.experts, args.topk, out_std, gen)
        else:
            self.ffn = DenseFFN(args.dim, args.ffn_dim, out_std, gen)

    def forward(self, x, rope):
        x = x + self.attn(self.attn_norm(x), rope)
        y, lbl = self.ffn(self.ffn_norm(x))
        return x + y, lbl


class Model(nn.Module):
    def __init__(self, args, gen):
        super().__init__()
        out_std = INIT_STD / math.sqrt(2 * len(args.layers))  # output projections
        self.embed = normal((VOCAB, args.dim), INIT_STD, gen)
        self.blocks = nn.ModuleList(Block(args, kind, ffn_kind, out_std, gen)
                                    for kind, ffn_kind in zip(args.layers, args.moe_layers))
        self.final_norm = RMSNorm(args.dim)
        self.lm_head = normal((args.dim, VOCAB), INIT_STD, gen)
        self.rope = rope_tables(args.seq, args.dim // args.heads)

    def forward(self, ids, targets):
        """loss = CE (mean over the batch's positions) + AUX_WEIGHT * sum of LBLs."""
        x = F.embedding(ids, self.embed)
        lbl = x.new_zeros(())
        for block in self.blocks:
            x, block_lbl = block(x, self.rope)
            lbl = lbl + block_lbl
        logits = self.final_norm(x) @ self.lm_head
        ce = F.cross_entropy(logits.view(-1, VOCAB), targets.reshape(-1))
        return ce + AUX_WEIGHT * lbl


# ---- timing -------------------------------------------------------------------------------


def make_optimizer(model):
    """AdamW with weight decay on matrices and expert tensors, none on norm gains."""
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    gains = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": matrices, "weight_decay": 0.1},
                              {"params": gains, "weight_decay": 0.0}],
                             lr=1e-3, betas=(0.9, 0.95), eps=1e-8)


def train(args):
    gen = torch.Generator().manual_seed(args.seed)
    model = Model(args, gen)
    optimizer = make_optimizer(model)
    step_s, losses = [], []
    for step in range(args.warmup_steps + args.steps):
        window = torch.randint(0, VOCAB, (args.batch, args.seq + 1), generator=gen)
        ids, targets = window[:, :-1], window[:, 1:]  # next-byte targets, as weft's windows
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = model(ids, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        elapsed = time.perf_counter() - start
        losses.append(float(loss))
        if step >= args.warmup_steps:
            step_s.append(elapsed)
    median = statistics.median(step_s)
    return {
        "impl": "torch",
        "config": {"dim": args.dim, "layers": args.layers, "heads": args.heads,
                   "kv_heads": args.kv_heads, "experts": args.experts, "topk": args.topk,
                   "ffn_dim": args.ffn_dim, "moe_layers": args.moe_layers, "seq": args.seq,
                   "batch": args.batch, "steps": args.steps, "warmup_steps": args.warmup_steps,
                   "seed": args.seed},
        "params": sum(p.numel() for p in model.parameters()),
        "threads": torch.get_num_threads(),
        "tokens_per_s": args.batch * args.seq / median,
        "step_s": median,
        "step_s_min": min(step_s),
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "sdpa": HAS_SDPA,
        "torch": torch.__version__,
    }


# ---- self-check ---------------------------------------------------------------------------


def max_error(got, want):
    """max|got - want| as a fraction of max|want|."""
    return float((got - want).abs().max() / want.abs().max())


def check(tol=1e-4):
    """The fast paths against the definitions, outputs and gradients; returns the failures."""
    failures = []
    gen = torch.Generator().manual_seed(3)
    # N = 150: two full chunks and a padded one. Gates as the model draws them, and strongly
    # negative ones (a chunk's total decay down to -64) that stress exp(-c).
    for label, g in (("model gates", F.logsigmoid(3 * torch.randn(2, 2, 150, 8, generator=gen))
                      * GATE_SCALE),
                     ("strong decay", -torch.rand(2, 2, 150, 8, generator=gen))):
        q, k, v = (torch.randn(2, 2, 150, 8, generator=gen) for _ in range(3))
        inputs = [x.clone().requires_grad_() for x in (q, k, v, g)]
        fast_inputs = [x.clone().requires_grad_() for x in (q, k, v, g)]
        dout = torch.randn(2, 2, 150, 8, generator=gen)
        naive_gla(*inputs).backward(dout)
        fast = chunked_gla(*fast_inputs)
        fast.backward(dout)
        errors = {"out": max_error(fast.detach(), naive_gla(q, k, v, g))}
        errors.update({f"d{n}": max_error(a.grad, b.grad)
                       for n, a, b in zip("qkvg", fast_inputs, inputs)})
        worst = max(errors, key=errors.get)
        print(f"check: chunked linear attention ({label}) worst {worst} {errors[worst]:.3g} "
              f"x max|ref|")
        if not errors[worst] <= tol:
            failures.append(f"chunked linear attention ({label}): {errors}")

    moe = MoE(16, 24, 6, 2, 0.1, gen)
    b = torch.randn(3, 10, 16, generator=gen)
    fast, _ = moe(b)
    error = max_error(fast, moe.dense_reference(b))
    print(f"check: grouped MoE against dense {error:.3g} x max|ref|")
    if not error <= tol:
        failures.append(f"grouped MoE: {error:.3g} x max|ref|")
    return failures


# ---- command line -------------------------------------------------------------------------


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", default="LLSL",
                        help="per layer S (softmax) or L (linear), or n = n softmax layers")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, help="KV heads of softmax layers (default H)")
    parser.add_argument("--experts", type=int, default=0, help="0 = every FFN dense")
    parser.add_argument("--topk", type=int, default=2)
    parser.add_argument("--ffn-dim", type=int, default=512)
    parser.add_argument("--moe-layers", help="per layer M (MoE) or D (dense); default every "
                                             "layer MoE when --experts > 0")
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8, help="sequences per step")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="one line of JSON")
    parser.add_argument("--check", action="store_true",
                        help="check the chunked linear attention and grouped MoE, then exit")
    args = parser.parse_args()

    if args.layers.isdigit():
        args.layers = "S" * int(args.layers)
    if not args.layers or set(args.layers) - set("SL"):
        parser.error(f"--layers {args.layers!r}: a string over S, L or a positive number")
    args.kv_heads = args.kv_heads or args.heads
    if args.moe_layers is None:
        args.moe_layers = ("M" if args.experts > 0 else "D") * len(args.layers)
    if len(args.moe_layers) != len(args.layers) or set(args.moe_layers) - set("MD"):
        parser.error(f"--moe-layers {args.moe_layers!r}: {len(args.layers)} letters of M, D")
    if "M" in args.moe_layers and not 1 <= args.topk <= args.experts:
        parser.error(f"--topk {args.topk} must be in 1..--experts {args.experts}")
    dh = args.dim // args.heads
    if args.dim % args.heads or dh % 2 or args.heads % args.kv_heads:
        parser.error(f"--dim {args.dim}, --heads {args.heads}, --kv-heads {args.kv_heads}: "
                     "H must divide d with an even head width, Hkv divide H")
    if min(args.ffn_dim, args.seq, args.batch, args.steps) < 1 or args.warmup_steps < 0:
        parser.error("--ffn-dim, --seq, --batch, --steps must be positive")
    return args


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.check:
        failures = check()
        for failure in failures:
            print("FAIL " + failure)
        print("check: " + ("passed" if not failures else f"{len(failures)} failure(s)"))
        return 1 if failures else 0
    result = train(args)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"torch {result['torch']} threads={result['threads']} d={args.dim} "
              f"layers={args.layers} moe={args.moe_layers} N={args.seq} B={args.batch}: "
              f"step {result['step_s'] * 1e3:.1f} ms (median of {args.steps}), "
              f"{result['tokens_per_s']:.0f} tokens/s, loss {result['loss_first']:.4f} -> "
              f"{result['loss_last']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
