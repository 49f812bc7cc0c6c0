#!/usr/bin/env python3
"""Adds seeds cut from the real files in ../shared to the fuzz corpora (never committed: the
models are large and not ours). Each seed stays small so executions stay fast:
  safetensors, dump  the real headers of model.safetensors with only the small tensors kept
  config             every config.json
  sentencepiece      tokenizer.model cut at a piece boundary (first 400 pieces + the specs)
  llama2c_vocab      tok512.bin whole, tokenizer.bin cut to its first 400 tokens
  policy             assets/presets/*.json of the repo
Usage: make_corpus.py <shared-dir> <repo-dir> <corpus-root>"""
import json, os, shutil, struct, sys

shared, repo, root = sys.argv[1:4]
models = os.path.join(shared, "models")


def out(target, name, data):
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def small_safetensors(path, max_bytes=4096):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
        new, blob = {}, b""
        for name, t in header.items():
            if name == "__metadata__":
                new[name] = t
                continue
            b, e = t["data_offsets"]
            if e - b > max_bytes:
                continue
            f.seek(base + b)
            new[name] = dict(t, data_offsets=[len(blob), len(blob) + e - b])
            blob += f.read(e - b)
    h = json.dumps(new).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + blob


def varint(buf, i):
    v = s = 0
    while True:
        b = buf[i]; i += 1
        v |= (b & 0x7F) << s; s += 7
        if b < 0x80:
            return v, i


def cut_spm(data, keep=400):
    """Keeps the first `keep` pieces (field 1) and every other top-level field."""
    i, pieces, out_ = 0, 0, b""
    while i < len(data):
        start = i
        key, i = varint(data, i)
        wt = key & 7
        if wt == 2:
            ln, i = varint(data, i); i += ln
        elif wt == 0:
            _, i = varint(data, i)
        elif wt == 5:
            i += 4
        elif wt == 1:
            i += 8
        else:
            break
        if key >> 3 == 1:
            pieces += 1
            if pieces > keep:
                continue
        out_ += data[start:i]
    return out_


def cut_llama2c(data, keep=400):
    i = 4
    for _ in range(keep):
        if i + 8 > len(data):
            break
        ln = struct.unpack_from("<i", data, i + 4)[0]
        i += 8 + ln
    return data[:i]


for m in sorted(os.listdir(models)):
    d = os.path.join(models, m)
    if not os.path.isdir(d):
        continue
    st = os.path.join(d, "model.safetensors")
    if os.path.exists(st):
        seed = small_safetensors(st)
        out("safetensors", m + ".safetensors", seed)
        out("dump", m + ".safetensors", seed)
    cfg = os.path.join(d, "config.json")
    if os.path.exists(cfg):
        out("config", m + ".json", open(cfg, "rb").read())
    spm = os.path.join(d, "tokenizer.model")
    if os.path.exists(spm):
        out("sentencepiece", m + ".model", cut_spm(open(spm, "rb").read()))
    for name in ("tok512.bin", "tokenizer.bin"):
        p = os.path.join(d, name)
        if os.path.exists(p):
            data = open(p, "rb").read()
            out("llama2c_vocab", m + "-" + name, data if len(data) < 16384 else cut_llama2c(data))

presets = os.path.join(repo, "assets", "presets")
for name in sorted(os.listdir(presets)):
    if name.endswith(".json"):
        out("policy", name, open(os.path.join(presets, name), "rb").read())
