#include "core/model/capture.h"

#include <algorithm>
#include <cstring>
#include <array>
#include <set>

#include "core/metrics/attention.h"
#include "core/model/model.h"
#include "core/tensor/safetensors_writer.h"
#include "core/util/error.h"

namespace kvscope {

KvDump capture_dump(const Model& model, std::span<const int32_t> ids, const CaptureOptions& opts) {
  const ModelConfig& c = model.config();
  if (ids.empty()) fail(model.dir(), "nothing to capture: the token sequence is empty");
  const int T = static_cast<int>(ids.size());
  KvDump dump;
  dump.shape.layers = c.num_layers;
  dump.shape.kv_heads = c.num_kv_heads;
  dump.shape.q_heads = opts.with_q ? c.num_heads : 0;
  dump.shape.head_dim = c.head_dim;
  dump.shape.tokens = T;
  dump.meta.model_id = opts.model_id;
  dump.meta.config_digest = config_digest(model.dir());
  dump.meta.token_ids.assign(ids.begin(), ids.end());
  dump.meta.prompt = opts.prompt;
  dump.meta.workload = opts.workload;
  dump.meta.kvscope_version = KVSCOPE_VERSION;
  dump.meta.rope_style = "rotate_half";
  dump.meta.rope_theta = c.rope_theta;
  dump.meta.extra["architecture"] = std::string(arch_name(c.arch));

  const size_t hd = static_cast<size_t>(c.head_dim);
  const size_t kv_elems = static_cast<size_t>(c.num_kv_heads) * T * hd;
  const size_t q_elems = static_cast<size_t>(c.num_heads) * T * hd;
  dump.layers.resize(c.num_layers);
  for (auto& L : dump.layers) {
    L.k.resize(kv_elems);
    L.v.resize(kv_elems);
    if (opts.with_q) L.q.resize(q_elems);
    if (opts.with_pre_rope) {
      L.k_pre_rope.resize(kv_elems);
      if (opts.with_q) L.q_pre_rope.resize(q_elems);
    }
  }
  // Scatter [heads, n, d] chunk rows into [heads, T, d] at position `start`.
  auto put = [&](std::vector<float>& dst, const float* src, int heads, int start, int n) {
    for (int h = 0; h < heads; ++h)
      std::memcpy(&dst[(static_cast<size_t>(h) * T + start) * hd], src + static_cast<size_t>(h) * n * hd,
                  n * hd * sizeof(float));
  };
  CaptureHook hook = [&](const LayerActivations& a) {
    DumpLayer& L = dump.layers[a.layer];
    put(L.k, a.k, c.num_kv_heads, a.start, a.n);
    put(L.v, a.v, c.num_kv_heads, a.start, a.n);
    if (opts.with_q) put(L.q, a.q, c.num_heads, a.start, a.n);
    if (opts.with_pre_rope) {
      put(L.k_pre_rope, a.k_pre_rope, c.num_kv_heads, a.start, a.n);
      if (opts.with_q) put(L.q_pre_rope, a.q_pre_rope, c.num_heads, a.start, a.n);
    }
  };
  auto cache = model.new_cache(T);
  ForwardOptions fo;
  fo.capture = &hook;
  fo.skip_logits = true;
  const int chunk = std::max(1, opts.chunk_tokens);
  for (int s = 0; s < T; s += chunk) {
    const int n = std::min(chunk, T - s);
    model.forward(ids.subspan(s, n), *cache, fo);
    if (opts.progress) opts.progress(s + n, T);
  }
  validate_dump(dump, model.dir());
  return dump;
}

std::vector<int> parse_layer_list(const std::string& spec, int num_layers, const std::string& what) {
  std::set<int> out;
  auto number = [&](const std::string& t) {
    if (t.empty() || t.size() > 9 || t.find_first_not_of("0123456789") != std::string::npos)
      fail(what, "\"{}\" is not a layer list like 0-3,16 ({} is not a layer number)", spec, t.empty() ? "\"\"" : t);
    const int v = std::stoi(t);
    if (v >= num_layers) fail(what, "layer {} does not exist (the model has {} layers, 0-{})", v, num_layers, num_layers - 1);
    return v;
  };
  size_t pos = 0;
  while (pos <= spec.size()) {
    const size_t comma = std::min(spec.find(',', pos), spec.size());
    const std::string item = spec.substr(pos, comma - pos);
    const size_t dash = item.find('-');
    if (dash == std::string::npos) {
      out.insert(number(item));
    } else {
      const int a = number(item.substr(0, dash)), b = number(item.substr(dash + 1));
      if (a > b) fail(what, "range {} is reversed", item);
      for (int l = a; l <= b; ++l) out.insert(l);
    }
    pos = comma + 1;
  }
  return {out.begin(), out.end()};
}

uint64_t capture_to_file(const Model& model, std::span<const int32_t> ids, const CaptureOptions& opts,
                         const std::string& path, DType dtype) {
  const ModelConfig& c = model.config();
  if (ids.empty()) fail(model.dir(), "nothing to capture: the token sequence is empty");
  if (dtype != DType::F16 && dtype != DType::BF16 && dtype != DType::F32) fail(path, "dumps are stored as F16, BF16 or F32");
  const int T = static_cast<int>(ids.size());
  std::vector<int> layers = opts.layers;
  if (layers.empty())
    for (int l = 0; l < c.num_layers; ++l) layers.push_back(l);
  std::vector<int> slot(c.num_layers, -1);  // model layer -> index among the kept layers
  for (size_t i = 0; i < layers.size(); ++i) {
    if (layers[i] < 0 || layers[i] >= c.num_layers || (i > 0 && layers[i] <= layers[i - 1]))
      fail(path, "layer list must be ascending layer numbers below {}", c.num_layers);
    slot[layers[i]] = static_cast<int>(i);
  }
  const std::vector<int> qpos = sample_positions(T, opts.q_positions);
  const int NQ = static_cast<int>(qpos.size());
  const bool all_q = NQ == T;

  DumpMeta meta;
  meta.model_id = opts.model_id;
  meta.config_digest = config_digest(model.dir());
  meta.token_ids.assign(ids.begin(), ids.end());
  meta.prompt = opts.prompt;
  meta.workload = opts.workload;
  meta.rope_style = "rotate_half";
  meta.rope_theta = c.rope_theta;
  meta.extra["architecture"] = std::string(arch_name(c.arch));
  if (!opts.layers.empty()) meta.layer_ids = layers;
  if (opts.with_q && !all_q) meta.q_positions = qpos;
  DumpShape shape;
  shape.layers = static_cast<int>(layers.size());
  shape.kv_heads = c.num_kv_heads;
  shape.q_heads = opts.with_q ? c.num_heads : 0;
  shape.head_dim = c.head_dim;
  shape.tokens = T;

  // Tensor order per kept layer: k, v, [q], [k_pre_rope, [q_pre_rope]] (as save_dump writes).
  enum Kind { K, V, Q, KPre, QPre, kKinds };
  static const char* const kNames[] = {"k", "v", "q", "k_pre_rope", "q_pre_rope"};
  std::vector<TensorDecl> specs;
  std::vector<std::array<int, kKinds>> index(layers.size());
  const int64_t hd = c.head_dim;
  for (size_t i = 0; i < layers.size(); ++i) {
    index[i].fill(-1);
    for (int kind = 0; kind < kKinds; ++kind) {
      const bool is_q = kind == Q || kind == QPre;
      if (is_q && !opts.with_q) continue;
      if ((kind == KPre || kind == QPre) && !opts.with_pre_rope) continue;
      index[i][kind] = static_cast<int>(specs.size());
      const int64_t heads = is_q ? c.num_heads : c.num_kv_heads;
      specs.push_back({"layers." + std::to_string(layers[i]) + "." + kNames[kind], dtype, {heads, is_q ? NQ : T, hd}});
    }
  }
  SafetensorsWriter out(path, specs, dump_metadata(meta, shape, dtype));

  const size_t es = dtype_size(dtype);
  std::vector<unsigned char> buf;
  std::vector<float> rows;
  // One head's n rows (already gathered, f32) -> `dtype` -> the file at token row `row0`.
  auto put = [&](int tensor, int64_t head, int64_t tokens_in_tensor, int64_t row0, const float* src, int64_t n) {
    buf.resize(static_cast<size_t>(n * hd) * es);
    convert_from_f32(dtype, src, static_cast<size_t>(n * hd), buf.data());
    out.write_at(static_cast<size_t>(tensor), static_cast<uint64_t>((head * tokens_in_tensor + row0) * hd) * es, buf.data(), buf.size());
  };
  auto put_all = [&](int tensor, const float* src, int heads, int start, int n) {
    for (int h = 0; h < heads; ++h) put(tensor, h, T, start, src + static_cast<int64_t>(h) * n * hd, n);
  };
  // Queries: only the rows at kept positions, at their index among the kept positions.
  auto put_q = [&](int tensor, const float* src, int start, int n) {
    if (all_q) return put_all(tensor, src, c.num_heads, start, n);
    const auto first = std::lower_bound(qpos.begin(), qpos.end(), start);
    const auto last = std::lower_bound(qpos.begin(), qpos.end(), start + n);
    const int64_t m = last - first;
    if (m == 0) return;
    rows.resize(static_cast<size_t>(m * hd));
    for (int h = 0; h < c.num_heads; ++h) {
      for (int64_t j = 0; j < m; ++j)
        std::memcpy(&rows[j * hd], src + (static_cast<int64_t>(h) * n + (first[j] - start)) * hd, hd * sizeof(float));
      put(tensor, h, NQ, first - qpos.begin(), rows.data(), m);
    }
  };
  CaptureHook hook = [&](const LayerActivations& a) {
    const int i = slot[a.layer];
    if (i < 0) return;
    put_all(index[i][K], a.k, c.num_kv_heads, a.start, a.n);
    put_all(index[i][V], a.v, c.num_kv_heads, a.start, a.n);
    if (index[i][Q] >= 0) put_q(index[i][Q], a.q, a.start, a.n);
    if (index[i][KPre] >= 0) put_all(index[i][KPre], a.k_pre_rope, c.num_kv_heads, a.start, a.n);
    if (index[i][QPre] >= 0) put_q(index[i][QPre], a.q_pre_rope, a.start, a.n);
  };
  auto cache = model.new_cache(T);
  ForwardOptions fo;
  fo.capture = &hook;
  fo.skip_logits = true;
  fo.last_layer = layers.back();
  const int chunk = std::max(1, opts.chunk_tokens);
  for (int s = 0; s < T; s += chunk) {
    const int n = std::min(chunk, T - s);
    model.forward(ids.subspan(s, n), *cache, fo);
    if (opts.progress) opts.progress(s + n, T);
  }
  const uint64_t bytes = out.file_bytes();
  out.finish();
  return bytes;
}

}  // namespace kvscope
