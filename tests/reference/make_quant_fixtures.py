#!/usr/bin/env python3
"""Write tests/data/quant_fixtures.dat: raw GGUF blocks plus gguf-py's dequantised floats.

An independent check of src/quant.c's block layouts: the floats come from the `gguf` PyPI
package (llama.cpp's gguf-py, numpy implementation), not from our code.

  python3 tests/reference/make_quant_fixtures.py [out_path]

For the types gguf-py can quantise (F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) the raw blocks
are gguf-py's quantisation of random floats; for every type there are also blocks of random
bytes with finite random fp16 scales (the K types can only be dequantised by gguf-py, so for
them this is the only source). Deterministic (fixed seed).

File format (little-endian):
  "DSQF"  u32 version (1)  u32 n_entries
  per entry: u32 ggml_type  u32 n_elements  u32 n_bytes  u8 raw[n_bytes]  f32 values[n_elements]
"""
import struct
import sys

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as T
import gguf.quants as gq

rng = np.random.default_rng(20240611)


def rand_f16_scales(count, lo=1e-3, hi=0.1, signed=True):
    """Finite fp16 scales as raw little-endian bytes, magnitude log-uniform in [lo, hi]."""
    mag = np.exp(rng.uniform(np.log(lo), np.log(hi), count))
    if signed:
        mag *= rng.choice([-1.0, 1.0], count)
    return mag.astype(np.float16).view(np.uint8).reshape(count, 2)


def random_blocks(qt, nblk):
    """Random raw blocks of type qt whose scale fields are finite fp16 values."""
    bs, ts = GGML_QUANT_SIZES[qt]
    raw = rng.integers(0, 256, size=(nblk, ts), dtype=np.uint8)
    if qt in (T.Q4_0, T.Q5_0, T.Q8_0):
        raw[:, 0:2] = rand_f16_scales(nblk)
    elif qt in (T.Q4_1, T.Q5_1):
        raw[:, 0:2] = rand_f16_scales(nblk)
        raw[:, 2:4] = rand_f16_scales(nblk, 1e-2, 1.0)
    elif qt in (T.Q4_K, T.Q5_K):
        raw[:, 0:2] = rand_f16_scales(nblk, 1e-4, 1e-2, signed=False)
        raw[:, 2:4] = rand_f16_scales(nblk, 1e-4, 1e-2, signed=False)
    elif qt == T.Q6_K:
        raw[:, ts - 2:ts] = rand_f16_scales(nblk, 1e-4, 1e-2)
    else:
        raise ValueError(qt)
    return raw


def random_floats(n):
    # mixture of magnitudes so blocks see different scales; a few exact zeros
    x = rng.standard_normal(n).astype(np.float32) * np.exp(rng.uniform(-4, 2, n)).astype(np.float32)
    x[rng.integers(0, n, n // 50)] = 0.0
    return x.astype(np.float32)


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else "tests/data/quant_fixtures.dat"
    entries = []

    def add(qt, raw):
        raw = np.ascontiguousarray(raw)
        raw = raw.view(np.uint8).reshape(-1)     # reinterpret (F16 comes back as float16)
        bs, ts = GGML_QUANT_SIZES[qt]
        vals = gq.dequantize(raw, qt).astype(np.float32).reshape(-1)
        assert raw.size % ts == 0 and vals.size == raw.size // ts * bs
        entries.append((int(qt), vals.size, raw.tobytes(), vals.tobytes()))

    # F32: identity, included for completeness
    add(T.F32, random_floats(64).view(np.uint8))
    # F16: quantised floats plus specials (zeros, subnormals, max, inf); no NaN (payload
    # handling differs between converters and is irrelevant to model weights)
    f = np.concatenate([random_floats(200),
                        np.array([0.0, -0.0, 6e-8, -6e-8, 3e-5, 65504.0, -65504.0,
                                  np.inf, -np.inf, 1.0, -2.5, 1e-3], dtype=np.float32)])
    add(T.F16, gq.quantize(f, T.F16))
    bits = rng.integers(0, 0x10000, 256, dtype=np.uint32).astype(np.uint16)
    bits = bits[(bits & 0x7c00) != 0x7c00][:200]             # drop inf/NaN patterns
    add(T.F16, bits.view(np.uint8))
    # BF16: quantised floats (round to nearest even) and random non-NaN bit patterns
    add(T.BF16, gq.quantize(random_floats(256), T.BF16))
    bits = rng.integers(0, 0x10000, 256, dtype=np.uint32).astype(np.uint16)
    bits = bits[(bits & 0x7f80) != 0x7f80][:200]
    add(T.BF16, bits.view(np.uint8))

    for qt in (T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0):
        add(qt, gq.quantize(random_floats(32 * 8).reshape(2, -1), qt))
        add(qt, random_blocks(qt, 6))
    for qt in (T.Q4_K, T.Q5_K, T.Q6_K):
        add(qt, random_blocks(qt, 4))

    with open(out_path, "wb") as fh:
        fh.write(b"DSQF" + struct.pack("<II", 1, len(entries)))
        for qt, n, raw, vals in entries:
            fh.write(struct.pack("<III", qt, n, len(raw)))
            fh.write(raw)
            fh.write(vals)
    total = sum(12 + len(r) + len(v) for _, _, r, v in entries) + 12
    print(f"wrote {out_path}: {len(entries)} entries, {total} bytes")


if __name__ == "__main__":
    main()
