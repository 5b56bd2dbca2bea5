#!/usr/bin/env python3
"""Independent numpy reference for the forward pass of llama- and qwen2-architecture GGUFs.

Weights are read and dequantised by the PyPI `gguf` package (llama.cpp's gguf-py); nothing
here comes from the dsinfer C code. Every position of the token sequence is computed in one
causal pass, layer by layer (one layer's weights dequantised at a time, so a 1.5B model fits).

  ref_forward.py --model M.gguf --tokens 1,2,3 [--out logits.npy] [--kv-f16] [--f64]
  ref_forward.py --model M.gguf --tokens-file ids.txt --top 5

--out writes float32 logits [n_tokens, n_vocab]; without it the top tokens per position are
printed. --kv-f16 rounds K and V to float16 after RoPE, as the engine's fp16 KV cache does,
so that a comparison can tell cache rounding apart from real differences.
"""
import argparse
import sys
import time

import numpy as np
import gguf
from gguf.quants import dequantize


class Model:
    def __init__(self, path, dtype, act_q8=False):
        self.act_q8 = act_q8
        self.r = gguf.GGUFReader(path)
        self.dtype = dtype
        self.tensors = {t.name: t for t in self.r.tensors}
        self.arch = self.meta("general.architecture")
        if self.arch not in ("llama", "qwen2"):
            sys.exit(f"ref_forward: unsupported architecture {self.arch!r}")
        a = self.arch
        self.n_layer = int(self.meta(f"{a}.block_count"))
        self.n_embd = int(self.meta(f"{a}.embedding_length"))
        self.n_head = int(self.meta(f"{a}.attention.head_count"))
        self.n_kv = int(self.meta(f"{a}.attention.head_count_kv", self.n_head))
        self.head_dim = int(self.meta(f"{a}.attention.key_length", self.n_embd // self.n_head))
        self.n_rot = int(self.meta(f"{a}.rope.dimension_count", self.head_dim))
        self.theta = float(self.meta(f"{a}.rope.freq_base", 10000.0))
        self.eps = float(self.meta(f"{a}.attention.layer_norm_rms_epsilon"))
        if self.meta(f"{a}.rope.scaling.type", "none") not in ("none", None):
            print("ref_forward: warning: rope scaling in metadata is ignored", file=sys.stderr)
        # llama GGUFs: the converter permuted Q/K rows, so pairs are adjacent (2i, 2i+1);
        # qwen2 GGUFs are not permuted and use NEOX pairs (i, i + n_rot/2).
        self.neox = self.arch == "qwen2"
        self.lm_head = "output.weight" if "output.weight" in self.tensors else "token_embd.weight"

    def meta(self, key, default=KeyError):
        f = self.r.fields.get(key)
        if f is None:
            if default is KeyError:
                sys.exit(f"ref_forward: metadata {key} missing")
            return default
        return f.contents()

    def vocab(self):
        return self.meta("tokenizer.ggml.tokens", None)

    def weight(self, name, rows=None):
        """Dequantised tensor as a numpy array [ne1, ne0] (GGUF ne are reversed vs numpy)."""
        t = self.tensors[name]
        data = t.data if rows is None else t.data[rows]
        w = dequantize(np.asarray(data), t.tensor_type)
        ne = [int(x) for x in t.shape]
        want = tuple(reversed(ne)) if rows is None else (len(rows), ne[0])
        if len(ne) == 1:
            want = (ne[0],)
        w = w.reshape(want)
        return w.astype(self.dtype, copy=False)

    def has(self, name):
        return name in self.tensors


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x, pos, n_rot, theta, neox):
    """x: [n_tok, n_heads, head_dim]; rotates the first n_rot dims of every head."""
    half = n_rot // 2
    inv_freq = theta ** (-np.arange(half, dtype=np.float64) * 2.0 / n_rot)
    ang = pos[:, None].astype(np.float64) * inv_freq[None, :]         # [n_tok, half]
    cos = np.cos(ang)[:, None, :].astype(x.dtype)
    sin = np.sin(ang)[:, None, :].astype(x.dtype)
    out = x.copy()
    if neox:
        a, b = x[..., :half], x[..., half:n_rot]
        out[..., :half] = a * cos - b * sin
        out[..., half:n_rot] = a * sin + b * cos
    else:
        a, b = x[..., 0:n_rot:2], x[..., 1:n_rot:2]
        out[..., 0:n_rot:2] = a * cos - b * sin
        out[..., 1:n_rot:2] = a * sin + b * cos
    return out


# The activation format each weight type's dot product uses in the engine (and in llama.cpp):
# 32-element blocks with an fp16 scale (Q8_0 / Q8_1) or 256-element blocks with an fp32 scale
# (Q8_K). None: the activation stays float.
Q8_BLOCK = {
    gguf.GGMLQuantizationType.Q4_0: (32, True), gguf.GGMLQuantizationType.Q5_0: (32, True),
    gguf.GGMLQuantizationType.Q8_0: (32, True), gguf.GGMLQuantizationType.Q4_1: (32, True),
    gguf.GGMLQuantizationType.Q5_1: (32, True), gguf.GGMLQuantizationType.Q4_K: (256, False),
    gguf.GGMLQuantizationType.Q5_K: (256, False), gguf.GGMLQuantizationType.Q6_K: (256, False),
}


def quantize_activation(x, block, fp16_scale):
    """Round x [n, cols] to 8-bit blocks as the engine does before an integer dot product:
    d = amax/127 (stored as fp16 for 32-blocks), q = round-half-even(x / d) in [-127, 127]."""
    xb = x.reshape(x.shape[0], -1, block).astype(np.float32)
    d = np.abs(xb).max(axis=-1, keepdims=True) / np.float32(127)
    if fp16_scale:
        d = d.astype(np.float16).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(d > 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
    q = np.clip(np.rint(xb * inv), -127, 127)
    return (q * d).reshape(x.shape).astype(x.dtype)


def linear(m, x, name):
    if m.act_q8:
        fmt = Q8_BLOCK.get(m.tensors[name + ".weight"].tensor_type)
        if fmt:
            x = quantize_activation(x, *fmt)
    y = x @ m.weight(name + ".weight").T
    if m.has(name + ".bias"):
        y = y + m.weight(name + ".bias")
    return y


def forward(m, tokens, kv_f16=False):
    n = len(tokens)
    pos = np.arange(n)
    x = m.weight("token_embd.weight", rows=np.asarray(tokens))             # [n, n_embd]
    hd, nh, nkv = m.head_dim, m.n_head, m.n_kv
    group = nh // nkv
    causal = np.triu(np.full((n, n), -np.inf, dtype=m.dtype), k=1)
    for il in range(m.n_layer):
        p = f"blk.{il}."
        h = rms_norm(x, m.weight(p + "attn_norm.weight"), m.eps)
        q = linear(m, h, p + "attn_q").reshape(n, nh, hd)
        k = linear(m, h, p + "attn_k").reshape(n, nkv, hd)
        v = linear(m, h, p + "attn_v").reshape(n, nkv, hd)
        q = rope(q, pos, m.n_rot, m.theta, m.neox)
        k = rope(k, pos, m.n_rot, m.theta, m.neox)
        if kv_f16:
            k = k.astype(np.float16).astype(m.dtype)
            v = v.astype(np.float16).astype(m.dtype)
        att = np.empty((n, nh, hd), dtype=m.dtype)
        for hh in range(nh):
            kh, vh = k[:, hh // group, :], v[:, hh // group, :]
            s = (q[:, hh, :] @ kh.T) / np.sqrt(hd) + causal                # [n, n]
            s = np.exp(s - s.max(axis=1, keepdims=True))
            att[:, hh, :] = (s / s.sum(axis=1, keepdims=True)) @ vh
        x = x + linear(m, att.reshape(n, nh * hd), p + "attn_output")
        h = rms_norm(x, m.weight(p + "ffn_norm.weight"), m.eps)
        g = linear(m, h, p + "ffn_gate")
        u = linear(m, h, p + "ffn_up")
        x = x + linear(m, g / (1.0 + np.exp(-g)) * u, p + "ffn_down")
    x = rms_norm(x, m.weight("output_norm.weight"), m.eps)
    # LM head in row chunks so that a 150k-token vocabulary never needs a full fp32 copy.
    t = m.tensors[m.lm_head]
    n_vocab = int(t.shape[1])
    logits = np.empty((n, n_vocab), dtype=np.float32)
    for r0 in range(0, n_vocab, 16384):
        rows = np.arange(r0, min(r0 + 16384, n_vocab))
        xh = x
        fmt = Q8_BLOCK.get(t.tensor_type) if m.act_q8 else None
        if fmt:
            xh = quantize_activation(x, *fmt)
        logits[:, rows] = xh @ m.weight(m.lm_head, rows=rows).T
    return logits


def parse_tokens(text):
    return [int(s) for s in text.replace(",", " ").split()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--tokens", help="comma-separated token ids")
    g.add_argument("--tokens-file", help="file of token ids (whitespace or comma separated)")
    ap.add_argument("--out", help="write logits [n_tokens, n_vocab] float32 to this .npy")
    ap.add_argument("--kv-f16", action="store_true", help="round K,V to fp16 after RoPE")
    ap.add_argument("--f64", action="store_true", help="compute in float64 (default float32)")
    ap.add_argument("--act-q8", action="store_true",
                    help="round each matrix product's input to 8-bit blocks as the engine's fast path does")
    ap.add_argument("--top", type=int, default=5, help="tokens to print per position")
    args = ap.parse_args()

    tokens = parse_tokens(args.tokens if args.tokens else open(args.tokens_file).read())
    t0 = time.time()
    m = Model(args.model, np.float64 if args.f64 else np.float32, act_q8=args.act_q8)
    n_vocab = int(m.tensors[m.lm_head].shape[1])
    if not tokens or min(tokens) < 0 or max(tokens) >= n_vocab:
        sys.exit(f"ref_forward: token ids must be in [0, {n_vocab})")
    logits = forward(m, tokens, kv_f16=args.kv_f16)
    dt = time.time() - t0
    print(f"ref_forward: {m.arch}, {m.n_layer} layers, {len(tokens)} tokens, "
          f"{'f64' if args.f64 else 'f32'}{', fp16 KV' if args.kv_f16 else ''}: {dt:.2f} s",
          file=sys.stderr)
    if args.out:
        np.save(args.out, logits)
        return
    vocab = m.vocab()
    for i, tok in enumerate(tokens):
        top = np.argsort(-logits[i])[:args.top]
        name = vocab[tok] if vocab else str(tok)
        cells = "  ".join(f"{t}:{(vocab[t] if vocab else '')!r}={logits[i, t]:.3f}" for t in top)
        print(f"{i:4d} {tok:6d} {name!r:16s} -> {cells}")


if __name__ == "__main__":
    main()
