#pragma once
// The parts of a Hugging Face config.json the Llama-family forward needs, validated.
#include <cstdint>
#include <string>
#include <string_view>

namespace kvscope {

enum class Arch { Llama, Mistral, Qwen2, Qwen3 };
std::string_view arch_name(Arch a);  // "LlamaForCausalLM", ...

enum class RopeScaling { None, Linear, Llama3 };

struct ModelConfig {
  Arch arch = Arch::Llama;
  std::string model_type;  // config "model_type" (informational)
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;
  int num_heads = 0;     // query heads
  int num_kv_heads = 0;  // key/value heads (GQA when < num_heads)
  int head_dim = 0;      // explicit "head_dim" or hidden_size / num_heads
  int vocab_size = 0;
  int max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling = RopeScaling::None;
  double rope_factor = 1.0;             // linear and llama3
  double rope_low_freq_factor = 1.0;    // llama3
  double rope_high_freq_factor = 4.0;   // llama3
  int rope_original_max_positions = 8192;  // llama3
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v biases (always on for Qwen2)
  bool qk_norm = false;         // Qwen3 per-head RMSNorm of q and k before RoPE
  int sliding_window = 0;       // Mistral: attend to the last N positions only (0 = full)
  std::string torch_dtype;      // "float32", "float16", "bfloat16" or empty
  int bos_token_id = -1;
  int eos_token_id = -1;

  int group() const { return num_heads / num_kv_heads; }  // query heads per KV head
  int64_t param_count() const;                            // from the shapes, tied lm_head counted once
};

// Reads and checks `<dir>/config.json` (or a path to a config.json); throws Error naming the file.
ModelConfig load_config(const std::string& path);
ModelConfig parse_config(const std::string& json_text, const std::string& where);

// Hex SHA-256 of the bytes of config.json (the dump's config_digest).
std::string config_digest(const std::string& config_path);
std::string sha256_hex(const std::string& bytes);

}  // namespace kvscope
