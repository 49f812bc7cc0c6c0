#!/usr/bin/env python3
"""Independent check of kvscope's replay numbers: a numpy-only Llama forward (float64) with two KV
caches, the fp16 reference and KIVI's streaming fake quantization, fed the same tokens.

Usage: numpy_replay.py MODEL_DIR ITEM_JSON OUT_JSON
  ITEM_JSON: {"prompt": [ids], "target": [ids], "bits": 2, "group": 32, "residual": 128}
  OUT_JSON:  {"steps": N, "kl": mean KL(P||Q), "dp_mean": mean dp, "dp_rms": ..., "ppl": PPL(Q),
              "ppl_ref": PPL(P), "kl_steps": [...]}

Written from the definitions, not from kvscope's code (docs/REPLAY.md, docs/ALGORITHMS.md §2.2):
- the model: HF Llama (RMSNorm x / sqrt(mean x^2 + eps) * w, rotate_half RoPE, GQA head j reads KV
  head j // G, causal softmax attention with scale 1/sqrt(d), SwiGLU MLP, tied or separate lm_head);
- both caches store K and V rounded to float16; attention reads float64 copies of what they hold;
- KIVI streaming (sink 0): after every forward, keys are quantized in whole blocks of R = residual
  tokens (per channel, groups of `group` consecutive tokens), values token by token once older than
  the last R tokens (per token, groups of `group` channels); the prefill attends to exact fp16 K/V;
- asymmetric quantization of a group with min m and max M (float32 arithmetic, as a runtime does):
  scale s = f16((M - m) / (2^b - 1)) (1 if not > 0), zero z = f16(m),
  code = round-half-even(clip((x - z) / s, 0, 2^b - 1)), x^ = code * s + z.
"""
import json
import math
import os
import struct
import sys

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # small matrices: BLAS threads only contend with the test runner

import numpy as np  # noqa: E402


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    kinds = {"F32": np.float32, "F16": np.float16}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        if info["dtype"] == "BF16":
            raw = np.frombuffer(data[a:b], dtype=np.uint16).astype(np.uint32) << 16
            arr = raw.view(np.float32)
        else:
            arr = np.frombuffer(data[a:b], dtype=kinds[info["dtype"]])
        out[name] = arr.reshape(info["shape"]).astype(np.float64)
    return out


class Model:
    def __init__(self, d):
        cfg = json.load(open(d + "/config.json"))
        self.L = cfg["num_hidden_layers"]
        self.H = cfg["num_attention_heads"]
        self.Hkv = cfg.get("num_key_value_heads", self.H)
        self.dim = cfg["hidden_size"] // self.H if "head_dim" not in cfg else cfg["head_dim"]
        self.eps = cfg["rms_norm_eps"]
        w = load_safetensors(d + "/model.safetensors")
        self.w = w
        self.embed = w["model.embed_tokens.weight"]
        self.lm_head = w.get("lm_head.weight", self.embed)
        half = self.dim // 2
        self.inv_freq = 1.0 / (cfg.get("rope_theta", 10000.0) ** (2.0 * np.arange(half) / self.dim))

    def rms(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def rope(self, x, pos):  # x [heads, n, d], pos [n]
        ang = np.outer(pos, self.inv_freq)
        cos = np.concatenate([np.cos(ang)] * 2, axis=-1)
        sin = np.concatenate([np.sin(ang)] * 2, axis=-1)
        half = self.dim // 2
        rot = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
        return x * cos + rot * sin

    def forward(self, tokens, cache):
        """Appends the tokens' K/V to `cache` and returns the logits after the last token."""
        n, start = len(tokens), cache.length()
        x = self.embed[np.array(tokens)]
        pos = np.arange(start, start + n)
        G = self.H // self.Hkv
        for l in range(self.L):
            p = "model.layers.%d." % l
            h = self.rms(x, self.w[p + "input_layernorm.weight"])
            q = (h @ self.w[p + "self_attn.q_proj.weight"].T).reshape(n, self.H, self.dim).transpose(1, 0, 2)
            k = (h @ self.w[p + "self_attn.k_proj.weight"].T).reshape(n, self.Hkv, self.dim).transpose(1, 0, 2)
            v = (h @ self.w[p + "self_attn.v_proj.weight"].T).reshape(n, self.Hkv, self.dim).transpose(1, 0, 2)
            q, k = self.rope(q, pos), self.rope(k, pos)
            K, V = cache.append(l, k, v)  # [Hkv, total, d] what attention reads
            total = K.shape[1]
            out = np.empty((self.H, n, self.dim))
            mask = np.where(np.arange(total)[None, :] <= pos[:, None], 0.0, -np.inf)
            for j in range(self.H):
                s = q[j] @ K[j // G].T / math.sqrt(self.dim) + mask
                s = np.exp(s - s.max(axis=-1, keepdims=True))
                out[j] = (s / s.sum(axis=-1, keepdims=True)) @ V[j // G]
            x = x + out.transpose(1, 0, 2).reshape(n, -1) @ self.w[p + "self_attn.o_proj.weight"].T
            h = self.rms(x, self.w[p + "post_attention_layernorm.weight"])
            g = h @ self.w[p + "mlp.gate_proj.weight"].T
            u = h @ self.w[p + "mlp.up_proj.weight"].T
            x = x + (g / (1 + np.exp(-g)) * u) @ self.w[p + "mlp.down_proj.weight"].T
        cache.after_forward()
        return self.rms(x[-1], self.w["model.norm.weight"]) @ self.lm_head.T


def f16(a):
    return np.asarray(a, dtype=np.float32).astype(np.float16).astype(np.float32)


def fake_quant(x, bits, axis):
    """Asymmetric b-bit quantization of float32 groups: x [g_tokens, g_channels]; one group per
    column (axis 0, per channel) or per row (axis 1, per token)."""
    qmax = np.float32(2 ** bits - 1)
    mn = x.min(axis=axis, keepdims=True)
    mx = x.max(axis=axis, keepdims=True)
    s = f16((mx - mn) / qmax)
    s = np.where(s > 0, s, np.float32(1))
    z = f16(mn)
    code = np.rint(np.clip((x - z) / s, np.float32(0), qmax)).astype(np.float32)
    return (code * s + z).astype(np.float32)


class Cache:
    """fp16 K/V per layer [Hkv, T, d] (float32 holding fp16 values); with `bits`, KIVI's streaming rule."""

    def __init__(self, layers, bits=None, group=32, residual=128):
        self.k = [None] * layers
        self.v = [None] * layers
        self.bits, self.group, self.R = bits, group, residual
        self.k_done = [0] * layers  # keys quantized so far (whole blocks of R)
        self.v_done = [0] * layers

    def length(self):
        return 0 if self.k[0] is None else self.k[0].shape[1]

    def append(self, l, k, v):
        k, v = f16(k), f16(v)
        self.k[l] = k if self.k[l] is None else np.concatenate([self.k[l], k], axis=1)
        self.v[l] = v if self.v[l] is None else np.concatenate([self.v[l], v], axis=1)
        return self.k[l].astype(np.float64), self.v[l].astype(np.float64)

    def after_forward(self):
        if self.bits is None:
            return
        g = self.group
        for l in range(len(self.k)):
            T = self.k[l].shape[1]
            while T - self.k_done[l] >= self.R:  # a full block of R fp16 keys: per channel, groups of g tokens
                a = self.k_done[l]
                for t0 in range(a, a + self.R, g):
                    for h in range(self.k[l].shape[0]):
                        self.k[l][h, t0:t0 + g] = fake_quant(self.k[l][h, t0:t0 + g], self.bits, 0)
                self.k_done[l] += self.R
            while T - self.v_done[l] > self.R:  # values older than the last R tokens: per token, groups of g channels
                t = self.v_done[l]
                for h in range(self.v[l].shape[0]):
                    for c0 in range(0, self.v[l].shape[2], g):
                        self.v[l][h, t:t + 1, c0:c0 + g] = fake_quant(self.v[l][h, t:t + 1, c0:c0 + g], self.bits, 1)
                self.v_done[l] += 1


def log_softmax(z):
    m = z.max()
    return z - (m + math.log(np.exp(z - m).sum()))


def main():
    model_dir, item_path, out_path = sys.argv[1:4]
    item = json.load(open(item_path))
    m = Model(model_dir)
    ref, quant = Cache(m.L), Cache(m.L, item["bits"], item["group"], item["residual"])
    lr, lq = m.forward(item["prompt"], ref), m.forward(item["prompt"], quant)
    kls, dps, nll, nll_ref = [], [], 0.0, 0.0
    target = item["target"]
    for s, y in enumerate(target):
        pr, pq = log_softmax(lr), log_softmax(lq)
        kls.append(float(np.sum(np.exp(pr) * (pr - pq))))
        dps.append(float(math.exp(pq[y]) - math.exp(pr[y])))
        nll -= pq[y]
        nll_ref -= pr[y]
        if s + 1 < len(target):
            lr, lq = m.forward([y], ref), m.forward([y], quant)
    n = len(target)
    out = {"steps": n, "kl": sum(kls) / n, "dp_mean": sum(dps) / n, "dp_rms": math.sqrt(sum(d * d for d in dps) / n),
           "ppl": math.exp(nll / n), "ppl_ref": math.exp(nll_ref / n), "kl_steps": kls}
    json.dump(out, open(out_path, "w"))


if __name__ == "__main__":
    main()
