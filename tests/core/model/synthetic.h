#pragma once
// Tiny random checkpoints written with our safetensors writer, and an independent reference
// forward (plain loops, double precision) that shares no code with core/model.
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/tensor/safetensors.h"

namespace synth {

struct Spec {
  std::string arch = "LlamaForCausalLM";
  int hidden = 24, inter = 40, layers = 2, heads = 4, kv_heads = 2, head_dim = 8, vocab = 50;
  bool tied = false;
  bool write_lm_head = true;  // false: omit lm_head.weight (tied checkpoints usually do)
  bool bias = false;          // q/k/v biases (Qwen2 always; attention_bias for others)
  bool qk_norm = false;       // Qwen3
  double theta = 10000.0;
  double eps = 1e-5;
  int sliding_window = 0;
  nlohmann::json rope_scaling = nullptr;
  kvscope::DType dtype = kvscope::DType::F32;
  unsigned seed = 7;
};

using Tensors = std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>>;

inline Tensors make_weights(const Spec& s) {
  std::mt19937 rng(s.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Tensors t;
  auto randn = [&](const std::string& name, std::vector<int64_t> shape, float scale, float offset = 0) {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    std::vector<float> v(n);
    for (auto& x : v) x = offset + scale * normal(rng);
    // Round to the storage dtype so the reference sees exactly what the file holds.
    if (s.dtype != kvscope::DType::F32) {
      std::vector<unsigned char> tmp(n * kvscope::dtype_size(s.dtype));
      kvscope::convert_from_f32(s.dtype, v.data(), n, tmp.data());
      kvscope::convert_to_f32(s.dtype, tmp.data(), n, v.data());
    }
    t[name] = {shape, v};
  };
  const int64_t h = s.hidden, q = int64_t{s.heads} * s.head_dim, kv = int64_t{s.kv_heads} * s.head_dim;
  randn("model.embed_tokens.weight", {s.vocab, h}, 1.0f);
  for (int l = 0; l < s.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    randn(p + "self_attn.q_proj.weight", {q, h}, 0.3f);
    randn(p + "self_attn.k_proj.weight", {kv, h}, 0.3f);
    randn(p + "self_attn.v_proj.weight", {kv, h}, 0.3f);
    randn(p + "self_attn.o_proj.weight", {h, q}, 0.3f);
    if (s.bias) {
      randn(p + "self_attn.q_proj.bias", {q}, 0.5f);
      randn(p + "self_attn.k_proj.bias", {kv}, 0.5f);
      randn(p + "self_attn.v_proj.bias", {kv}, 0.5f);
    }
    if (s.qk_norm) {
      randn(p + "self_attn.q_norm.weight", {s.head_dim}, 0.3f, 1.0f);
      randn(p + "self_attn.k_norm.weight", {s.head_dim}, 0.3f, 1.0f);
    }
    randn(p + "mlp.gate_proj.weight", {s.inter, h}, 0.3f);
    randn(p + "mlp.up_proj.weight", {s.inter, h}, 0.3f);
    randn(p + "mlp.down_proj.weight", {h, s.inter}, 0.3f);
    randn(p + "input_layernorm.weight", {h}, 0.2f, 1.0f);
    randn(p + "post_attention_layernorm.weight", {h}, 0.2f, 1.0f);
  }
  randn("model.norm.weight", {h}, 0.2f, 1.0f);
  if (s.tied) t["lm_head.weight"] = t["model.embed_tokens.weight"];
  else randn("lm_head.weight", {s.vocab, h}, 0.3f);
  return t;
}

inline nlohmann::json make_config(const Spec& s) {
  nlohmann::json c = {{"architectures", {s.arch}},
                      {"hidden_size", s.hidden},
                      {"intermediate_size", s.inter},
                      {"num_hidden_layers", s.layers},
                      {"num_attention_heads", s.heads},
                      {"num_key_value_heads", s.kv_heads},
                      {"head_dim", s.head_dim},
                      {"vocab_size", s.vocab},
                      {"max_position_embeddings", 256},
                      {"rms_norm_eps", s.eps},
                      {"rope_theta", s.theta},
                      {"rope_scaling", s.rope_scaling},
                      {"hidden_act", "silu"},
                      {"tie_word_embeddings", s.tied},
                      {"torch_dtype", s.dtype == kvscope::DType::F32 ? "float32"
                                      : s.dtype == kvscope::DType::F16 ? "float16" : "bfloat16"}};
  if (s.arch != "Qwen2ForCausalLM") c["attention_bias"] = s.bias;
  if (s.arch == "MistralForCausalLM") c["sliding_window"] = s.sliding_window > 0 ? nlohmann::json(s.sliding_window) : nlohmann::json(nullptr);
  if (s.arch == "Qwen2ForCausalLM") c["use_sliding_window"] = false;
  return c;
}

// Writes config.json and model.safetensors (or `shards` files + index.json) into dir.
inline Tensors write_model(const std::string& dir, const Spec& s, int shards = 1) {
  Tensors t = make_weights(s);
  std::ofstream(dir + "/config.json") << make_config(s).dump(2);
  std::vector<std::vector<unsigned char>> bufs;
  std::vector<std::vector<kvscope::TensorView>> views(shards);
  nlohmann::json weight_map = nlohmann::json::object();
  int i = 0;
  for (const auto& [name, sv] : t) {
    if (name == "lm_head.weight" && !s.write_lm_head) continue;
    const int shard = i++ % shards;
    bufs.emplace_back(sv.second.size() * kvscope::dtype_size(s.dtype));
    kvscope::convert_from_f32(s.dtype, sv.second.data(), sv.second.size(), bufs.back().data());
    views[shard].push_back({name, s.dtype, sv.first, bufs.back().data()});
    weight_map[name] = "model-0000" + std::to_string(shard + 1) + "-of-0000" + std::to_string(shards) + ".safetensors";
  }
  if (shards == 1) {
    kvscope::write_safetensors(dir + "/model.safetensors", views[0]);
  } else {
    for (int k = 0; k < shards; ++k)
      kvscope::write_safetensors(dir + "/model-0000" + std::to_string(k + 1) + "-of-0000" + std::to_string(shards) +
                                     ".safetensors", views[k]);
    std::ofstream(dir + "/model.safetensors.index.json") << nlohmann::json{{"weight_map", weight_map}}.dump(2);
  }
  if (!s.write_lm_head) t.erase("lm_head.weight");
  return t;
}

// ---- reference forward ----------------------------------------------------------------------
struct RefOptions {
  bool ignore_bias = false;     // for sensitivity checks
  bool ignore_qk_norm = false;
  bool wrong_gqa = false;       // query head j -> kv head j % kv_heads instead of j / G
};

struct RefOutput {
  std::vector<std::vector<double>> logits;  // [pos][vocab]
  std::vector<std::vector<std::vector<std::vector<double>>>> keys;  // [layer][kv_head][pos][dim] post-RoPE
};

inline std::vector<double> ref_inv_freq(const Spec& s) {
  const int half = s.head_dim / 2;
  std::vector<double> f(half);
  for (int i = 0; i < half; ++i) f[i] = 1.0 / std::pow(s.theta, 2.0 * i / s.head_dim);
  if (s.rope_scaling.is_null()) return f;
  const std::string type = s.rope_scaling.value("rope_type", s.rope_scaling.value("type", std::string()));
  const double factor = s.rope_scaling.at("factor").get<double>();
  if (type == "linear") {
    for (auto& x : f) x /= factor;
  } else if (type == "llama3") {  // transformers _compute_llama3_parameters, written as its where() form
    const double lo = s.rope_scaling.at("low_freq_factor").get<double>();
    const double hi = s.rope_scaling.at("high_freq_factor").get<double>();
    const double old = s.rope_scaling.at("original_max_position_embeddings").get<double>();
    for (auto& x : f) {
      const double wavelen = 2 * M_PI / x;
      double scaled = wavelen > old / lo ? x / factor : x;
      const double smooth = (old / wavelen - lo) / (hi - lo);
      const double smoothed = (1 - smooth) * scaled / factor + smooth * scaled;
      const bool medium = !(wavelen < old / hi) && !(wavelen > old / lo);
      x = medium ? smoothed : scaled;
    }
  }
  return f;
}

inline RefOutput reference_forward(const Spec& s, const Tensors& t, const std::vector<int32_t>& ids,
                                   const RefOptions& o = {}) {
  auto W = [&](const std::string& n) -> const std::vector<float>& { return t.at(n).second; };
  const int T = static_cast<int>(ids.size()), H = s.hidden, d = s.head_dim, G = s.heads / s.kv_heads;
  auto matvec = [](const std::vector<float>& w, const std::vector<double>& x, int out) {
    std::vector<double> y(out, 0.0);
    const size_t in = x.size();
    for (int r = 0; r < out; ++r)
      for (size_t c = 0; c < in; ++c) y[r] += double(w[r * in + c]) * x[c];
    return y;
  };
  auto rmsnorm = [&](const std::vector<double>& x, const float* w, size_t off, size_t n) {
    double ms = 0;
    for (size_t i = 0; i < n; ++i) ms += x[off + i] * x[off + i];
    const double r = 1.0 / std::sqrt(ms / n + s.eps);
    std::vector<double> y(n);
    for (size_t i = 0; i < n; ++i) y[i] = x[off + i] * r * w[i];
    return y;
  };
  const std::vector<double> inv = ref_inv_freq(s);
  auto rope = [&](std::vector<double>& v, size_t off, int pos) {
    const int half = d / 2;
    for (int i = 0; i < half; ++i) {
      const double c = std::cos(pos * inv[i]), sn = std::sin(pos * inv[i]);
      const double a = v[off + i], b = v[off + i + half];
      v[off + i] = a * c - b * sn;
      v[off + i + half] = b * c + a * sn;
    }
  };
  std::vector<std::vector<double>> x(T, std::vector<double>(H));
  for (int p = 0; p < T; ++p)
    for (int i = 0; i < H; ++i) x[p][i] = W("model.embed_tokens.weight")[ids[p] * H + i];
  RefOutput out;
  out.keys.resize(s.layers);
  for (int l = 0; l < s.layers; ++l) {
    const std::string pre = "model.layers." + std::to_string(l) + ".";
    std::vector<std::vector<double>> Q(T), K(T), V(T);
    for (int p = 0; p < T; ++p) {
      const auto h = rmsnorm(x[p], W(pre + "input_layernorm.weight").data(), 0, H);
      Q[p] = matvec(W(pre + "self_attn.q_proj.weight"), h, s.heads * d);
      K[p] = matvec(W(pre + "self_attn.k_proj.weight"), h, s.kv_heads * d);
      V[p] = matvec(W(pre + "self_attn.v_proj.weight"), h, s.kv_heads * d);
      if (s.bias && !o.ignore_bias) {
        for (int i = 0; i < s.heads * d; ++i) Q[p][i] += W(pre + "self_attn.q_proj.bias")[i];
        for (int i = 0; i < s.kv_heads * d; ++i) K[p][i] += W(pre + "self_attn.k_proj.bias")[i];
        for (int i = 0; i < s.kv_heads * d; ++i) V[p][i] += W(pre + "self_attn.v_proj.bias")[i];
      }
      if (s.qk_norm && !o.ignore_qk_norm) {
        for (int hh = 0; hh < s.heads; ++hh) {
          const auto y = rmsnorm(Q[p], W(pre + "self_attn.q_norm.weight").data(), hh * d, d);
          std::copy(y.begin(), y.end(), Q[p].begin() + hh * d);
        }
        for (int hh = 0; hh < s.kv_heads; ++hh) {
          const auto y = rmsnorm(K[p], W(pre + "self_attn.k_norm.weight").data(), hh * d, d);
          std::copy(y.begin(), y.end(), K[p].begin() + hh * d);
        }
      }
      for (int hh = 0; hh < s.heads; ++hh) rope(Q[p], hh * d, p);
      for (int hh = 0; hh < s.kv_heads; ++hh) rope(K[p], hh * d, p);
    }
    out.keys[l].assign(s.kv_heads, std::vector<std::vector<double>>(T, std::vector<double>(d)));
    for (int hh = 0; hh < s.kv_heads; ++hh)
      for (int p = 0; p < T; ++p)
        for (int i = 0; i < d; ++i) out.keys[l][hh][p][i] = K[p][hh * d + i];
    for (int p = 0; p < T; ++p) {
      std::vector<double> attn(s.heads * d, 0.0);
      for (int j = 0; j < s.heads; ++j) {
        const int kvh = o.wrong_gqa ? j % s.kv_heads : j / G;
        std::vector<double> sc;
        std::vector<int> pos;
        for (int u = 0; u <= p; ++u) {
          if (s.sliding_window > 0 && u <= p - s.sliding_window) continue;
          double dot = 0;
          for (int i = 0; i < d; ++i) dot += Q[p][j * d + i] * K[u][kvh * d + i];
          sc.push_back(dot / std::sqrt(double(d)));
          pos.push_back(u);
        }
        double mx = -1e300, sum = 0;
        for (double v : sc) mx = std::max(mx, v);
        for (double& v : sc) sum += (v = std::exp(v - mx));
        for (size_t k = 0; k < sc.size(); ++k)
          for (int i = 0; i < d; ++i) attn[j * d + i] += sc[k] / sum * V[pos[k]][kvh * d + i];
      }
      const auto o_out = matvec(W(pre + "self_attn.o_proj.weight"), attn, H);
      for (int i = 0; i < H; ++i) x[p][i] += o_out[i];
      const auto h2 = rmsnorm(x[p], W(pre + "post_attention_layernorm.weight").data(), 0, H);
      const auto g = matvec(W(pre + "mlp.gate_proj.weight"), h2, s.inter);
      const auto u = matvec(W(pre + "mlp.up_proj.weight"), h2, s.inter);
      std::vector<double> a(s.inter);
      for (int i = 0; i < s.inter; ++i) a[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
      const auto dn = matvec(W(pre + "mlp.down_proj.weight"), a, H);
      for (int i = 0; i < H; ++i) x[p][i] += dn[i];
    }
  }
  const std::string head = t.count("lm_head.weight") ? "lm_head.weight" : "model.embed_tokens.weight";
  for (int p = 0; p < T; ++p) {
    const auto h = rmsnorm(x[p], W("model.norm.weight").data(), 0, H);
    out.logits.push_back(matvec(W(head), h, s.vocab));
  }
  return out;
}

}  // namespace synth
