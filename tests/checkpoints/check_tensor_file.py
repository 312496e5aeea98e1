#!/usr/bin/env python3
"""Cross-checks weft tensor files against h5py and h5dump, in both directions.

usage: check_tensor_file.py FIXTURE_EXE H5DUMP

1. FIXTURE_EXE write PATH writes a file; h5py must read the bf16 dataset as a float type whose
   values (after .astype(float32)) and raw 16-bit patterns are right, the f32/i64/i32 datasets
   and the attributes must be right, and `h5dump -H` must describe the file.
2. h5py writes a file the way other tools do (custom bf16 type, f32 without a `dtype`
   attribute, variable- and fixed-length string attributes, f64 and f16 datasets, a lying
   `dtype` attribute) and FIXTURE_EXE foreign PATH must read or refuse each as documented.

The value pattern is the one in tf_test_common.c (tf_test_value), computed here again.
Files go to a scratch directory under the working directory (the build tree), removed on
success.
"""
import os
import shutil
import subprocess
import sys
import tempfile

import h5py
import numpy as np

FAILURES = []


def check(cond, msg):
    if not cond:
        FAILURES.append(msg)
        print("FAIL:", msg, file=sys.stderr)


def pattern(dtype, shape, salt=0):
    """tf_test_value over a whole tensor, as numpy (bf16 returned as float32 values)."""
    lin = np.arange(int(np.prod(shape, dtype=np.int64)), dtype=np.int64).reshape(shape)
    if dtype == "f32":
        return (lin % 100003).astype(np.float32) * np.float32(0.25) - np.float32(3) + salt
    if dtype == "bf16":  # at most 8 significant bits: exact in bf16
        return (lin % 251).astype(np.float32) * np.float32(0.5) - np.float32(60) + salt
    if dtype == "i32":
        return (lin * 7 - 11 + salt).astype(np.int32)
    if dtype == "i64":
        return lin * 1000003 + (1 << 40) + salt
    raise ValueError(dtype)


