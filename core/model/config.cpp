#include "core/model/config.h"

#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/util/error.h"

namespace kvscope {

using json = nlohmann::json;
namespace fs = std::filesystem;

std::string_view arch_name(Arch a) {
  switch (a) {
    case Arch::Llama: return "LlamaForCausalLM";
    case Arch::Mistral: return "MistralForCausalLM";
    case Arch::Qwen2: return "Qwen2ForCausalLM";
    case Arch::Qwen3: return "Qwen3ForCausalLM";
  }
  return "?";
}

int64_t ModelConfig::param_count() const {
  const int64_t h = hidden_size, hd = head_dim;
  int64_t attn = h * num_heads * hd + 2 * h * num_kv_heads * hd + num_heads * hd * h;
  if (attention_bias) attn += num_heads * hd + 2 * num_kv_heads * hd;
  if (qk_norm) attn += 2 * hd;
  const int64_t mlp = 3 * h * static_cast<int64_t>(intermediate_size);
  const int64_t layer = attn + mlp + 2 * h;
  int64_t total = num_layers * layer + static_cast<int64_t>(vocab_size) * h + h;
  if (!tie_word_embeddings) total += static_cast<int64_t>(vocab_size) * h;
  return total;
}

namespace {

int get_int(const json& j, const char* key, const std::string& where, bool required, int def = 0) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) fail(where, "missing \"{}\"", key);
    return def;
  }
  if (!it->is_number_integer()) fail(where, "\"{}\" must be an integer", key);
  const int64_t v = it->get<int64_t>();
  if (v < 0 || v > (int64_t{1} << 30)) fail(where, "\"{}\" = {} is out of range", key, v);
  return static_cast<int>(v);
}

double get_num(const json& j, const char* key, const std::string& where, double def) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  if (!it->is_number()) fail(where, "\"{}\" must be a number", key);
  return it->get<double>();
}

bool get_bool(const json& j, const char* key, const std::string& where, bool def) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  if (!it->is_boolean()) fail(where, "\"{}\" must be true or false", key);
  return it->get<bool>();
}

// bos/eos may be an int or a list of ints (Llama 3); we keep the first.
int get_token_id(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end()) return -1;
  if (it->is_number_integer()) return it->get<int>();
  if (it->is_array() && !it->empty() && (*it)[0].is_number_integer()) return (*it)[0].get<int>();
  return -1;
}

}  // namespace

