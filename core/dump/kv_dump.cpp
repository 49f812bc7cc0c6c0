#include "core/dump/kv_dump.h"

#include <nlohmann/json.hpp>

#include "core/dump/dump_reader.h"
#include "core/dump/dump_writer.h"
#include "core/tensor/safetensors.h"
#include "core/util/error.h"

namespace kvscope {

using json = nlohmann::json;

static std::string layer_name(int l, const char* what) { return "layers." + std::to_string(l) + "." + what; }

static int meta_int(const std::map<std::string, std::string>& m, const std::string& key, const std::string& path) {
  auto it = m.find(key);
  if (it == m.end()) return -1;
  try {
    size_t pos = 0;
    int v = std::stoi(it->second, &pos);
    if (pos != it->second.size() || v < 0) throw std::invalid_argument(key);
    return v;
  } catch (const std::exception&) {
    fail(path, "__metadata__.{} = '{}' is not a non-negative integer", key, it->second);
  }
}

KvDump read_dump_header(const SafetensorsFile& file, const DumpLoadOptions& opts) {
  const std::string& path = file.path();
  const auto& md = file.metadata();
  KvDump d;

  // Shape: from layers.0.k (and layers.0.q), then cross-checked with the metadata when present.
  const TensorInfo* k0 = file.find("layers.0.k");
  if (!k0) fail(path, "not a KV dump: tensor 'layers.0.k' is missing");
  if (k0->shape.size() != 3) fail(path, "tensor 'layers.0.k' has shape {}, expected [kv_heads, tokens, head_dim]", shape_str(k0->shape));
  d.shape.kv_heads = static_cast<int>(k0->shape[0]);
  d.shape.tokens = static_cast<int>(k0->shape[1]);
  d.shape.head_dim = static_cast<int>(k0->shape[2]);
  if (d.shape.kv_heads == 0 || d.shape.tokens == 0 || d.shape.head_dim == 0)
    fail(path, "tensor 'layers.0.k' is empty (shape {})", shape_str(k0->shape));
  while (file.find(layer_name(d.shape.layers, "k"))) ++d.shape.layers;
  if (const TensorInfo* q0 = file.find("layers.0.q")) {
    if (q0->shape.size() != 3 || q0->shape[1] != d.shape.tokens || q0->shape[2] != d.shape.head_dim)
      fail(path, "tensor 'layers.0.q' has shape {}, expected [q_heads, {}, {}]", shape_str(q0->shape), d.shape.tokens, d.shape.head_dim);
    d.shape.q_heads = static_cast<int>(q0->shape[0]);
    if (d.shape.q_heads == 0 || d.shape.q_heads % d.shape.kv_heads != 0)
      fail(path, "q_heads {} is not a positive multiple of kv_heads {}", d.shape.q_heads, d.shape.kv_heads);
  } else if (opts.require_q) {
    fail(path, "dump has no queries (tensor 'layers.0.q' is missing); attention metrics need Q");
  }
  struct Check { const char* key; int value; };
  for (Check c : {Check{"layers", d.shape.layers}, Check{"kv_heads", d.shape.kv_heads}, Check{"head_dim", d.shape.head_dim},
                  Check{"tokens", d.shape.tokens}}) {
    int m = meta_int(md, c.key, path);
    if (m >= 0 && m != c.value) fail(path, "__metadata__.{} = {} but the tensors say {}", c.key, m, c.value);
  }

  // Metadata (all optional for dumps from other tools).
  auto get = [&](const char* key) -> std::string {
    auto it = md.find(key);
    return it == md.end() ? std::string() : it->second;
  };
  d.meta.model_id = get("model_id");
  d.meta.config_digest = get("config_digest");
  d.meta.prompt = get("prompt");
  d.meta.workload = get("workload");
  d.meta.kvscope_version = get("kvscope_version");
  d.meta.dtype = std::string(dtype_name(k0->dtype));
  if (auto s = get("rope_style"); !s.empty()) {
    if (s != "rotate_half" && s != "interleaved") fail(path, "__metadata__.rope_style '{}' is neither rotate_half nor interleaved", s);
    d.meta.rope_style = s;
  }
  if (auto s = get("rope_theta"); !s.empty()) {
    try {
      d.meta.rope_theta = std::stod(s);
    } catch (const std::exception&) {
      fail(path, "__metadata__.rope_theta '{}' is not a number", s);
    }
  }
  if (auto s = get("token_ids"); !s.empty()) {
    try {
      json ids = json::parse(s);
      if (!ids.is_array()) throw std::invalid_argument("not an array");
      for (auto& x : ids) d.meta.token_ids.push_back(x.get<int32_t>());
    } catch (const std::exception&) {
      fail(path, "__metadata__.token_ids is not a JSON array of integers");
    }
    if (static_cast<int>(d.meta.token_ids.size()) != d.shape.tokens)
      fail(path, "__metadata__.token_ids has {} ids but the dump has {} tokens", d.meta.token_ids.size(), d.shape.tokens);
  }
  static const char* known[] = {"format", "model_id", "config_digest", "token_ids", "prompt", "workload", "dtype",
                                "kvscope_version", "rope_style", "rope_theta", "layers", "kv_heads", "q_heads",
                                "head_dim", "tokens"};
  for (auto& [k, v] : md) {
    bool is_known = false;
    for (auto* kk : known) is_known = is_known || k == kk;
    if (!is_known) d.meta.extra[k] = v;
  }

  return d;
}

KvDump load_dump(const std::string& path, const DumpLoadOptions& opts) {
  DumpReader r(path, opts);  // validates every tensor's name, shape and dtype
  KvDump d;
  d.shape = r.shape();
  d.meta = r.meta();
  d.layers.resize(d.shape.layers);
  for (int l = 0; l < d.shape.layers; ++l) {
    d.layers[l] = r.load_layer(l);
    r.release_layer(l);  // the f32 copy is what stays resident, not the mapped pages too
  }
  return d;
}

void validate_dump(const KvDump& d, const std::string& where) {
  const auto& s = d.shape;
  if (s.layers <= 0 || s.kv_heads <= 0 || s.head_dim <= 0 || s.tokens <= 0)
    fail(where, "dump shape has a zero dimension (layers {}, kv_heads {}, head_dim {}, tokens {})", s.layers, s.kv_heads, s.head_dim, s.tokens);
  if (static_cast<int>(d.layers.size()) != s.layers) fail(where, "dump has {} layers, shape says {}", d.layers.size(), s.layers);
  size_t kv = static_cast<size_t>(s.kv_heads) * s.tokens * s.head_dim;
  size_t q = static_cast<size_t>(s.q_heads) * s.tokens * s.head_dim;
  for (int l = 0; l < s.layers; ++l) {
    const auto& L = d.layers[l];
    if (L.k.size() != kv || L.v.size() != kv) fail(where, "layer {}: k/v size does not match the shape", l);
    if (!L.q.empty() && L.q.size() != q) fail(where, "layer {}: q size does not match the shape", l);
    if (!L.k_pre_rope.empty() && L.k_pre_rope.size() != kv) fail(where, "layer {}: k_pre_rope size does not match the shape", l);
    if (!L.q_pre_rope.empty() && L.q_pre_rope.size() != q) fail(where, "layer {}: q_pre_rope size does not match the shape", l);
  }
  if (!d.meta.token_ids.empty() && static_cast<int>(d.meta.token_ids.size()) != s.tokens)
    fail(where, "{} token ids for {} tokens", d.meta.token_ids.size(), s.tokens);
}

void save_dump(const std::string& path, const KvDump& d, DType dtype) {
  validate_dump(d, path);
  std::vector<DumpLayerTensors> layout;
  for (const auto& L : d.layers) layout.push_back({!L.q.empty(), !L.k_pre_rope.empty(), !L.q_pre_rope.empty()});
  DumpWriter w(path, d.shape, d.meta, dtype, layout);  // one layer converted at a time
  for (int l = 0; l < d.shape.layers; ++l) w.write_layer(l, d.layers[l]);
  w.finish();
}

}  // namespace kvscope
