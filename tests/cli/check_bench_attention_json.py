#!/usr/bin/env python3
"""Runs `weft bench attention --json` (the command after `--`) and checks its stdout.

Every stdout line must be one JSON object with ranks == --np; every (algorithm, sequence
length) named by the command's --algo and --seq must have exactly one row. The bytes each
algorithm sends are recomputed here, independently of the C code, from the formulas in the
header comment of parallel/attention_sp_bytes.c (layout, head split, Ulysses, ring, TokenRing)
and must equal both the plan's counters (sent_*) and the bench's formula (formula_*); the
FLOPs from 4 B H d * pairs (backward 2.5x); times must be positive and TF/s, the local row's
prediction and the ratio consistent with them.

Usage: check_bench_attention_json.py --np P -- mpirun.sh P weft bench attention ... --json
"""
import argparse
import json
import math
import subprocess
import sys

ALGOS = ["local", "ulysses", "ring", "tokenring", "hybrid", "auto"]


def flag(cmd, name, default):
    return cmd[cmd.index(name) + 1] if name in cmd else default


def parse_len(text):
    scale = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}.get(text[-1].lower(), 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def local_slots(n_tokens, p, causal):
    """n: slots per rank. Causal: 2P chunks (zigzag), two per rank; otherwise P chunks."""
    chunks = 2 * p if causal else p
    c = -(-n_tokens // chunks)
    return 2 * c if causal else c


def share(total, parts, i):
    """Even share i of total items over parts, the first total % parts one more: (first, count)."""
    base, extra = total // parts, total % parts
    return i * base + min(i, extra), base + (1 if i < extra else 0)


def heads_of(h, hkv, u, m):
    """(nq, nkv) of member m of a Ulysses group of u (parallel/attention_sp_split.h).
    u <= Hkv: the kv heads are shared out evenly, each member takes its kv heads' query heads.
    u > Hkv: kv head j goes to a block of u // Hkv (the first u % Hkv one more) members that
    share its H / Hkv query heads evenly; a member with no query head gets no kv head."""
    group = h // hkv
    if u <= hkv:
        nkv = share(hkv, u, m)[1]
        return nkv * group, nkv
    for j in range(hkv):
        first, members = share(u, hkv, j)
        if m < first + members:
            nq = share(group, members, m - first)[1]
            return nq, (1 if nq > 0 else 0)
    raise AssertionError("member outside the group")


def expected_bytes(row, algo, p, u, rank):
    """Bytes rank `rank` sends in one forward and one backward (attention_sp_bytes.c)."""
    bsz, h, hkv, d = row["batch"], row["heads"], row["kv_heads"], row["head_dim"]
    b = 2 if row["dtype"] == "bf16" else 4
    causal = bool(row["causal"])
    n = local_slots(row["seq"], p, causal)
    if algo == "tokenring":
        r, half = rank, (n // 2 if causal else n)
        q_rows = (p - 1 - r) * half + r * n
        out_rows = r * half + (p - 1 - r) * n
        return (bsz * h * (q_rows * d * b + out_rows * (d + 1) * 4),
                bsz * h * (q_rows * (2 * d * b + 8) + out_rows * d * 4))
    m, big_r = rank % u, p // u
    nq_m, nkv_m = heads_of(h, hkv, u, m)
    fwd = bwd = 0
    for i in range(u):
        if i == m:
            continue
        nq_i, nkv_i = heads_of(h, hkv, u, i)
        fwd += bsz * n * (nq_i * d * b + 2 * nkv_i * d * b)
        bwd += bsz * n * (2 * nq_i * d * b + 2 * nkv_i * d * b + 2 * nq_i * 4)
    fwd += (u - 1) * bsz * n * nq_m * (d + 1) * 4
    bwd += (u - 1) * bsz * n * (nq_m + 2 * nkv_m) * d * 4
    tokens = u * n  # L: a group's tokens
    fwd += (big_r - 1) * 2 * bsz * tokens * nkv_m * d * b
    bwd += (big_r - 1) * 2 * bsz * tokens * nkv_m * d * (b + 4)
    return fwd, bwd


def default_u(p):
    """HYBRID's default: the divisor of P closest to sqrt(P), ties to the smaller."""
    return min((u for u in range(1, p + 1) if p % u == 0),
               key=lambda u: (abs(u - math.sqrt(p)), u))


def close(a, b, rel=1e-3):
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-300)


def check_row(row, p, u_flag, local_ms):
    problems = []
    algo, resolved, u = row["algo"], row["resolved"], row["ulysses_degree"]
    want_u = {"local": 1, "ulysses": p, "ring": 1, "tokenring": 1,
              "hybrid": u_flag or default_u(p)}
    if algo != "auto" and (resolved != algo or u != want_u[algo]):
        problems.append(f"ran {resolved} with u {u}, expected {algo} with u {want_u[algo]}")
    if algo == "auto" and resolved not in ("ulysses", "ring", "tokenring", "hybrid"):
        problems.append(f"auto resolved to {resolved}")
    if algo == "local":
        want = (0, 0)
    else:
        per_rank = [expected_bytes(row, resolved, p, u, r) for r in range(p)]
        want = (max(f for f, _ in per_rank), max(b for _, b in per_rank))
    got = ((row["sent_fwd_bytes_max"], row["sent_bwd_bytes_max"]),
           (row["formula_fwd_bytes_max"], row["formula_bwd_bytes_max"]))
    if got[0] != want or got[1] != want or row["bytes_mismatch_ranks"] != 0:
        problems.append(f"bytes sent {got[0]}, bench formula {got[1]}, expected {want}, "
                        f"{row['bytes_mismatch_ranks']} rank(s) differ")
    pairs = row["seq"] * (row["seq"] + 1) // 2 if row["causal"] else row["seq"] ** 2
    flops = 4 * row["batch"] * row["heads"] * row["head_dim"] * pairs
    if not (close(row["flops_fwd"], flops) and close(row["flops_bwd"], 2.5 * flops)):
        problems.append(f"flops {row['flops_fwd']}, {row['flops_bwd']}, expected {flops} (x2.5)")
    for key in ("fwd_ms", "bwd_ms", "fwd_min_ms", "bwd_min_ms", "pred_fwd_ms", "pred_bwd_ms",
                "link_gbps", "kernel_gflops"):
        if not row[key] > 0:
            problems.append(f"{key} {row[key]} is not positive")
    if not (row["fwd_min_ms"] <= row["fwd_ms"] and row["bwd_min_ms"] <= row["bwd_ms"]):
        problems.append("a minimum above its median")
    for part in ("fwd", "bwd"):
        want_tf = row[f"flops_{part}"] / (row[f"{part}_ms"] * 1e-3) / 1e12
        if not close(row[f"{part}_tflops"], want_tf):
            problems.append(f"{part}_tflops {row[f'{part}_tflops']}, expected {want_tf}")
    if algo == "local":  # one rank, nothing moves: the model is FLOPs / measured rate
        rate = row["kernel_gflops"] * 1e9
        if not (close(row["pred_fwd_ms"], flops / rate * 1e3) and
                close(row["pred_bwd_ms"], 2.5 * flops / rate * 1e3)):
            problems.append(f"local prediction {row['pred_fwd_ms']} ms, expected "
                            f"{flops / rate * 1e3} ms")
    elif local_ms is not None:
        want_ratio = (row["fwd_ms"] + row["bwd_ms"]) / (local_ms / p)
        if row["ratio_to_ideal"] is None or not close(row["ratio_to_ideal"], want_ratio):
            problems.append(f"ratio {row['ratio_to_ideal']}, expected {want_ratio}")
    return problems


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--np", type=int, required=True)
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    cmd = args.cmd[1:] if args.cmd and args.cmd[0] == "--" else args.cmd
    algos = flag(cmd, "--algo", "ulysses,ring,tokenring,hybrid").split(",")
    seqs = [parse_len(s) for s in flag(cmd, "--seq", "4K").split(",")]
    u_flag = int(flag(cmd, "--ulysses-degree", "0"))
    run = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         timeout=300)
    sys.stderr.write(run.stderr)
    problems = []
    if run.returncode != 0:
        problems.append(f"exit code {run.returncode}")
    seen = {}
    local_ms = {}
    for number, line in enumerate(run.stdout.splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(f"line {number} is not JSON ({err}): {line!r}")
            continue
        if row.get("ranks") != args.np:
            problems.append(f"line {number}: ranks {row.get('ranks')} != {args.np}")
        key = (row.get("algo"), row.get("seq"))
        seen[key] = seen.get(key, 0) + 1
        if row.get("algo") == "local":
            local_ms[row["seq"]] = row["fwd_ms"] + row["bwd_ms"]
        problems += [f"line {number} ({key[0]}, N {key[1]}): {p}"
                     for p in check_row(row, args.np, u_flag, local_ms.get(row.get("seq")))]
    want = {(a, s) for a in algos for s in seqs}
    for key in sorted(want):
        if seen.get(key, 0) != 1:
            problems.append(f"{seen.get(key, 0)} row(s) for {key}, expected 1")
    for key in sorted(set(seen) - want):
        problems.append(f"unexpected row {key}")
    for p in problems:
        print("FAIL:", p)
    if problems:
        return 1
    print(f"bench attention --json at np {args.np}: {len(want)} rows agree with the byte and "
          f"FLOP formulas")
    return 0


if __name__ == "__main__":
    sys.exit(main())
