#include "core/model/capture.h"

#include <algorithm>
#include <cstring>

#include "core/model/model.h"
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
  const int chunk = std::max(1, opts.chunk_tokens);
  for (int s = 0; s < T; s += chunk) {
    const int n = std::min(chunk, T - s);
    model.forward(ids.subspan(s, n), *cache, fo);
    if (opts.progress) opts.progress(s + n, T);
  }
  validate_dump(dump, model.dir());
  return dump;
}

}  // namespace kvscope
