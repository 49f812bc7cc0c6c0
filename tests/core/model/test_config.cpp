// config.json parsing and the config digest.
#include <catch2/catch.hpp>

#include "core/model/config.h"
#include "core/util/error.h"

using namespace kvscope;

TEST_CASE("SHA-256 matches the FIPS 180-2 test vectors", "[model][config]") {
  CHECK(sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST_CASE("config.json: defaults, explicit head_dim, rope scaling, per-architecture flags", "[model][config]") {
  const std::string base = R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 8, "vocab_size": 100)";
  ModelConfig c = parse_config(base + "}", "a/config.json");
  CHECK(c.arch == Arch::Llama);
  CHECK(c.num_kv_heads == 8);  // absent -> multi-head
  CHECK(c.head_dim == 8);      // hidden / heads
  CHECK(c.rope_theta == 10000.0);
  CHECK_FALSE(c.tie_word_embeddings);
  CHECK(c.rope_scaling == RopeScaling::None);

  c = parse_config(base + R"(, "head_dim": 16, "num_key_value_heads": 2, "eos_token_id": [128001, 128009],
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192}})", "b/config.json");
  CHECK(c.head_dim == 16);
  CHECK(c.group() == 4);
  CHECK(c.eos_token_id == 128001);
  CHECK(c.rope_scaling == RopeScaling::Llama3);
  CHECK(c.rope_factor == 8.0);
  CHECK(c.rope_original_max_positions == 8192);

  c = parse_config(R"({"architectures": ["Qwen2ForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 100,
    "rope_scaling": {"type": "linear", "factor": 2.0}})", "q/config.json");
  CHECK(c.attention_bias);  // Qwen2 always has q/k/v biases
  CHECK_FALSE(c.qk_norm);
  CHECK(c.rope_scaling == RopeScaling::Linear);
  c = parse_config(R"({"architectures": ["Qwen3ForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 100,
    "head_dim": 32, "attention_bias": false})", "q3/config.json");
  CHECK(c.qk_norm);
  CHECK_FALSE(c.attention_bias);
  CHECK(c.head_dim == 32);

  CHECK_THROWS_WITH(parse_config(base + R"(, "hidden_act": "gelu"})", "c/config.json"),
                    Catch::Contains("c/config.json") && Catch::Contains("gelu"));
  CHECK_THROWS_WITH(parse_config(base + R"(, "num_hidden_layers": "two"})", "d/config.json"),
                    Catch::Contains("d/config.json") && Catch::Contains("num_hidden_layers"));
  CHECK_THROWS_WITH(parse_config(R"({"architectures": ["LlamaForCausalLM"]})", "e/config.json"),
                    Catch::Contains("e/config.json") && Catch::Contains("missing"));
  CHECK_THROWS_WITH(load_config("/nonexistent/model"), Catch::Contains("/nonexistent/model: does not exist"));
}
