#!/usr/bin/env python3
"""Runs `weft bench moe --json` (the command after `--`) and checks its stdout.

Every stdout line must be one JSON object with the documented keys and ranks == --np; every
(T, h, f, E, k) of the command's lists must have exactly one row, except the combinations the
bench skips (E not divisible by P, k > E, h < E). The routing is recomputed here, independently
of the C code, from the bench's rule (src/runtime/bench_moe.c: token t of rank q prefers the
experts in decreasing weft_bench_hash(seed, q, t E + e), ties to the lower id; the capacity rule
of parallel/include/weft/moe_ep.h), which gives the per-peer rows and slots; from them the
byte formulas: payload fwd = bwd = minimum = 8 h remote_rows summed over ranks (each token once
per distinct remote rank, one pre-summed row back), meta fwd = 8 E (P-1) P + 12 remote_slots,
meta bwd = 4 remote_slots, naive = 8 h remote_slots. Skewed routing (--skew > 0) uses floating
point keys and is checked only for consistency. Also: no mismatched counter, no wrong or
non-finite element, FLOPs 6 M h f / 12 M h f, bandwidths and ratios consistent with the bytes and
times (null at P = 1), every time positive.

Usage: check_bench_moe_json.py --np P -- mpirun.sh P weft bench moe ... --json
"""
import argparse
import json
import math
import subprocess
import sys

INT_KEYS = ("ranks cpu_threads tokens hidden ffn experts topk seed iters warmup capacity dropped "
            "remote_rows remote_slots expert_rows_total expert_rows_max payload_fwd_bytes_total "
            "payload_bwd_bytes_total minimum_bytes_total layer_minimum_bytes_total "
            "naive_bytes_total payload_fwd_bytes_max minimum_bytes_max meta_fwd_bytes_total "
            "meta_bwd_bytes_total formula_meta_fwd_bytes_total formula_meta_bwd_bytes_total "
            "bytes_mismatch exchange_wrong raw_block_bytes gemm_m gemm_k gemm_n_fwd gemm_n_bwd "
            "flops_fwd flops_bwd nonfinite").split()
TIME_KEYS = ("fwd_ms bwd_ms fwd_min_ms bwd_min_ms layer_fwd_exchange_ms layer_fwd_payload_ms "
             "layer_fwd_payload_least_ms layer_fwd_experts_ms layer_bwd_exchange_ms "
             "layer_bwd_payload_ms layer_bwd_experts_ms router_ms experts_fwd_ms experts_bwd_ms "
             "gemm_fwd_ms gemm_bwd_ms experts_ratio").split()
EXCHANGE_KEYS = ("exchange_ms raw_alltoall_ms raw_busbw_gbps raw_reuse_alltoall_ms "
                 "raw_reuse_busbw_gbps eff_gbps eff_ratio eff_ratio_reuse layer_eff_gbps "
                 "layer_eff_ratio").split()
KEYS = set(INT_KEYS + TIME_KEYS + EXCHANGE_KEYS + ["device", "capacity_factor", "skew"])
M32 = 0xFFFFFFFF


def bench_hash(a, b, index):
    """weft_bench_hash of src/runtime/bench_util.c in 32-bit arithmetic."""
    h = ((a * 0x9E3779B1) & M32) ^ (((b + 0x7F4A7C15) & M32) * 0x85EBCA77 & M32) ^ \
        ((((index & M32) + 0x165667B1) & M32) * 0xC2B2AE3D & M32) ^ ((index >> 32) & M32)
    h ^= h >> 16
    h = h * 0x85EBCA6B & M32
    h ^= h >> 13
    h = h * 0xC2B2AE35 & M32
    return h ^ (h >> 16)


