#pragma once
// A synthetic KV dump with the structure of a real one, for demos, tests and benchmarks:
//  - keys: per-channel Gaussian pre-RoPE keys with nonzero channel means, a few massive outlier
//    channels in the slowly rotating (low-frequency) RoPE pairs of chosen (layer, head)s, then
//    rotate-half RoPE; each head is scaled so its max |K| hits a target (kvmix study values for
//    the planted heads, far smaller elsewhere);
//  - a sink token at position 0 whose key has a large norm and whose value is small;
//  - values: near-Gaussian with per-channel spread;
//  - queries aligned with the centred key of one earlier token (often the sink or a recent
//    token) plus noise, so attention is peaked as in trained models.
// The default is the Qwen2.5-0.5B shape (24 layers, 2 KV heads, 14 query heads, head_dim 64) at
// 4096 tokens with the outlier heads the kvmix study measured (ALGORITHMS.md §6.2).
#include <cstdint>
#include <string>
#include <vector>

#include "core/dump/kv_dump.h"
#include "core/tensor/rope.h"

namespace kvscope {

struct PlantedHead {
  int layer, head;
  float max_abs_k;  // target max |K| of the head
};

struct SynthOptions {
  int layers = 24, kv_heads = 2, q_heads = 14, head_dim = 64, tokens = 4096;
  uint64_t seed = 0;
  double rope_theta = 1000000.0;  // Qwen2.5
  // kvmix study, C4: the six outlier K heads and their max |K| (the next head, (3,1), has 26.2).
  std::vector<PlantedHead> planted = {{8, 0, 220.4f}, {1, 1, 149.9f}, {0, 1, 130.5f},
                                      {0, 0, 125.7f}, {2, 1, 63.7f},  {2, 0, 41.8f}};
  float other_max_lo = 6.0f, other_max_hi = 18.0f;  // max |K| of the other heads, uniform in this range
  bool queries = true;
  bool k_pre_rope = true;
  bool q_pre_rope = false;
};

KvDump make_synthetic_dump(const SynthOptions& opts);
// The same dump written straight to a .safetensors file one layer at a time (memory holds one
// layer, so 32k-token dumps of 8B shapes fit): the bytes save_dump(make_synthetic_dump()) writes.
void write_synthetic_dump(const std::string& path, const SynthOptions& opts, DType dtype = DType::F16);


}  // namespace kvscope
