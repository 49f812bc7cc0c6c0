// The forward pass. HF semantics: RMSNorm (x * rsqrt(mean(x^2) + eps) * w), rotate_half RoPE,
// GQA (query head j reads KV head j / G, as HF repeat_kv), causal softmax attention, SwiGLU MLP.
#include "core/model/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/model/checkpoint.h"
#include "core/model/forward_ops.h"
#include "core/tensor/matmul.h"
#include "core/tensor/compute_threads.h"
#include "core/util/error.h"
#include "core/tensor/worker_pool.h"

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
  WeightMatrix q, k, v, o;          // [H d, hidden], [Hkv d, hidden] x2, [hidden, H d]; mapped, as stored
  WeightMatrix gate, up, down;      // [inter, hidden] x2, [hidden, inter]
  std::vector<float> bq, bk, bv;    // Qwen2 biases [H d], [Hkv d], [Hkv d] (empty otherwise)
  std::vector<float> q_norm, k_norm;  // Qwen3 [head_dim] (empty otherwise)
  std::vector<float> ln_attn, ln_mlp;  // [hidden]
};

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

// Y[n, ...] = X W_i^T for each matrix, side by side in Y (row stride ldy). One row: one fused
// mat-vec over all matrices (rows spread over the cores); several: sgemm per matrix.
void project(const float* x, int64_t n, std::initializer_list<const WeightMatrix*> ws, float* y, int64_t ldy) {
  if (n == 1) {
    std::vector<GemvPart> parts;
    int64_t off = 0;
    for (const WeightMatrix* w : ws) {
      parts.push_back({w, y + off});
      off += w->rows;
    }
    gemv_stored(parts, x, kernel_threads());
    return;
  }
  int64_t off = 0;
  for (const WeightMatrix* w : ws) {
    gemm_stored(x, n, w->cols, *w, y + off, ldy);
    off += w->rows;
  }
}

void add_bias(float* y, int64_t n, int64_t ld, int64_t off, const std::vector<float>& b) {
  if (b.empty()) return;
  for (int64_t r = 0; r < n; ++r)
    for (size_t i = 0; i < b.size(); ++i) y[r * ld + off + static_cast<int64_t>(i)] += b[i];
}

// [n, heads * d] rows starting at column `col` of a [n, ld] matrix -> [heads, n, d].
void split_heads(const float* src, int64_t ld, int64_t col, int heads, int n, int d, float* dst) {
  run_parts(int64_t{n} * heads * d < (int64_t{1} << 15) ? 1 : kernel_threads(), [&](int part, int parts) {
    long tb, te;
    part_range(n, part, parts, &tb, &te);
    for (int t = static_cast<int>(tb); t < te; ++t)
      for (int h = 0; h < heads; ++h)
        std::memcpy(dst + (static_cast<int64_t>(h) * n + t) * d, src + t * ld + col + static_cast<int64_t>(h) * d,
                    sizeof(float) * d);
  });
}

// The activation buffers of one forward call, carved from a block kept per thread between calls:
// a decode step or a prefill chunk then allocates, zeroes and page-faults nothing (at 1,024
// tokens the fresh buffers cost ~15% of a prefill). The block keeps the largest call's size up to
// kKeepFloats (the memory plan counts one chunk's activations); bigger ones are freed after the
// call. A nested forward on the same thread (a capture hook that runs the model) gets its own.
class Scratch {
 public:
  static constexpr size_t kKeepFloats = size_t{64} << 20;  // 256 MB

  explicit Scratch(size_t floats) {
    thread_local std::vector<float> block;
    thread_local bool in_use = false;
    if (!in_use) {
      in_use_ = &in_use;
      block_ = &block;
      in_use = true;
      if (block.size() < floats) {
        block.clear();
        block.shrink_to_fit();
        block.resize(floats);
      }
      base_ = block.data();
    } else {
      own_.resize(floats);
      base_ = own_.data();
    }
  }
  ~Scratch() {
    if (!in_use_) return;
    *in_use_ = false;
    if (block_->size() > kKeepFloats) std::vector<float>().swap(*block_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  float* take(int64_t floats) {
    float* p = base_ + used_;
    used_ += static_cast<size_t>(floats);
    return p;
  }

 private:
  float* base_ = nullptr;
  size_t used_ = 0;
  bool* in_use_ = nullptr;
  std::vector<float>* block_ = nullptr;
  std::vector<float> own_;
};

}  // namespace

struct Model::Impl {
  std::string dir;
  ModelConfig cfg;
  std::string storage_dtype;
  Checkpoint ck;                   // owns the memory maps every WeightMatrix points into
  WeightMatrix embed, lm_head;     // [vocab, hidden]; lm_head = embed when tied
  std::vector<float> final_norm;   // [hidden]
  std::vector<LayerWeights> layers;
  std::vector<double> inv_freq;