def routing(p, t, e, k, cf, seed):
    """rows[q][d], slots[q][d], expert rows [E], capacity, dropped for uniform routing."""
    el = e // p
    ids = [[sorted(range(e), key=lambda x: (-bench_hash(seed, q, tok * e + x), x))[:k]
            for tok in range(t)] for q in range(p)]
    count = [[sum(c.count(x) for c in ids[q]) for x in range(e)] for q in range(p)]
    cap = math.ceil(cf * k * (p * t) / e) if cf > 0 else 0
    rows = [[0] * p for _ in range(p)]
    slots = [[0] * p for _ in range(p)]
    expert_rows, dropped, before = [0] * e, 0, [0] * e
    for q in range(p):
        allow = [count[q][x] if cf <= 0 else max(0, min(cap - before[x], count[q][x]))
                 for x in range(e)]
        before = [before[x] + count[q][x] for x in range(e)]
        for chosen in ids[q]:
            seen = set()
            for x in chosen:
                if allow[x] <= 0:
                    dropped += 1
                    continue
                allow[x] -= 1
                d = x // el
                slots[q][d] += 1
                expert_rows[x] += 1
                if d not in seen:
                    rows[q][d] += 1
                    seen.add(d)
    return rows, slots, expert_rows, cap, dropped


def close(a, b, rel=2e-3):
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-300)


