#!/usr/bin/env python3
"""Write the small synthetic GGUF seed files for tests/fuzz/fuzz_gguf.c into tests/fuzz/seeds/.

Standard library only. Each file is valid and under 4 KB; the fuzzer mutates from these."""
import os
import struct

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
       BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}
# ggml type id -> (block elements, block bytes)
TYPES = {"F32": (0, 1, 4), "F16": (1, 1, 2), "Q4_0": (2, 32, 18), "Q4_1": (3, 32, 20),
         "Q8_0": (8, 32, 34), "Q4_K": (12, 256, 144), "Q6_K": (14, 256, 210)}


def s(x):
    b = x.encode() if isinstance(x, str) else x
    return struct.pack("<Q", len(b)) + b


def value(t, v):
    if t == STR:
        return s(v)
    if t == ARR:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(value(et, i) for i in items)
    return struct.pack(FMT[t], v)


def gguf(kvs, tensors, version=3, alignment=32):
    """kvs: [(key, type, value)]; tensors: [(name, [ne...], type name)]."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for k, t, v in kvs:
        out += s(k) + struct.pack("<I", t) + value(t, v)
    data, off = b"", 0
    for i, (name, ne, tname) in enumerate(tensors):
        tid, blk, nb = TYPES[tname]
        n = 1
        for d in ne:
            n *= d
        size = n // blk * nb
        out += s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        out += struct.pack("<IQ", tid, off)
        data += bytes((i * 37 + j) & 0xFF for j in range(size))
        off += size
        pad = -off % alignment
        if i + 1 < len(tensors):
            data += b"\0" * pad
            off += pad
    out += b"\0" * (-len(out) % alignment)
    return out + data


def main():
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")
    os.makedirs(here, exist_ok=True)
    seeds = {
        "empty.gguf": gguf([], []),
        "all_types.gguf": gguf(
            [("general.architecture", STR, "llama"), ("u8", U8, 200), ("i8", I8, -3),
             ("u16", U16, 60000), ("i16", I16, -300), ("u32", U32, 7), ("i32", I32, -7),
             ("f32", F32, 0.5), ("bool", BOOL, True), ("u64", U64, 1 << 40),
             ("i64", I64, -(1 << 40)), ("f64", F64, 2.5),
             ("strs", ARR, (STR, ["a", "", "\u00e9t\u00e9"])),
             ("i32s", ARR, (I32, [1, -2, 3])), ("bools", ARR, (BOOL, [True, False])),
             ("nested", ARR, (ARR, [(U8, [1, 2]), (STR, ["x"]), (ARR, [(F32, [])])]))],
            [("a", [8, 2], "F32"), ("b", [32], "Q8_0")]),
        "llama_like.gguf": gguf(
            [("general.architecture", STR, "llama"), ("general.name", STR, "seed"),
             ("general.alignment", U32, 64), ("llama.block_count", U32, 1),
             ("llama.embedding_length", U32, 256), ("llama.attention.head_count", U32, 4),
             ("llama.rope.freq_base", F32, 10000.0),
             ("tokenizer.ggml.model", STR, "gpt2"),
             ("tokenizer.ggml.tokens", ARR, (STR, ["<|endoftext|>", "a", "b", "ab", "\u0120the"])),
             ("tokenizer.ggml.token_type", ARR, (I32, [3, 1, 1, 1, 1])),
             ("tokenizer.ggml.merges", ARR, (STR, ["a b"])),
             ("tokenizer.ggml.add_bos_token", BOOL, False)],
            [("token_embd.weight", [256, 5], "Q4_1"), ("blk.0.attn_norm.weight", [256], "F32"),
             ("blk.0.ffn_down.weight", [256, 2], "Q4_K"), ("output_norm.weight", [256], "F16")],
            alignment=64),
        "v2_q6k.gguf": gguf([("general.architecture", STR, "qwen2"), ("qwen2.block_count", U64, 2)],
                            [("x", [256, 1, 1, 2], "Q6_K"), ("y", [32, 3], "Q4_0")], version=2),
    }
    for name, blob in seeds.items():
        assert len(blob) < 4096, name
        with open(os.path.join(here, name), "wb") as f:
            f.write(blob)
        print(f"{name}: {len(blob)} bytes")


if __name__ == "__main__":
    main()
