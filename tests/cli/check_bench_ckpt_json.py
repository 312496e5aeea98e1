#!/usr/bin/env python3
"""cli.bench_ckpt_json: `weft bench ckpt --json` prints one object whose keys are documented
(docs/benchmarks.md) and whose numbers are consistent: GB/s = bytes / seconds, ratios = raw
seconds / checkpoint seconds (with one iteration the median of the per-iteration ratios is
that one quotient), the background save holds its caller no longer than it takes
to commit, and the checkpoint directory is left empty.

usage: check_bench_ckpt_json.py -- COMMAND..."""
import json
import math
import os
import subprocess
import sys

KEYS = ["bench", "io", "ranks", "bytes", "tensors", "iters", "save_s", "load_s", "raw_write_s",
        "raw_read_s", "save_gbps", "load_gbps", "raw_write_gbps", "raw_read_gbps", "save_ratio",
        "load_ratio", "bg_block_s", "bg_total_s", "bg_block_ratio"]


def main():
    cmd = sys.argv[sys.argv.index("--") + 1:]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=110)
    if proc.returncode != 0:
        print(proc.stdout)
        return 1
    rows = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
    assert len(rows) == 1, proc.stdout
    r = rows[0]
    missing = [k for k in KEYS if k not in r]
    assert not missing, missing
    assert r["bench"] == "ckpt" and r["io"] == "posix" and r["ranks"] == 2 and r["bytes"] > 0, r
    for what, raw in (("save", "raw_write"), ("load", "raw_read")):
        assert math.isclose(r[what + "_gbps"], r["bytes"] / r[what + "_s"] / 1e9, rel_tol=2e-3), r
        assert math.isclose(r[what + "_ratio"], r[raw + "_s"] / r[what + "_s"], rel_tol=2e-3), r
    assert math.isclose(r["bg_block_ratio"], r["bg_block_s"] / r["raw_write_s"], rel_tol=2e-3), r
    assert 0 < r["bg_block_s"] <= r["bg_total_s"], r
    d = cmd[cmd.index("--dir") + 1]
    assert not os.listdir(d), os.listdir(d)
    print(f"cli.bench_ckpt_json: save {r['save_gbps']:.2f} GB/s ({r['save_ratio']:.0%} of raw), "
          f"load {r['load_gbps']:.2f} GB/s ({r['load_ratio']:.0%} of raw), background save "
          f"blocks {r['bg_block_s']:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
