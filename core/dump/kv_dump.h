#pragma once
// The KV dump: one .safetensors file holding the captured cache of one prompt/workload.
//   layers.{L}.k          [kv_heads, tokens, head_dim]   post-RoPE keys (what a HF cache stores)
//   layers.{L}.v          [kv_heads, tokens, head_dim]
//   layers.{L}.q          [q_heads,  tokens, head_dim]   post-RoPE queries (optional, needed for attention metrics)
//   layers.{L}.k_pre_rope [kv_heads, tokens, head_dim]   optional (KVSmooth, SKVQ pre-RoPE)
//   layers.{L}.q_pre_rope [q_heads,  tokens, head_dim]   optional
// __metadata__ (all strings): format, model_id, config_digest, token_ids (JSON array), prompt,
// workload, dtype, kvscope_version, rope_style, rope_theta; optional layer_ids (JSON array: the
// model layers kept, named layers.{id}.*; absent = 0..layers-1) and q_positions (JSON array: the
// token positions whose queries are stored, so q is [q_heads, len(q_positions), head_dim]). A dump written by a user's own hook
// with the same tensor names and no metadata opens too: the shape is read off the tensors.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/tensor/dtype.h"

namespace kvscope {

inline constexpr const char* kDumpFormat = "kvscope-kv-dump/1";

struct DumpShape {
  int layers = 0;
  int kv_heads = 0;
  int q_heads = 0;  // 0 when the dump has no queries
  int head_dim = 0;
  int tokens = 0;
  int group() const { return kv_heads ? q_heads / kv_heads : 0; }  // query heads per KV head (GQA)
};

struct DumpMeta {
  std::string model_id;
  std::string config_digest;
  std::vector<int32_t> token_ids;
  std::string prompt;
  std::string workload;
  std::string dtype = "F16";          // storage dtype of the tensors
  std::string kvscope_version;
  std::string rope_style = "rotate_half";  // or "interleaved"
  double rope_theta = 10000.0;
  std::vector<int> layer_ids;    // model layer of each dump layer (empty = 0, 1, ...)
  std::vector<int> q_positions;  // positions whose queries the file holds (empty = all); after
                                 // load_dump, q is [q_heads, tokens, head_dim] with zero rows elsewhere
  std::map<std::string, std::string> extra;  // any other metadata keys, kept verbatim
};

// One layer, all in f32, row-major in the shapes above. Empty vectors = tensor absent.
struct DumpLayer {
  std::vector<float> k, v, q, k_pre_rope, q_pre_rope;
};

struct KvDump {
  DumpShape shape;
  DumpMeta meta;
  std::vector<DumpLayer> layers;

  bool has_q() const { return !layers.empty() && !layers[0].q.empty(); }
  bool has_k_pre_rope() const { return !layers.empty() && !layers[0].k_pre_rope.empty(); }
  // Pointer to the [tokens, head_dim] matrix of one head.
  const float* k(int layer, int kv_head) const { return head(layers[layer].k, kv_head); }
  const float* v(int layer, int kv_head) const { return head(layers[layer].v, kv_head); }
  const float* q(int layer, int q_head) const { return head(layers[layer].q, q_head); }
  size_t head_elems() const { return static_cast<size_t>(shape.tokens) * shape.head_dim; }

 private:
  const float* head(const std::vector<float>& t, int h) const { return t.data() + h * head_elems(); }
};

struct DumpLoadOptions {
  bool require_q = false;        // error if the dump has no layers.{L}.q
  bool load_q = true;            // skip loading Q (saves memory when only tensor metrics are wanted)
  bool load_pre_rope = true;
};

// Validates everything (names, shapes, dtypes, metadata) and throws Error("<path>: <problem>").
KvDump load_dump(const std::string& path, const DumpLoadOptions& opts = {});
// Writes atomically (temp file + rename). `dtype` is F16, BF16 or F32.
void save_dump(const std::string& path, const KvDump& dump, DType dtype = DType::F16);
// The __metadata__ save_dump writes (also used by the streaming capture).
// "layers.{id}.{what}" of dump layer l (id from meta.layer_ids when the dump keeps a subset).
std::string dump_tensor_name(const DumpMeta& meta, int l, const char* what);
std::map<std::string, std::string> dump_metadata(const DumpMeta& meta, const DumpShape& shape, DType dtype);
// Checks internal consistency of an in-memory dump (sizes match the shape); throws Error(where: ...).
void validate_dump(const KvDump& dump, const std::string& where);

}  // namespace kvscope
