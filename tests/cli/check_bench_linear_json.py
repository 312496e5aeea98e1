#!/usr/bin/env python3
"""Runs `weft bench linear --json` (the command after `--`) and checks its stdout.

Every stdout line must be one JSON object; each state size of part 1 must have a row for
allscan, allgather and ring, and part 2 a row for zeco (All-Scan behind the compute), zeco-seq (after it), lasp2 and ring; every byte counter
must equal its formula (the bench computes the formula; this script recomputes it too), and
times must be positive.

Usage: check_bench_linear_json.py --np P -- mpirun.sh P weft bench linear ... --json
"""
import argparse
import json
import subprocess
import sys


def expected_scan(algo, state_bytes, p):
    """Most bytes a rank sends in one forward scan (docs/linear-attention.md)."""
    if p == 1:
        return 0
    if algo == "allgather":  # its state and its decay rows (state / 64 floats) to P-1 peers
        return (p - 1) * (state_bytes + state_bytes // 64)
    return state_bytes


def expected_layer(row, p):
    rows = row["batch"] * row["heads"] * row["dk"]
    state = rows * row["dv"] * 4
    if p == 1:
        return 0
    if row["algo"] == "lasp2":
        return 2 * (p - 1) * (state + rows * 4)
    return state if p == 2 else 2 * state


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--np", type=int, required=True)
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    cmd = args.cmd[1:] if args.cmd and args.cmd[0] == "--" else args.cmd
    run = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         timeout=300)
    sys.stderr.write(run.stderr)
    problems = []
    if run.returncode != 0:
        problems.append(f"exit code {run.returncode}")
    scans, layers = {}, set()
    for number, line in enumerate(run.stdout.splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(f"line {number} is not JSON ({err}): {line!r}")
            continue
        if row.get("ranks") != args.np:
            problems.append(f"line {number}: ranks {row.get('ranks')} != {args.np}")
        if row.get("part") == "scan":
            want = expected_scan(row["algo"], row["state_bytes"], args.np)
            if row["sent_bytes_max"] != want or row["expected_sent_bytes"] != want:
                problems.append(f"line {number}: {row['algo']} sent {row['sent_bytes_max']}, "
                                f"bench formula {row['expected_sent_bytes']}, expected {want}")
            if not row["time_us"] > 0:
                problems.append(f"line {number}: time_us {row['time_us']} is not positive")
            scans.setdefault(row["state_bytes"], set()).add(row["algo"])
        elif row.get("part") == "layer":
            want = expected_layer(row, args.np)
            if row["sent_bytes_max"] != want or row["expected_sent_bytes_max"] != want:
                problems.append(f"line {number}: {row['algo']} sent {row['sent_bytes_max']}, "
                                f"bench formula {row['expected_sent_bytes_max']}, expected {want}")
            if not (row["time_ms"] > 0 and row["single_rank_ms"] > 0):
                problems.append(f"line {number}: times must be positive: {line}")
            layers.add(row["algo"])
        else:
            problems.append(f"line {number}: unknown part: {line!r}")
    if not scans:
        problems.append("no scan rows")
    for size, algos in sorted(scans.items()):
        if algos != {"allscan", "allgather", "ring"}:
            problems.append(f"state {size}: algorithms {sorted(algos)}")
    if layers != {"zeco", "zeco-seq", "lasp2", "ring"}:
        problems.append(f"layer algorithms {sorted(layers)}")
    for p in problems:
        print("FAIL:", p)
    if problems:
        return 1
    print(f"bench linear --json at np {args.np}: {sum(len(a) for a in scans.values())} scan "
          f"rows and {len(layers)} layer rows agree with the byte formulas")
    return 0


if __name__ == "__main__":
    sys.exit(main())