ModelConfig parse_config(const std::string& text, const std::string& where) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {  // parse_error, or out_of_range for 1e309
    fail(where, "not valid JSON ({})", e.what());
  }
  if (!j.is_object()) fail(where, "not a JSON object");
  ModelConfig c;

  std::string arch;
  if (auto it = j.find("architectures"); it != j.end() && it->is_array() && !it->empty() && (*it)[0].is_string())
    arch = (*it)[0].get<std::string>();
  if (arch.empty()) fail(where, "missing \"architectures\" (expected e.g. [\"LlamaForCausalLM\"])");
  if (arch == "LlamaForCausalLM") c.arch = Arch::Llama;
  else if (arch == "MistralForCausalLM") c.arch = Arch::Mistral;
  else if (arch == "Qwen2ForCausalLM") c.arch = Arch::Qwen2;
  else if (arch == "Qwen3ForCausalLM") c.arch = Arch::Qwen3;
  else
    fail(where, "unsupported architecture \"{}\" (supported: LlamaForCausalLM, MistralForCausalLM, "
                "Qwen2ForCausalLM, Qwen3ForCausalLM)", arch);
  if (auto it = j.find("model_type"); it != j.end() && it->is_string()) c.model_type = it->get<std::string>();

  c.hidden_size = get_int(j, "hidden_size", where, true);
  c.intermediate_size = get_int(j, "intermediate_size", where, true);
  c.num_layers = get_int(j, "num_hidden_layers", where, true);
  c.num_heads = get_int(j, "num_attention_heads", where, true);
  c.num_kv_heads = get_int(j, "num_key_value_heads", where, false, c.num_heads);
  c.vocab_size = get_int(j, "vocab_size", where, true);
  c.max_position_embeddings = get_int(j, "max_position_embeddings", where, false, 0);
  if (c.hidden_size == 0 || c.intermediate_size == 0 || c.num_layers == 0 || c.num_heads == 0 ||
      c.num_kv_heads == 0 || c.vocab_size == 0)
    fail(where, "hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, "
                "num_key_value_heads and vocab_size must all be positive");
  if (c.num_heads % c.num_kv_heads != 0)
    fail(where, "num_attention_heads {} is not a multiple of num_key_value_heads {}", c.num_heads, c.num_kv_heads);
  c.head_dim = get_int(j, "head_dim", where, false, 0);
  if (c.head_dim == 0) {
    if (c.hidden_size % c.num_heads != 0)
      fail(where, "hidden_size {} is not divisible by num_attention_heads {} and no head_dim is given",
           c.hidden_size, c.num_heads);
    c.head_dim = c.hidden_size / c.num_heads;
  }
  if (c.head_dim % 2 != 0) fail(where, "head_dim {} must be even for rotary embeddings", c.head_dim);

  if (auto it = j.find("hidden_act"); it != j.end() && it->is_string() && *it != "silu")
    fail(where, "hidden_act \"{}\" is not supported (only silu)", it->get<std::string>());
  if (get_bool(j, "mlp_bias", where, false)) fail(where, "mlp_bias = true is not supported");

  c.rms_norm_eps = get_num(j, "rms_norm_eps", where, 1e-6);
  c.rope_theta = get_num(j, "rope_theta", where, 10000.0);
  if (!(c.rms_norm_eps > 0) || !(c.rope_theta > 0)) fail(where, "rms_norm_eps and rope_theta must be positive");
  c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", where, false);
  c.attention_bias = get_bool(j, "attention_bias", where, false);
  if (c.arch == Arch::Qwen2) c.attention_bias = true;  // Qwen2 always has q/k/v biases
  c.qk_norm = c.arch == Arch::Qwen3;
  if (auto it = j.find("torch_dtype"); it != j.end() && it->is_string()) c.torch_dtype = it->get<std::string>();
  c.bos_token_id = get_token_id(j, "bos_token_id");
  c.eos_token_id = get_token_id(j, "eos_token_id");

  // Sliding-window attention changes results only past the window; we refuse it rather than
  // silently computing full attention.
  if ((c.arch == Arch::Qwen2 || c.arch == Arch::Qwen3) && get_bool(j, "use_sliding_window", where, false))
    fail(where, "use_sliding_window = true is not supported");
  if (c.arch == Arch::Mistral) {
    const int win = get_int(j, "sliding_window", where, false, 0);
    if (win > 0) c.sliding_window = win;
  }

  if (auto it = j.find("rope_scaling"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) fail(where, "rope_scaling must be an object or null");
    std::string type;
    if (auto t = it->find("rope_type"); t != it->end() && t->is_string()) type = t->get<std::string>();
    else if (auto t2 = it->find("type"); t2 != it->end() && t2->is_string()) type = t2->get<std::string>();
    const double factor = get_num(*it, "factor", where, 1.0);
    if (type == "default" || type.empty()) {
      c.rope_scaling = RopeScaling::None;
    } else if (type == "linear") {
      c.rope_scaling = RopeScaling::Linear;
    } else if (type == "llama3") {
      c.rope_scaling = RopeScaling::Llama3;
      c.rope_low_freq_factor = get_num(*it, "low_freq_factor", where, 1.0);
      c.rope_high_freq_factor = get_num(*it, "high_freq_factor", where, 4.0);
      c.rope_original_max_positions = get_int(*it, "original_max_position_embeddings", where, false, 8192);
      if (!(c.rope_high_freq_factor > c.rope_low_freq_factor))
        fail(where, "rope_scaling: high_freq_factor must exceed low_freq_factor");
    } else {
      fail(where, "rope_scaling type \"{}\" is not supported (supported: linear, llama3)", type);
    }
    if (!(factor > 0)) fail(where, "rope_scaling.factor must be positive");
    c.rope_factor = factor;
  }
  return c;
}

ModelConfig load_config(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) fail(path, "does not exist");
  std::string file = path;
  if (fs::is_directory(path, ec)) file = (fs::path(path) / "config.json").string();
  std::ifstream in(file, std::ios::binary);
  if (!in) fail(file, "cannot open (a model folder needs a Hugging Face config.json)");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_config(ss.str(), file);
}

// --- SHA-256 (FIPS 180-4); small enough to keep here rather than link a crypto library ---------
std::string sha256_hex(const std::string& bytes) {
  static constexpr std::array<uint32_t, 64> k = {
      0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
      0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
      0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
      0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
      0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
      0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
      0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
      0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::string msg = bytes;
  const uint64_t bit_len = static_cast<uint64_t>(bytes.size()) * 8;
  msg.push_back(static_cast<char>(0x80));
  while (msg.size() % 64 != 56) msg.push_back('\0');
  for (int i = 7; i >= 0; --i) msg.push_back(static_cast<char>((bit_len >> (8 * i)) & 0xff));
  auto rotr = [](uint32_t x, int n) { return (x >> n) | (x << (32 - n)); };
  for (size_t off = 0; off < msg.size(); off += 64) {
    uint32_t w[64];
    for (int i = 0; i < 16; ++i) {
      const auto* p = reinterpret_cast<const unsigned char*>(msg.data() + off + 4 * i);
      w[i] = (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
    }
    for (int i = 16; i < 64; ++i) {
      const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; ++i) {
      const uint32_t S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
      const uint32_t ch = (e & f) ^ (~e & g);
      const uint32_t t1 = hh + S1 + ch + k[i] + w[i];
      const uint32_t S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
      const uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
      const uint32_t t2 = S0 + maj;
      hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
  }
  std::string out;
  for (uint32_t v : h) out += fmt::format("{:08x}", v);
  return out;
}

std::string config_digest(const std::string& config_path) {
  std::string file = config_path;
  if (fs::is_directory(file)) file = (fs::path(file) / "config.json").string();
  std::ifstream in(file, std::ios::binary);
  if (!in) fail(file, "cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  return "sha256:" + sha256_hex(ss.str());
}

}  // namespace kvscope
