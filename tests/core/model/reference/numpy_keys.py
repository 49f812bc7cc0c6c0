#!/usr/bin/env python3
"""Independent check of a kvscope dump's keys: a float64 numpy forward of HF Llama/Qwen2 semantics
(RMSNorm, q/k/v biases when present, rotate_half RoPE with llama3/linear scaling, GQA causal
attention, SwiGLU) over the first LAYERS layers of a model folder, compared with the dump's
post-RoPE keys `layers.{L}.k`. Reads only the tensors it needs (memory-mapped), so it runs on the
first layers of an 8B-shaped checkpoint.

Usage: numpy_keys.py MODEL_DIR DUMP.safetensors [--layers 2] [--tokens N]
Prints the max abs difference per layer relative to max |K|, and exits 1 when it exceeds the
tolerance (F16 dumps: 2e-3, BF16: 1e-2, F32: 1e-4; all relative to max |K| of the layer)."""
import argparse, json, struct, sys
import numpy as np

TOL = {"F16": 2e-3, "BF16": 1e-2, "F32": 1e-4}


class St:
    """Minimal safetensors reader over np.memmap (F32/F16/BF16)."""
    def __init__(self, path):
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            self.h = json.loads(f.read(n))
        self.meta = self.h.pop("__metadata__", {})
        self.mm = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)

    def get(self, name):
        e = self.h[name]
        b, end = e["data_offsets"]
        raw = self.mm[b:end]
        if e["dtype"] == "F32":
            a = raw.view(np.float32)
        elif e["dtype"] == "F16":
            a = raw.view(np.float16).astype(np.float32)
        elif e["dtype"] == "BF16":
            a = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            raise SystemExit(f"{name}: dtype {e['dtype']} not handled")
        return a.reshape(e["shape"]).astype(np.float64)


def inv_freq(cfg, d):
    f = 1.0 / cfg.get("rope_theta", 10000.0) ** (np.arange(0, d, 2, dtype=np.float64) / d)
    rs = cfg.get("rope_scaling") or {}
    kind = rs.get("rope_type", rs.get("type"))
    if kind == "linear":
        f = f / rs["factor"]
    elif kind == "llama3":
        old, fac = rs["original_max_position_embeddings"], rs["factor"]
        lo, hi = rs["low_freq_factor"], rs["high_freq_factor"]
        wl = 2 * np.pi / f
        smooth = (old / wl - lo) / (hi - lo)
        scaled = np.where(wl > old / lo, f / fac, f)
        mid = (wl <= old / lo) & (wl >= old / hi)
        f = np.where(mid, (1 - smooth) * f / fac + smooth * f, scaled)
    return f


def rope(x, pos, f):  # x [heads, T, d]
    a = pos[:, None] * f[None, :]
    cos, sin = np.concatenate([np.cos(a)] * 2, -1), np.concatenate([np.sin(a)] * 2, -1)
    h = x.shape[-1] // 2
    rot = np.concatenate([-x[..., h:], x[..., :h]], -1)
    return x * cos + rot * sin


def rms(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model"); ap.add_argument("dump")
    ap.add_argument("--layers", type=int, default=2); ap.add_argument("--tokens", type=int, default=0)
    a = ap.parse_args()
    cfg = json.load(open(f"{a.model}/config.json"))
    w = St(f"{a.model}/model.safetensors")
    dump = St(a.dump)
    ids = json.loads(dump.meta["token_ids"])
    T = a.tokens or len(ids)
    ids = ids[:T]
    H, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d = cfg.get("head_dim") or cfg["hidden_size"] // H
    eps = cfg.get("rms_norm_eps", 1e-6)
    f = inv_freq(cfg, d)
    pos = np.arange(T, dtype=np.float64)
    x = w.get("model.embed_tokens.weight")[ids]  # [T, hidden]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    ok = True
    for l in range(a.layers):
        p = f"model.layers.{l}."
        def proj(name, inp):
            y = inp @ w.get(p + name + ".weight").T
            return y + w.get(p + name + ".bias") if (p + name + ".bias") in w.h else y
        h = rms(x, w.get(p + "input_layernorm.weight"), eps)
        q = proj("self_attn.q_proj", h).reshape(T, H, d).transpose(1, 0, 2)
        k = proj("self_attn.k_proj", h).reshape(T, Hkv, d).transpose(1, 0, 2)
        v = proj("self_attn.v_proj", h).reshape(T, Hkv, d).transpose(1, 0, 2)
        q, k = rope(q, pos, f), rope(k, pos, f)
        name = f"layers.{l}.k"
        got = dump.get(name)[:, :T, :]
        rel = np.abs(got - k).max() / np.abs(k).max()
        tol = TOL[dump.h[name]["dtype"]]
        print(f"{name}: max |dump - numpy| / max |K| = {rel:.2e} (tolerance {tol:g}, {T} tokens, max |K| {np.abs(k).max():.3g})")
        ok &= bool(rel <= tol)
        if l + 1 == a.layers:
            break
        G = H // Hkv
        kk, vv = np.repeat(k, G, 0), np.repeat(v, G, 0)
        s = q @ kk.transpose(0, 2, 1) / np.sqrt(d) + mask
        s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True)
        o = (s @ vv).transpose(1, 0, 2).reshape(T, H * d)
        x = x + o @ w.get(p + "self_attn.o_proj.weight").T
        h = rms(x, w.get(p + "post_attention_layernorm.weight"), eps)
        g, u = h @ w.get(p + "mlp.gate_proj.weight").T, h @ w.get(p + "mlp.up_proj.weight").T
        x = x + (g / (1 + np.exp(-g)) * u) @ w.get(p + "mlp.down_proj.weight").T
    print("keys match" if ok else "KEYS DIFFER")
    sys.exit(0 if ok else 1)


main()
