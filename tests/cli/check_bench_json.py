#!/usr/bin/env python3
"""Runs `weft bench comm --json` (the command after `--`) and checks its stdout.

Every stdout line must be one JSON object with the documented keys; every operation asked
for must appear; no element may be wrong; the byte counters must agree with the formula;
and algbw/busbw must follow from size and time with the nccl-tests factors.

Usage: check_bench_json.py --np P [--ops a,b] -- mpirun.sh P weft bench comm ... --json
"""
import argparse
import json
import math
import subprocess
import sys

KEYS = {
    "op": str, "size_bytes": int, "count": int, "dtype": str, "mem": str, "device": str,
    "ranks": int, "nodes": int, "iters": int, "warmup": int, "time_us": (int, float),
    "algbw_gbps": (int, float), "busbw_gbps": (int, float), "sent_bytes": int,
    "sent_bytes_min": int, "expected_sent_bytes": int, "wrong": int, "memcpy_gbps": (int, float),
}
ESIZE = {"f32": 4, "bf16": 2}


def bus_factor(op, p):
    return {"allreduce": 2.0 * (p - 1) / p, "allgather": (p - 1) / p,
            "alltoall": (p - 1) / p, "sendrecv": 1.0}[op]


def check_line(number, line, np):
    problems = []
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        return None, [f"line {number} is not JSON ({err}): {line!r}"]
    if not isinstance(row, dict):
        return None, [f"line {number} is not a JSON object: {line!r}"]
    for key, kind in KEYS.items():
        if key not in row:
            problems.append(f"line {number}: key '{key}' missing")
        elif not isinstance(row[key], kind) or isinstance(row[key], bool):
            problems.append(f"line {number}: '{key}' = {row[key]!r} has the wrong type")
    if problems:
        return None, problems
    extra = set(row) - set(KEYS)
    if extra:
        problems.append(f"line {number}: undocumented keys {sorted(extra)}")
    if row["op"] not in ("allreduce", "allgather", "alltoall", "sendrecv"):
        problems.append(f"line {number}: unknown op {row['op']!r}")
        return None, problems
    if row["ranks"] != np:
        problems.append(f"line {number}: ranks = {row['ranks']}, expected {np}")
    if row["wrong"] != 0:
        problems.append(f"line {number}: {row['wrong']} wrong element(s) in {row['op']} "
                        f"of {row['size_bytes']} bytes")
    if row["size_bytes"] != row["count"] * ESIZE.get(row["dtype"], 0):
        problems.append(f"line {number}: size_bytes != count * element size")
    if not row["sent_bytes"] == row["sent_bytes_min"] == row["expected_sent_bytes"]:
        problems.append(f"line {number}: byte counters {row['sent_bytes_min']}.."
                        f"{row['sent_bytes']} differ from the formula's "
                        f"{row['expected_sent_bytes']}")
    if row["time_us"] <= 0:
        problems.append(f"line {number}: time_us = {row['time_us']} is not positive")
    else:
        algbw = row["size_bytes"] / (row["time_us"] * 1e-6) / 1e9
        busbw = algbw * bus_factor(row["op"], np)
        # Printed with 4 decimals of microseconds and 6 of GB/s: compare loosely.
        if not math.isclose(algbw, row["algbw_gbps"], rel_tol=1e-2, abs_tol=2e-6):
            problems.append(f"line {number}: algbw {row['algbw_gbps']} != size/time {algbw}")
        if not math.isclose(busbw, row["busbw_gbps"], rel_tol=1e-2, abs_tol=2e-6):
            problems.append(f"line {number}: busbw {row['busbw_gbps']} != formula {busbw}")
    return row, problems


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--np", type=int, required=True)
    parser.add_argument("--ops", default="allreduce,allgather,alltoall,sendrecv")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    run = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         timeout=600)
    sys.stderr.write(run.stderr)
    if run.returncode != 0:
        print(f"FAIL: {' '.join(command)} exited {run.returncode}\n{run.stdout}")
        return 1
    lines = run.stdout.splitlines()
    problems, seen = [], {}
    if not lines:
        problems.append("no JSON lines on stdout")
    for number, line in enumerate(lines, 1):
        row, found = check_line(number, line, args.np)
        problems += found
        if row:
            seen.setdefault(row["op"], []).append(row["size_bytes"])
    for op in args.ops.split(","):
        sizes = seen.get(op, [])
        if not sizes:
            problems.append(f"no line for {op}")
        elif sizes != sorted(set(sizes)):
            problems.append(f"{op}: sizes not strictly increasing: {sizes}")
    if "# wrong elements in total: 0" not in run.stderr:
        problems.append("the table on stderr does not end with zero wrong elements")
    for problem in problems:
        print("FAIL:", problem)
    if not problems:
        print(f"check_bench_json: {len(lines)} lines, ops {sorted(seen)}: passed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