def check_row(row, p, cf, skew, seed):
    problems = []
    missing = KEYS - set(row)
    if missing or set(row) - KEYS:
        return [f"keys missing {sorted(missing)}, unexpected {sorted(set(row) - KEYS)}"]
    t, h, f, e, k = (row[x] for x in ("tokens", "hidden", "ffn", "experts", "topk"))
    for key in ("bytes_mismatch", "exchange_wrong", "nonfinite"):
        if row[key] != 0:
            problems.append(f"{key} = {row[key]}")
    pay = 8 * h * row["remote_rows"]
    want = {"payload_fwd_bytes_total": pay, "payload_bwd_bytes_total": pay,
            "minimum_bytes_total": pay, "layer_minimum_bytes_total": pay,
            "naive_bytes_total": 8 * h * row["remote_slots"],
            "formula_meta_fwd_bytes_total": 8 * e * (p - 1) * p + 12 * row["remote_slots"],
            "formula_meta_bwd_bytes_total": 4 * row["remote_slots"],
            "meta_fwd_bytes_total": row["formula_meta_fwd_bytes_total"],
            "meta_bwd_bytes_total": row["formula_meta_bwd_bytes_total"],
            "payload_fwd_bytes_max": row["minimum_bytes_max"],
            "gemm_m": row["expert_rows_max"], "gemm_k": h, "gemm_n_fwd": 3 * f,
            "gemm_n_bwd": 6 * f, "flops_fwd": 6 * row["expert_rows_max"] * h * f,
            "flops_bwd": 12 * row["expert_rows_max"] * h * f,
            "expert_rows_total": p * t * k - row["dropped"]}
    if skew == 0:
        rows, slots, expert_rows, cap, dropped = routing(p, t, e, k, cf, seed)
        el = e // p
        remote = sum(rows[q][d] for q in range(p) for d in range(p) if q != d)
        per_rank = [4 * h * sum(rows[r][d] + rows[d][r] for d in range(p) if d != r)
                    for r in range(p)]
        want.update({"remote_rows": remote, "capacity": cap, "dropped": dropped,
                     "remote_slots": sum(slots[q][d] for q in range(p) for d in range(p)
                                         if q != d),
                     "minimum_bytes_max": max(per_rank),
                     "expert_rows_max": max(sum(expert_rows[r * el:(r + 1) * el])
                                            for r in range(p))})
        pairs = p * (p - 1)
        if p > 1:
            want["raw_block_bytes"] = 4 * max(1, (2 * remote * h + pairs) // (2 * pairs))
    for key, value in want.items():
        if row[key] != value:
            problems.append(f"{key} = {row[key]}, expected {value}")
    for key in TIME_KEYS:
        if not (isinstance(row[key], (int, float)) and row[key] > 0):
            problems.append(f"{key} = {row[key]} is not positive")
    if not (row["fwd_min_ms"] <= row["fwd_ms"] and row["bwd_min_ms"] <= row["bwd_ms"]):
        problems.append("a minimum above its median")
    ratio = (row["experts_fwd_ms"] + row["experts_bwd_ms"]) / (row["gemm_fwd_ms"] +
                                                                row["gemm_bwd_ms"])
    if not close(row["experts_ratio"], ratio):
        problems.append(f"experts_ratio {row['experts_ratio']}, expected {ratio}")
    if p == 1:
        if row["remote_rows"] != 0 or any(row[x] is not None for x in EXCHANGE_KEYS):
            problems.append("P = 1 moved bytes or has exchange numbers")
        return problems
    avg = row["payload_fwd_bytes_total"] / p
    raw = 2 * (p - 1) * row["raw_block_bytes"] / (row["raw_alltoall_ms"] * 1e-3) / 1e9
    reuse = 2 * (p - 1) * row["raw_block_bytes"] / (row["raw_reuse_alltoall_ms"] * 1e-3) / 1e9
    eff = avg / (row["exchange_ms"] * 1e-3) / 1e9
    leff = avg / (row["layer_fwd_payload_least_ms"] * 1e-3) / 1e9
    for key, value in (("raw_busbw_gbps", raw), ("raw_reuse_busbw_gbps", reuse),
                       ("eff_gbps", eff), ("eff_ratio", eff / raw),
                       ("eff_ratio_reuse", eff / reuse),
                       ("layer_eff_gbps", leff), ("layer_eff_ratio", leff / raw)):
        if not close(row[key], value):
            problems.append(f"{key} = {row[key]}, expected {value}")
    if row["layer_fwd_payload_least_ms"] > row["layer_fwd_payload_ms"] * (1 + 1e-5):
        problems.append("the least-waiting rank's payload time above the slowest rank's")
    return problems


def values(cmd, name, default, kind=int):
    text = cmd[cmd.index(name) + 1] if name in cmd else default
    if kind is float:
        return float(text)
    scale = {"k": 1024, "m": 1024 ** 2}
    return [int(x[:-1]) * scale[x[-1].lower()] if x[-1].lower() in scale else int(x)
            for x in text.split(",")]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--np", type=int, required=True)
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    cmd = args.cmd[1:] if args.cmd and args.cmd[0] == "--" else args.cmd
    p = args.np
    lists = [values(cmd, "--" + n, d) for n, d in (("tokens", "1024"), ("hidden", "256"),
                                                   ("ffn", "512"), ("experts", "8"),
                                                   ("topk", "2"))]
    cf = values(cmd, "--capacity-factor", "0", float)
    skew = values(cmd, "--skew", "0", float)
    seed = values(cmd, "--seed", "1")[0]
    run = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         timeout=300)
    sys.stderr.write(run.stderr)
    problems = [] if run.returncode == 0 else [f"exit code {run.returncode}"]
    seen = {}
    for number, line in enumerate(run.stdout.splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(f"line {number} is not JSON ({err}): {line!r}")
            continue
        if row.get("ranks") != p:
            problems.append(f"line {number}: ranks {row.get('ranks')} != {p}")
            continue
        key = tuple(row.get(x) for x in ("tokens", "hidden", "ffn", "experts", "topk"))
        seen[key] = seen.get(key, 0) + 1
        problems += [f"line {number} {key}: {x}" for x in check_row(row, p, cf, skew, seed)]
    want = {(t, h, f, e, k) for t in lists[0] for h in lists[1] for f in lists[2]
            for e in lists[3] for k in lists[4] if e % p == 0 and k <= e and h >= e}
    for key in sorted(want):
        if seen.get(key, 0) != 1:
            problems.append(f"{seen.get(key, 0)} row(s) for (T, h, f, E, k) = {key}, expected 1")
    for key in sorted(set(seen) - want):
        problems.append(f"unexpected row {key}")
    for x in problems:
        print("FAIL:", x)
    if problems:
        return 1
    print(f"bench moe --json at np {p}: {len(want)} rows agree with the routing and byte formulas")
    return 0


if __name__ == "__main__":
    sys.exit(main())
