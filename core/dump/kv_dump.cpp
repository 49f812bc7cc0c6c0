#include "core/dump/kv_dump.h"

#include <fmt/format.h>

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

std::string dump_tensor_name(const DumpMeta& m, int l, const char* what) {
  return layer_name(m.layer_ids.empty() ? l : m.layer_ids.at(l), what);
}

int dump_q_rows(const DumpMeta& m, const DumpShape& s, const TensorInfo& q0) {
  // Queries stored at q_positions only: [q_heads, len(q_positions), head_dim] in the file.
  return !m.q_positions.empty() && q0.shape.size() == 3 && q0.shape[1] != s.tokens ? static_cast<int>(m.q_positions.size())
                                                                                     : s.tokens;
}

std::map<std::string, std::string> dump_metadata(const DumpMeta& m, const DumpShape& s, DType dtype) {
  std::map<std::string, std::string> md = m.extra;
  md["format"] = kDumpFormat;
  md["model_id"] = m.model_id;
  md["config_digest"] = m.config_digest;
  if (!m.token_ids.empty()) md["token_ids"] = json(m.token_ids).dump();
  md["prompt"] = m.prompt;
  md["workload"] = m.workload;
  md["dtype"] = std::string(dtype_name(dtype));
  md["kvscope_version"] = KVSCOPE_VERSION;
  md["rope_style"] = m.rope_style;
  md["rope_theta"] = fmt::format("{}", m.rope_theta);
  md["layers"] = std::to_string(s.layers);
  md["kv_heads"] = std::to_string(s.kv_heads);
  md["q_heads"] = std::to_string(s.q_heads);
  md["head_dim"] = std::to_string(s.head_dim);
  md["tokens"] = std::to_string(s.tokens);
  if (!m.layer_ids.empty()) md["layer_ids"] = json(m.layer_ids).dump();
  if (!m.q_positions.empty()) md["q_positions"] = json(m.q_positions).dump();
  return md;
}

KvDump read_dump_header(const SafetensorsFile& file, const DumpLoadOptions& opts) {
  const std::string& path = file.path();
  const auto& md = file.metadata();
  KvDump d;

  auto int_list = [&](const char* key) {
    std::vector<int> out;
    auto it = md.find(key);
    if (it == md.end()) return out;
    try {
      json a = json::parse(it->second);
      if (!a.is_array() || a.empty()) throw std::invalid_argument("not an array");
      for (auto& x : a) {
        const int v = x.get<int>();
        if (v < 0 || (!out.empty() && v <= out.back())) throw std::invalid_argument("not ascending");
        out.push_back(v);
      }
    } catch (const std::exception&) {
      fail(path, "__metadata__.{} is not an ascending JSON array of non-negative integers", key);
    }
    return out;
  };
  d.meta.layer_ids = int_list("layer_ids");
  d.meta.q_positions = int_list("q_positions");
  // Shape: from the first layer's k (and q), then cross-checked with the metadata when present.
  const std::string k0_name = dump_tensor_name(d.meta, 0, "k");
  const TensorInfo* k0 = file.find(k0_name);
  if (!k0) fail(path, "not a KV dump: tensor '{}' is missing", k0_name);
  if (k0->shape.size() != 3) fail(path, "tensor '{}' has shape {}, expected [kv_heads, tokens, head_dim]", k0_name, shape_str(k0->shape));
  d.shape.kv_heads = static_cast<int>(k0->shape[0]);
  d.shape.tokens = static_cast<int>(k0->shape[1]);
  d.shape.head_dim = static_cast<int>(k0->shape[2]);
  if (d.shape.kv_heads == 0 || d.shape.tokens == 0 || d.shape.head_dim == 0)
    fail(path, "tensor '{}' is empty (shape {})", k0_name, shape_str(k0->shape));
  if (!d.meta.q_positions.empty() && d.meta.q_positions.back() >= d.shape.tokens)
    fail(path, "__metadata__.q_positions names position {} but the dump has {} tokens", d.meta.q_positions.back(), d.shape.tokens);
  if (d.meta.layer_ids.empty()) {
    while (file.find(layer_name(d.shape.layers, "k"))) ++d.shape.layers;
  } else {
    d.shape.layers = static_cast<int>(d.meta.layer_ids.size());
  }
  if (const TensorInfo* q0 = file.find(dump_tensor_name(d.meta, 0, "q"))) {
    const int q_tokens = dump_q_rows(d.meta, d.shape, *q0);
    if (q0->shape.size() != 3 || q0->shape[1] != q_tokens || q0->shape[2] != d.shape.head_dim)
      fail(path, "tensor '{}' has shape {}, expected [q_heads, {}, {}]", q0->name, shape_str(q0->shape), q_tokens, d.shape.head_dim);
    d.shape.q_heads = static_cast<int>(q0->shape[0]);
    if (d.shape.q_heads == 0 || d.shape.q_heads % d.shape.kv_heads != 0)
      fail(path, "q_heads {} is not a positive multiple of kv_heads {}", d.shape.q_heads, d.shape.kv_heads);
  } else if (opts.require_q) {
    fail(path, "dump has no queries (tensor '{}' is missing); attention metrics need Q", dump_tensor_name(d.meta, 0, "q"));
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
                                "head_dim", "tokens", "layer_ids", "q_positions"};
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
