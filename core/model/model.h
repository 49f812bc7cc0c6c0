#pragma once
// The Llama-family forward (Llama, Mistral, Qwen2, Qwen3), CPU, f32 compute. Weights stay at
// their stored precision (F32, F16, BF16) in the checkpoint's memory map; each matrix product
// converts them as it reads (core/tensor/matmul.h). This header exposes plain floats only.
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/model/config.h"

namespace kvscope {

// Keys/values of one layer as the attention reads them: element (head h, position t, dim d) is
// at k[h * head_stride + t * head_dim + d]; `tokens` positions are valid.
struct KvLayerView {
  const float* k = nullptr;
  const float* v = nullptr;
  int tokens = 0;
  int64_t head_stride = 0;
};

// The KV cache the forward reads and extends. A quantized cache implements the same interface
// and hands back its dequantized values, exactly what a packed runtime would attend to.
class KvCache {
 public:
  virtual ~KvCache() = default;
  // Positions stored in `layer`.
  virtual int length(int layer) const = 0;
  // Appends n positions to `layer`; k and v are [kv_heads, n, head_dim] row-major, post-RoPE.
  virtual void append(int layer, const float* k, const float* v, int n) = 0;
  virtual KvLayerView view(int layer) const = 0;
  virtual void clear() = 0;
};

// Plain f32 cache, grows by doubling.
class DenseKvCache : public KvCache {
 public:
  DenseKvCache(int layers, int kv_heads, int head_dim, int reserve_tokens = 256);
  int length(int layer) const override { return layers_[layer].tokens; }
  void append(int layer, const float* k, const float* v, int n) override;
  KvLayerView view(int layer) const override;
  void clear() override;

 private:
  struct Layer {
    std::vector<float> k, v;
    int tokens = 0, capacity = 0;
  };
  void grow(Layer& l, int need);
  int kv_heads_, head_dim_, reserve_;
  std::vector<Layer> layers_;
};

// What a capture hook receives for each layer and forward call: the new positions
// [start, start + n), every tensor [heads, n, head_dim] row-major f32.
struct LayerActivations {
  int layer = 0;
  int start = 0;
  int n = 0;
  const float* q = nullptr;           // post-RoPE queries   [q_heads, n, head_dim]
  const float* k = nullptr;           // post-RoPE keys      [kv_heads, n, head_dim]
  const float* v = nullptr;           // values              [kv_heads, n, head_dim]
  const float* q_pre_rope = nullptr;  // after q_norm (Qwen3), before RoPE
  const float* k_pre_rope = nullptr;
};
using CaptureHook = std::function<void(const LayerActivations&)>;

struct ForwardOptions {
  bool all_logits = false;     // logits for every new position, else only the last one
  bool skip_logits = false;    // no LM head at all (capture needs none): forward returns {}
  int last_layer = -1;         // stop after this layer (needs skip_logits; -1 = all layers)
  const CaptureHook* capture = nullptr;
};

class Model {
 public:
  // Loads a model folder (config.json + safetensors); every shape is checked before any compute.
  static std::unique_ptr<Model> load(const std::string& dir);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const;
  const std::string& dir() const;
  std::string storage_dtype() const;  // of the checkpoint file ("F32", "F16", "BF16")
  int64_t weight_bytes() const;       // bytes (as stored) of the weights one decode step reads
  // Bytes the loaded model keeps: the mapped weights as stored (resident once touched) plus the
  // small tensors converted to f32 (norms, biases). No f32 copy of any matrix is kept.
  int64_t resident_bytes() const;

  std::unique_ptr<KvCache> new_cache(int reserve_tokens = 256) const;

  // Runs `tokens` at positions cache.length(0), ... ; appends their K/V to `cache`.
  // Returns logits: [vocab] for the last position, or [n, vocab] with all_logits.
  std::vector<float> forward(std::span<const int32_t> tokens, KvCache& cache, const ForwardOptions& opts = {}) const;

  // Greedy continuation: prefill `prompt`, then max_new argmax tokens (no stop on EOS).
  std::vector<int32_t> generate_greedy(std::span<const int32_t> prompt, int max_new) const;

 private:
  Model();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvscope
