// The forward pass. HF semantics: RMSNorm (x * rsqrt(mean(x^2) + eps) * w), rotate_half RoPE,
// GQA (query head j reads KV head j / G, as HF repeat_kv), causal softmax attention, SwiGLU MLP.
#include "core/model/model.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>


#include <cmath>
#include <cstring>
#include <limits>

#include "core/model/checkpoint.h"
#include "core/tensor/compute_threads.h"
#include "core/util/error.h"
#include "core/util/parallel.h"

namespace kvscope {

// ---- DenseKvCache ---------------------------------------------------------------------------

DenseKvCache::DenseKvCache(int layers, int kv_heads, int head_dim, int reserve_tokens)
    : kv_heads_(kv_heads), head_dim_(head_dim), reserve_(std::max(1, reserve_tokens)), layers_(layers) {}

void DenseKvCache::grow(Layer& l, int need) {
  if (need <= l.capacity) return;
  int cap = std::max(reserve_, l.capacity);
  while (cap < need) cap *= 2;
  const size_t hd = static_cast<size_t>(head_dim_);
  std::vector<float> k(static_cast<size_t>(kv_heads_) * cap * hd), v(k.size());
  for (int h = 0; h < kv_heads_; ++h) {
    if (l.tokens == 0) break;
    std::memcpy(&k[h * cap * hd], &l.k[h * l.capacity * hd], l.tokens * hd * sizeof(float));
    std::memcpy(&v[h * cap * hd], &l.v[h * l.capacity * hd], l.tokens * hd * sizeof(float));
  }
  l.k.swap(k);
  l.v.swap(v);
  l.capacity = cap;
}

void DenseKvCache::append(int layer, const float* k, const float* v, int n) {
  Layer& l = layers_.at(layer);
  grow(l, l.tokens + n);
  const size_t hd = static_cast<size_t>(head_dim_);
  for (int h = 0; h < kv_heads_; ++h) {
    std::memcpy(&l.k[(h * static_cast<size_t>(l.capacity) + l.tokens) * hd], k + h * n * hd, n * hd * sizeof(float));
    std::memcpy(&l.v[(h * static_cast<size_t>(l.capacity) + l.tokens) * hd], v + h * n * hd, n * hd * sizeof(float));
  }
  l.tokens += n;
}

KvLayerView DenseKvCache::view(int layer) const {
  const Layer& l = layers_.at(layer);
  return {l.k.data(), l.v.data(), l.tokens, static_cast<int64_t>(l.capacity) * head_dim_};
}

void DenseKvCache::clear() {
  for (auto& l : layers_) l.tokens = 0;
}

// ---- Model ----------------------------------------------------------------------------------

namespace {

struct LayerWeights {
  at::Tensor w_qkv, b_qkv;   // q, k, v projections stacked: [(H + 2 Hkv) d, hidden]
  at::Tensor q_norm, k_norm;  // Qwen3, [head_dim]
  at::Tensor w_o;
  at::Tensor ln_attn, ln_mlp;
  at::Tensor w_gate_up;  // gate and up stacked: [2 I, hidden]
  at::Tensor w_down;
};

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps) {
  auto var = x.pow(2).mean(-1, /*keepdim=*/true);
  return x * at::rsqrt(var + eps) * w;
}

// y = x W^T (+ b) for x [n, in], W [out, in]. One row goes through gemv: OpenBLAS 0.3.21 runs
// an m = 1 sgemm through its packing path, which copies the whole weight matrix every call.
at::Tensor project(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b = {}) {
  if (x.size(0) == 1) {
    at::Tensor y = at::mv(w, x[0]);
    if (b.defined()) y.add_(b);
    return y.unsqueeze(0);
  }
  return b.defined() ? at::linear(x, w, b) : at::linear(x, w);
}

at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

// HF rope inverse frequencies incl. linear and llama3 scaling, in double.
std::vector<double> rope_inv_freq(const ModelConfig& c) {
  const int half = c.head_dim / 2;
  std::vector<double> inv(half);
  for (int i = 0; i < half; ++i) inv[i] = 1.0 / std::pow(c.rope_theta, (2.0 * i) / c.head_dim);
  if (c.rope_scaling == RopeScaling::Linear) {
    for (auto& f : inv) f /= c.rope_factor;
  } else if (c.rope_scaling == RopeScaling::Llama3) {
    const double old_ctx = c.rope_original_max_positions;
    const double low_wavelen = old_ctx / c.rope_low_freq_factor;
    const double high_wavelen = old_ctx / c.rope_high_freq_factor;
    for (auto& f : inv) {
      const double wavelen = 2.0 * M_PI / f;
      if (wavelen > low_wavelen) {
        f = f / c.rope_factor;  // long wavelengths: fully interpolated
      } else if (wavelen >= high_wavelen) {
        const double smooth = (old_ctx / wavelen - c.rope_low_freq_factor) /
                              (c.rope_high_freq_factor - c.rope_low_freq_factor);
        f = (1.0 - smooth) * f / c.rope_factor + smooth * f;
      }  // short wavelengths unchanged
    }
  }
  return inv;
}

}  // namespace

struct Model::Impl {
  std::string dir;
  ModelConfig cfg;
  std::string storage_dtype;
  at::Tensor embed, final_norm, lm_head;
  std::vector<LayerWeights> layers;
  std::vector<double> inv_freq;

  at::Tensor load(const Checkpoint& ck, const std::string& name) const {
    const auto shape = ck.shape(name);
    at::Tensor t = at::empty(shape, at::kFloat);
    ck.read_f32(name, t.data_ptr<float>());
    return t;
  }

  // cos and sin [n, head_dim] for positions start..start+n-1 (rotate_half layout: freqs twice).
  std::pair<at::Tensor, at::Tensor> rope_tables(int start, int n) const {
    const int half = cfg.head_dim / 2;
    at::Tensor cos = at::empty({n, cfg.head_dim}, at::kFloat), sin = at::empty({n, cfg.head_dim}, at::kFloat);
    float* pc = cos.data_ptr<float>();
    float* ps = sin.data_ptr<float>();
    for (int t = 0; t < n; ++t) {
      for (int i = 0; i < half; ++i) {
        const double a = static_cast<double>(start + t) * inv_freq[i];
        pc[t * cfg.head_dim + i] = pc[t * cfg.head_dim + half + i] = static_cast<float>(std::cos(a));
        ps[t * cfg.head_dim + i] = ps[t * cfg.head_dim + half + i] = static_cast<float>(std::sin(a));
      }
    }
    return {cos, sin};
  }
};

Model::Model() : impl_(std::make_unique<Impl>()) {}
Model::~Model() = default;

std::unique_ptr<Model> Model::load(const std::string& dir) {
  configure_compute_threads();
  std::unique_ptr<Model> m(new Model());
  Impl& I = *m->impl_;
  I.dir = dir;
  I.cfg = load_config(dir);
  const Checkpoint ck = Checkpoint::open(dir);
  ck.check_against(I.cfg);  // all shapes before any compute
  I.storage_dtype = ck.storage_dtype();
  const ModelConfig& c = I.cfg;
  c10::InferenceMode guard;

  I.embed = I.load(ck, "model.embed_tokens.weight");
  I.final_norm = I.load(ck, "model.norm.weight");
  // Tied embeddings: real HF checkpoints usually omit lm_head.weight.
  I.lm_head = ck.has_lm_head() ? I.load(ck, "lm_head.weight") : I.embed;
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerWeights w;
    w.w_qkv = at::cat({I.load(ck, p + "self_attn.q_proj.weight"), I.load(ck, p + "self_attn.k_proj.weight"),
                       I.load(ck, p + "self_attn.v_proj.weight")}, 0);
    if (c.attention_bias)
      w.b_qkv = at::cat({I.load(ck, p + "self_attn.q_proj.bias"), I.load(ck, p + "self_attn.k_proj.bias"),
                         I.load(ck, p + "self_attn.v_proj.bias")}, 0);
    if (c.qk_norm) {
      w.q_norm = I.load(ck, p + "self_attn.q_norm.weight");
      w.k_norm = I.load(ck, p + "self_attn.k_norm.weight");
    }
    w.w_o = I.load(ck, p + "self_attn.o_proj.weight");
    w.ln_attn = I.load(ck, p + "input_layernorm.weight");
    w.ln_mlp = I.load(ck, p + "post_attention_layernorm.weight");
    w.w_gate_up = at::cat({I.load(ck, p + "mlp.gate_proj.weight"), I.load(ck, p + "mlp.up_proj.weight")}, 0);
    w.w_down = I.load(ck, p + "mlp.down_proj.weight");
    I.layers.push_back(std::move(w));
  }
  I.inv_freq = rope_inv_freq(c);
  return m;
}

