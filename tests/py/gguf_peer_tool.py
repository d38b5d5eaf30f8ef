#!/usr/bin/env python3
"""Peer side of the GGUF tests: the official `gguf` package produces references and checks llmc's files.

Called by tests/formats/test_gguf_peer.cpp:
  blocks OUTDIR               random blocks of every decodable type + gguf.quants.dequantize of them
  dump GGUF OUTDIR ROWS       gguf.quants.dequantize of the first ROWS rows of every tensor of a GGUF
  check GGUF MANIFEST.json    read an llmc-written GGUF with gguf.GGUFReader and compare with the manifest
Exit status 0 = success; every comparison is printed.
"""
import json
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

# Byte offsets of the f16 scale fields of each block type: they get finite random values so that
# the comparison exercises real numbers rather than NaN/Inf from random bits.
F16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}
N_BLOCKS = 64


def cmd_blocks(outdir):
    rng = np.random.default_rng(20241125)
    manifest = []
    for qtype, fields in F16_FIELDS.items():
        block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
        raw = rng.integers(0, 256, size=(N_BLOCKS, type_size), dtype=np.uint8)
        for off in fields:
            raw[:, off:off + 2] = rng.normal(0, 1, N_BLOCKS).astype(np.float16).view(np.uint8).reshape(N_BLOCKS, 2)
        values = dequantize(raw, qtype).astype(np.float32)
        assert values.shape == (N_BLOCKS, block_size)
        raw.tofile(os.path.join(outdir, f"{qtype.name}.bin"))
        values.tofile(os.path.join(outdir, f"{qtype.name}.f32"))
        manifest.append(f"{qtype.name} {int(qtype)} {N_BLOCKS}")
    # plain float types
    x = rng.normal(0, 3, 4096).astype(np.float32)
    for qtype, raw in ((T.F16, x.astype(np.float16).view(np.uint8)), (T.BF16, quantize(x, T.BF16))):
        raw = np.ascontiguousarray(raw).reshape(-1)
        dequantize(raw, qtype).astype(np.float32).tofile(os.path.join(outdir, f"{qtype.name}.f32"))
        raw.tofile(os.path.join(outdir, f"{qtype.name}.bin"))
        manifest.append(f"{qtype.name} {int(qtype)} {x.size}")
    with open(os.path.join(outdir, "manifest.txt"), "w") as f:
        f.write("\n".join(manifest) + "\n")
    print(f"wrote {len(manifest)} block sets ({N_BLOCKS} blocks each) to {outdir}")
    return 0


def cmd_dump(path, outdir, rows):
    reader = gguf.GGUFReader(path)
    lines = []
    for i, t in enumerate(reader.tensors):
        data = t.data if t.data.ndim > 1 else t.data.reshape(1, -1)
        data = data.reshape(-1, data.shape[-1])[:rows]
        values = dequantize(data, t.tensor_type).astype(np.float32)
        values.tofile(os.path.join(outdir, f"{i}.f32"))
        lines.append(f"{t.name} {t.tensor_type.name} {values.shape[0]} {values.shape[1]} {i}.f32")
    with open(os.path.join(outdir, "manifest.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"dumped the first {rows} rows of {len(lines)} tensors of {path}")
    return 0


def field_value(field):
    v = field.contents()
    return v


def cmd_check(path, manifest_path):
    with open(manifest_path) as f:
        manifest = json.load(f)
    reader = gguf.GGUFReader(path)
    failures = 0
    tensors = {t.name: t for t in reader.tensors}
    if len(tensors) != len(manifest["tensors"]):
        print(f"FAIL: {len(tensors)} tensors in the file, {len(manifest['tensors'])} expected")
        failures += 1
    for spec in manifest["tensors"]:
        t = tensors.get(spec["name"])
        if t is None:
            print(f"FAIL: tensor {spec['name']} missing")
            failures += 1
            continue
        shape = [int(d) for d in reversed(t.shape)]
        if t.tensor_type.name != spec["type"] or shape != spec["shape"]:
            print(f"FAIL: {t.name}: type {t.tensor_type.name} shape {shape}, expected {spec['type']} {spec['shape']}")
            failures += 1
            continue
        rows = int(np.prod(spec["shape"][:-1]))
        cols = spec["shape"][-1]
        ours = np.fromfile(spec["llmc_values"], dtype=np.float32).reshape(rows, cols)
        source = np.fromfile(spec["source_values"], dtype=np.float32).reshape(rows, cols)
        data = t.data.reshape(rows, -1)
        theirs = dequantize(data, t.tensor_type).astype(np.float32).reshape(rows, cols)
        diff = float(np.max(np.abs(theirs - ours))) if ours.size else 0.0
        ok = diff <= 1e-6
        note = f"max |gguf - llmc| = {diff:.3g}"
        # The stored bytes must equal what gguf's own reference quantizer/converter makes of the source.
        if t.tensor_type in (T.Q8_0, T.Q4_0, T.F16, T.BF16):
            if t.tensor_type == T.F16:
                expected = source.astype(np.float16).view(np.uint8)
            else:
                expected = quantize(source, t.tensor_type)
            same = np.array_equal(np.asarray(data).view(np.uint8).reshape(rows, -1), expected.reshape(rows, -1))
            ok = ok and same
            note += f", bytes {'==' if same else '!='} gguf.quants.quantize(source)"
        elif t.tensor_type == T.F32:
            same = np.array_equal(theirs, source)
            ok = ok and same
            note += f", {'==' if same else '!='} source"
        print(f"{'ok  ' if ok else 'FAIL'} {t.name} {t.tensor_type.name} {shape}: {note}")
        failures += 0 if ok else 1
    for key, want in manifest["metadata"].items():
        field = reader.fields.get(key)
        if field is None:
            print(f"FAIL: metadata key {key} missing")
            failures += 1
            continue
        got = field_value(field)
        if isinstance(want, float):
            ok = abs(float(got) - want) <= 1e-6 * max(1.0, abs(want))
        elif isinstance(want, list):
            ok = list(got) == want
            got = f"list of {len(list(got))}"
            want = f"list of {len(want)}"
        else:
            ok = got == want
        print(f"{'ok  ' if ok else 'FAIL'} metadata {key} = {got!r} (expected {want!r})")
        failures += 0 if ok else 1
    print(f"{failures} failure(s)")
    return 1 if failures else 0


def main(argv):
    if len(argv) >= 3 and argv[1] == "blocks":
        return cmd_blocks(argv[2])
    if len(argv) >= 5 and argv[1] == "dump":
        return cmd_dump(argv[2], argv[3], int(argv[4]))
    if len(argv) >= 4 and argv[1] == "check":
        return cmd_check(argv[2], argv[3])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