  std::vector<float> vec(const std::string& name) const { return ck.read_f32(name); }

  // cos and sin [n, head_dim / 2] for positions start..start+n-1, computed in double.
  void rope_tables(int start, int n, std::vector<float>& cos, std::vector<float>& sin) const {
    const int half = cfg.head_dim / 2;
    cos.resize(static_cast<size_t>(n) * half);
    sin.resize(cos.size());
    for (int t = 0; t < n; ++t)
      for (int i = 0; i < half; ++i) {
        const double a = static_cast<double>(start + t) * inv_freq[i];
        cos[static_cast<size_t>(t) * half + i] = static_cast<float>(std::cos(a));
        sin[static_cast<size_t>(t) * half + i] = static_cast<float>(std::sin(a));
      }
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
  I.ck = Checkpoint::open(dir);
  const Checkpoint& ck = I.ck;
  ck.check_against(I.cfg);  // all shapes before any compute
  I.storage_dtype = ck.storage_dtype();
  const ModelConfig& c = I.cfg;

  I.embed = ck.matrix("model.embed_tokens.weight");
  I.final_norm = I.vec("model.norm.weight");
  // Tied embeddings: real HF checkpoints usually omit lm_head.weight.
  I.lm_head = ck.has_lm_head() ? ck.matrix("lm_head.weight") : I.embed;
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerWeights w;
    w.q = ck.matrix(p + "self_attn.q_proj.weight");
    w.k = ck.matrix(p + "self_attn.k_proj.weight");
    w.v = ck.matrix(p + "self_attn.v_proj.weight");
    w.o = ck.matrix(p + "self_attn.o_proj.weight");
    if (c.attention_bias) {
      w.bq = I.vec(p + "self_attn.q_proj.bias");
      w.bk = I.vec(p + "self_attn.k_proj.bias");
      w.bv = I.vec(p + "self_attn.v_proj.bias");
    }
    if (c.qk_norm) {
      w.q_norm = I.vec(p + "self_attn.q_norm.weight");
      w.k_norm = I.vec(p + "self_attn.k_norm.weight");
    }
    w.ln_attn = I.vec(p + "input_layernorm.weight");
    w.ln_mlp = I.vec(p + "post_attention_layernorm.weight");
    w.gate = ck.matrix(p + "mlp.gate_proj.weight");
    w.up = ck.matrix(p + "mlp.up_proj.weight");
    w.down = ck.matrix(p + "mlp.down_proj.weight");
    I.layers.push_back(std::move(w));
  }
  I.inv_freq = rope_inv_freq(c);
  return m;
}

const ModelConfig& Model::config() const { return impl_->cfg; }
const std::string& Model::dir() const { return impl_->dir; }
std::string Model::storage_dtype() const { return impl_->storage_dtype; }

int64_t Model::weight_bytes() const {
  const Impl& I = *impl_;
  int64_t n = I.lm_head.bytes() + static_cast<int64_t>(I.final_norm.size() * sizeof(float));
  for (const auto& w : I.layers) {
    n += w.q.bytes() + w.k.bytes() + w.v.bytes() + w.o.bytes() + w.gate.bytes() + w.up.bytes() + w.down.bytes();
    for (const auto* b : {&w.bq, &w.bk, &w.bv, &w.q_norm, &w.k_norm, &w.ln_attn, &w.ln_mlp})
      n += static_cast<int64_t>(b->size() * sizeof(float));
  }
  return n;
}

int64_t Model::resident_bytes() const {
  const Impl& I = *impl_;
  // weight_bytes counts lm_head; an untied model also maps its embedding.
  const bool tied = I.lm_head.data == I.embed.data;
  return weight_bytes() + (tied ? 0 : I.embed.bytes());
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
  const int H = c.num_heads, Hkv = c.num_kv_heads, d = c.head_dim;
  const int64_t hid = c.hidden_size, inter = c.intermediate_size;
  const int64_t qd = int64_t{H} * d, kvd = int64_t{Hkv} * d, qkv_ld = qd + 2 * kvd;

  // Activations of this call ([rows, cols] row-major f32), carved from the thread's scratch block.
  Scratch scratch(static_cast<size_t>(n) * (2 * hid + qkv_ld + 2 * qd + 2 * kvd + 3 * inter));
  float* const x = scratch.take(n * hid);       // residual stream [n, hidden]
  float* const h = scratch.take(n * hid);       // normed input [n, hidden]
  float* const qkv = scratch.take(n * qkv_ld);  // projections [n, (H + 2 Hkv) d]
  float* const q = scratch.take(n * qd);        // [heads, n, d]
  float* const k = scratch.take(n * kvd);
  float* const v = scratch.take(n * kvd);
  float* const attn = scratch.take(n * qd);     // attention output [n, H d]
  float* const gu = scratch.take(n * 2 * inter);  // gate | up [n, 2 inter]
  float* const act = scratch.take(n * inter);   // silu(gate) * up [n, inter]
  std::vector<float> q_pre, k_pre;              // pre-RoPE copies, only for a capture
  std::vector<float> cos, sin;
  const int64_t embed_row = I.embed.cols * static_cast<int64_t>(dtype_size(I.embed.dtype));
  for (int i = 0; i < n; ++i)
    convert_row(I.embed.dtype, static_cast<const unsigned char*>(I.embed.data) + tokens[i] * embed_row, hid,
                x + i * hid);
  I.rope_tables(start, n, cos, sin);

  int layers_run = c.num_layers;
  if (opts.last_layer >= 0) {
    if (!opts.skip_logits) fail(I.dir, "forward: stopping after layer {} needs skip_logits", opts.last_layer);
    layers_run = std::min(layers_run, opts.last_layer + 1);
  }
  for (int l = 0; l < layers_run; ++l) {
    const LayerWeights& w = I.layers[l];
    if (cache.length(l) != start)
      fail(I.dir, "KV cache layer {} holds {} positions, layer 0 holds {}", l, cache.length(l), start);
    rms_norm_rows(x, w.ln_attn.data(), n, hid, c.rms_norm_eps, h);
    project(h, n, {&w.q, &w.k, &w.v}, qkv, qkv_ld);
    add_bias(qkv, n, qkv_ld, 0, w.bq);
    add_bias(qkv, n, qkv_ld, qd, w.bk);
    add_bias(qkv, n, qkv_ld, qd + kvd, w.bv);
    split_heads(qkv, qkv_ld, 0, H, n, d, q);
    split_heads(qkv, qkv_ld, qd, Hkv, n, d, k);
    split_heads(qkv, qkv_ld, qd + kvd, Hkv, n, d, v);
    if (c.qk_norm) {
      rms_norm_rows(q, w.q_norm.data(), int64_t{H} * n, d, c.rms_norm_eps, q);
      rms_norm_rows(k, w.k_norm.data(), int64_t{Hkv} * n, d, c.rms_norm_eps, k);
    }
    if (opts.capture) {
      q_pre.assign(q, q + n * qd);
      k_pre.assign(k, k + n * kvd);
    }
    rope_heads(q, H, n, d, cos.data(), sin.data());
    rope_heads(k, Hkv, n, d, cos.data(), sin.data());
    cache.append(l, k, v, n);
    if (opts.capture) {
      LayerActivations a;
      a.layer = l;
      a.start = start;
      a.n = n;
      a.q = q;
      a.k = k;
      a.v = v;
      a.q_pre_rope = q_pre.data();
      a.k_pre_rope = k_pre.data();
      (*opts.capture)(a);
    }

    const KvLayerView kv = cache.view(l);
    if (kv.tokens != start + n)
      fail(I.dir, "KV cache layer {} holds {} positions after append, expected {}", l, kv.tokens, start + n);
    AttentionShape as;
    as.heads = H;
    as.kv_heads = Hkv;
    as.head_dim = d;
    as.n = n;
    as.start = start;
    as.sliding_window = c.sliding_window;
    as.kv_head_stride = kv.head_stride;
    causal_attention(q, kv.k, kv.v, as, attn);
    project(attn, n, {&w.o}, h, hid);
    add_rows(x, h, n * hid);

    rms_norm_rows(x, w.ln_mlp.data(), n, hid, c.rms_norm_eps, h);
    project(h, n, {&w.gate, &w.up}, gu, 2 * inter);
    silu_mul(gu, gu + inter, 2 * inter, n, inter, act);
    project(act, n, {&w.down}, h, hid);
    add_rows(x, h, n * hid);
  }
  if (opts.skip_logits) return {};
  const int rows = opts.all_logits ? n : 1;
  const float* xs = x + (opts.all_logits ? 0 : (n - 1) * hid);
  rms_norm_rows(xs, I.final_norm.data(), rows, hid, c.rms_norm_eps, h);
  std::vector<float> logits(static_cast<size_t>(rows) * c.vocab_size);
  project(h, rows, {&I.lm_head}, logits.data(), c.vocab_size);
  return logits;
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