def bf16_bits(values_f32):
    """bf16 bit patterns of float32 values that are exact in bf16."""
    return (np.asarray(values_f32, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)


def bf16_type():
    t = h5py.h5t.IEEE_F32LE.copy()
    t.set_fields(15, 7, 8, 0, 7)
    t.set_offset(0)
    t.set_precision(16)
    t.set_size(2)
    t.set_ebias(127)
    return t


def raw_bits(ds):
    """The stored 16-bit patterns of a 2-byte dataset, read with its own type (no conversion)."""
    out = np.empty(ds.shape, dtype=np.uint16)
    ds.id.read(h5py.h5s.ALL, h5py.h5s.ALL, out, mtype=ds.id.get_type())
    return out


def check_weft_file(path, h5dump):
    with h5py.File(path, "r") as f:
        ds = f["/params/bf16"]
        check(ds.dtype.kind == "f", f"bf16 dataset read as {ds.dtype}, not a float type")
        t = ds.id.get_type()
        check(t.get_size() == 2 and t.get_ebias() == 127 and t.get_fields() == (15, 7, 8, 0, 7),
              f"bf16 HDF5 type: size {t.get_size()} ebias {t.get_ebias()} "
              f"fields {t.get_fields()}")
        want = pattern("bf16", (3, 5))
        got = ds[()].astype(np.float32)
        check(got.shape == (3, 5) and np.array_equal(got, want), f"bf16 values {got}")
        check(np.array_equal(ds.astype("float32")[()], want), "bf16 via astype on read")
        check(np.array_equal(raw_bits(ds), bf16_bits(want)), "bf16 raw bits")
        check(ds.attrs["dtype"] == "bf16", f"bf16 dtype attribute {ds.attrs['dtype']!r}")

        edge = f["/params/bf16_edge"]
        bits = raw_bits(edge)
        want_bits = [0x0000, 0x8000, 0x7F80, 0xFF80, None, 0x7F7F, 0x0001, 0x3EAB]
        for i, w in enumerate(want_bits):
            if w is None:
                check((bits[i] & 0x7F80) == 0x7F80 and (bits[i] & 0x7F) != 0,
                      f"edge {i}: NaN stored as {bits[i]:#06x}")
            else:
                check(bits[i] == w, f"edge {i}: stored {bits[i]:#06x}, want {w:#06x}")
        vals = edge[()].astype(np.float32)
        expect = (np.array([w if w is not None else 0x7FC0 for w in want_bits], dtype=np.uint32)
                  << 16).view(np.float32)
        same = (vals == expect) | (np.isnan(vals) & np.isnan(expect))
        check(bool(same.all()), f"edge values decode as {vals}, want {expect}")
        check(np.signbit(vals[1]), "-0.0 keeps its sign")

        f32 = f["/params/f32"]
        check(f32.dtype == np.dtype("<f4"), f"f32 dtype {f32.dtype}")
        check(np.array_equal(f32[()], pattern("f32", (2, 3, 4))), "f32 values")
        check(f32.attrs["dtype"] == "f32", "f32 dtype attribute")
        check(f32.attrs["checksum"] == 1234567890123, "dataset int64 attribute")
        i64 = f["/optim/i64"]
        check(i64.dtype == np.dtype("<i8"), f"i64 dtype {i64.dtype}")
        check(np.array_equal(i64[()], pattern("i64", (6,))), f"i64 values {i64[()]}")
        check(i64.attrs["dtype"] == "i64", "i64 dtype attribute")
        i32 = f["/state/i32"]
        check(i32.shape == () and i32[()] == 42 and i32.dtype == np.dtype("<i4"),
              f"i32 scalar {i32[()]!r} {i32.dtype}")
        check(f.attrs["format"] == "weft-tensor-file", f"format {f.attrs['format']!r}")
        check(f.attrs["version"] == 1 and f.attrs["version"].dtype == np.int64, "version")
        check(f.attrs["lr"] == 0.125, "lr")

    out = subprocess.run([h5dump, "-H", path], capture_output=True, text=True)
    check(out.returncode == 0, f"h5dump -H exit {out.returncode}: {out.stderr}")
    check("16-bit little-endian floating-point" in out.stdout,
          "h5dump describes the bf16 type:\n" + out.stdout)
    for name in ("bf16", "f32", "i64", "i32", "bf16_edge"):
        check(f'DATASET "{name}"' in out.stdout, f"h5dump lists {name}")
    out = subprocess.run([h5dump, "-d", "/params/bf16", path], capture_output=True, text=True)
    check(out.returncode == 0 and "-60" in out.stdout, "h5dump prints the bf16 values")


def write_foreign_file(path):
    with h5py.File(path, "w") as f:
        grp = f.create_group("py")
        space = h5py.h5s.create_simple((3, 5))
        dsid = h5py.h5d.create(grp.id, b"bf16", bf16_type(), space)
        dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, bf16_bits(pattern("bf16", (3, 5))),
                   mtype=bf16_type())
        grp["bf16"].attrs["dtype"] = "bf16"
        grp["f32_plain"] = pattern("f32", (2, 3, 4))
        grp["f32_plain"].attrs["scale"] = np.float32(0.5)
        grp["i64"] = pattern("i64", (6,))
        grp["f64"] = np.zeros(6, dtype=np.float64)
        grp["f16"] = np.zeros(6, dtype=np.float16)
        grp["lying"] = np.zeros(6, dtype=np.float32)
        grp["lying"].attrs["dtype"] = "i32"
        f.attrs["vlen"] = "variable \u2713"
        f.attrs["fixed"] = np.bytes_("fixed-length")
        f.attrs["count32"] = np.int32(-17)
        f.attrs["array"] = np.arange(3)


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    exe, h5dump = sys.argv[1], sys.argv[2]
    work = tempfile.mkdtemp(prefix="tf-py-", dir=os.getcwd())
    path = os.path.join(work, "fixture.h5")
    run = subprocess.run([exe, "write", path])
    check(run.returncode == 0, f"{exe} write exited {run.returncode}")
    if run.returncode == 0:
        check_weft_file(path, h5dump)
    foreign = os.path.join(work, "foreign.h5")
    write_foreign_file(foreign)
    run = subprocess.run([exe, "foreign", foreign])
    check(run.returncode == 0, f"{exe} foreign exited {run.returncode}")
    if FAILURES:
        print(f"check_tensor_file: {len(FAILURES)} failure(s); files kept in {work}",
              file=sys.stderr)
        return 1
    shutil.rmtree(work)
    print("check_tensor_file: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