const ModelConfig& Model::config() const { return impl_->cfg; }
const std::string& Model::dir() const { return impl_->dir; }
std::string Model::storage_dtype() const { return impl_->storage_dtype; }

int64_t Model::weight_bytes() const {
  int64_t n = impl_->final_norm.numel() + impl_->lm_head.numel();  // one embedding row is negligible
  for (const auto& w : impl_->layers) {
    n += w.w_qkv.numel() + w.w_o.numel() + w.w_gate_up.numel() + w.w_down.numel() + w.ln_attn.numel() +
         w.ln_mlp.numel();
    if (w.b_qkv.defined()) n += w.b_qkv.numel();
    if (w.q_norm.defined()) n += w.q_norm.numel() + w.k_norm.numel();
  }
  return n * static_cast<int64_t>(sizeof(float));
}

std::unique_ptr<KvCache> Model::new_cache(int reserve_tokens) const {
  return std::make_unique<DenseKvCache>(impl_->cfg.num_layers, impl_->cfg.num_kv_heads, impl_->cfg.head_dim,
                                        reserve_tokens);
}

std::vector<float> Model::forward(std::span<const int32_t> tokens, KvCache& cache, const ForwardOptions& opts) const {
  const Impl& I = *impl_;
  const ModelConfig& c = I.cfg;
  const int n = static_cast<int>(tokens.size());
  if (n == 0) fail(I.dir, "forward called with no tokens");
  for (int32_t t : tokens)
    if (t < 0 || t >= c.vocab_size) fail(I.dir, "token id {} is outside the vocabulary [0, {})", t, c.vocab_size);
  const int start = cache.length(0);
  c10::InferenceMode guard;

  const int64_t H = c.num_heads, Hkv = c.num_kv_heads, d = c.head_dim, G = c.group();
  at::Tensor ids = at::empty({n}, at::kLong);
  for (int i = 0; i < n; ++i) ids.data_ptr<int64_t>()[i] = tokens[i];
  at::Tensor x = I.embed.index_select(0, ids);  // [n, hidden]
  auto [cos, sin] = I.rope_tables(start, n);
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  const int total = start + n;

  // Additive mask [n, total]: query i sits at position start + i (causal, optional sliding window).
  at::Tensor mask;
  if (n > 1 || (c.sliding_window > 0 && total > c.sliding_window)) {
    mask = at::zeros({n, total}, at::kFloat);
    float* pm = mask.data_ptr<float>();
    for (int i = 0; i < n; ++i) {
      const int pos = start + i;
      for (int t = 0; t < total; ++t) {
        const bool visible = t <= pos && (c.sliding_window <= 0 || t > pos - c.sliding_window);
        if (!visible) pm[i * total + t] = -std::numeric_limits<float>::infinity();
      }
    }
  }

  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& w = I.layers[l];
    if (cache.length(l) != start)
      fail(I.dir, "KV cache layer {} holds {} positions, layer 0 holds {}", l, cache.length(l), start);
    at::Tensor h = rms_norm(x, w.ln_attn, c.rms_norm_eps);
    at::Tensor qkv = project(h, w.w_qkv, w.b_qkv);
    at::Tensor q = qkv.narrow(1, 0, H * d).view({n, H, d}).transpose(0, 1);          // [H, n, d]
    at::Tensor k = qkv.narrow(1, H * d, Hkv * d).view({n, Hkv, d}).transpose(0, 1);  // [Hkv, n, d]
    at::Tensor v = qkv.narrow(1, (H + Hkv) * d, Hkv * d).view({n, Hkv, d}).transpose(0, 1).contiguous();
    if (c.qk_norm) {
      q = rms_norm(q, w.q_norm, c.rms_norm_eps);
      k = rms_norm(k, w.k_norm, c.rms_norm_eps);
    }
    at::Tensor q_pre, k_pre;
    if (opts.capture) {
      q_pre = q.contiguous();
      k_pre = k.contiguous();
    }
    q = (q * cos + rotate_half(q) * sin).contiguous();
    k = (k * cos + rotate_half(k) * sin).contiguous();
    cache.append(l, k.data_ptr<float>(), v.data_ptr<float>(), n);
    if (opts.capture) {
      LayerActivations a;
      a.layer = l;
      a.start = start;
      a.n = n;
      a.q = q.data_ptr<float>();
      a.k = k.data_ptr<float>();
      a.v = v.data_ptr<float>();
      a.q_pre_rope = q_pre.data_ptr<float>();
      a.k_pre_rope = k_pre.data_ptr<float>();
      (*opts.capture)(a);
    }

    const KvLayerView kv = cache.view(l);
    if (kv.tokens != total) fail(I.dir, "KV cache layer {} holds {} positions after append, expected {}", l, kv.tokens, total);
    at::Tensor K = at::from_blob(const_cast<float*>(kv.k), {Hkv, total, d}, {kv.head_stride, d, 1}, at::kFloat);
    at::Tensor V = at::from_blob(const_cast<float*>(kv.v), {Hkv, total, d}, {kv.head_stride, d, 1}, at::kFloat);
    // Query head j = kvh * G + g reads KV head kvh: group the G query heads of each KV head.
    at::Tensor qg = q.view({Hkv, G * n, d});
    at::Tensor scores = at::bmm(qg, K.transpose(1, 2)).mul_(scale);  // [Hkv, G n, total]
    if (mask.defined()) scores = scores.view({Hkv, G, n, total}).add_(mask).view({Hkv, G * n, total});
    at::Tensor probs = at::softmax(scores, -1);
    at::Tensor attn = at::bmm(probs, V).view({H, n, d}).transpose(0, 1).reshape({n, H * d});
    x = x + project(attn, w.w_o);

    h = rms_norm(x, w.ln_mlp, c.rms_norm_eps);
    at::Tensor gu = project(h, w.w_gate_up);
    const int64_t inter = c.intermediate_size;
    x = x + project(at::silu(gu.narrow(1, 0, inter)) * gu.narrow(1, inter, inter), w.w_down);
  }
  at::Tensor xs = opts.all_logits ? x : x.narrow(0, n - 1, 1);
  at::Tensor logits = project(rms_norm(xs, I.final_norm, c.rms_norm_eps), I.lm_head).contiguous();
  const float* p = logits.data_ptr<float>();
  return std::vector<float>(p, p + logits.numel());
}

std::vector<int32_t> Model::generate_greedy(std::span<const int32_t> prompt, int max_new) const {
  auto cache = new_cache(static_cast<int>(prompt.size()) + max_new);
  std::vector<int32_t> out;
  std::vector<float> logits = forward(prompt, *cache);
  for (int i = 0; i < max_new; ++i) {
    int32_t best = 0;  // first maximum, as numpy argmax
    for (int32_t t = 1; t < static_cast<int32_t>(logits.size()); ++t)
      if (logits[t] > logits[best]) best = t;
    out.push_back(best);
    if (i + 1 < max_new) logits = forward(std::span<const int32_t>(&out.back(), 1), *cache);
  }
  return out;
}

}  // namespace kvscope
