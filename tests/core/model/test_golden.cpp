// The shared real checkpoints against their golden.json (independent float64 numpy reference,
// cross-checked with llama2.c / PyTorch): tokenization, greedy ids, last logits, captured keys.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "core/model/capture.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"
#include "test_util.h"

using json = nlohmann::json;
using namespace kvscope;

namespace {

json read_json(const std::string& path) {
  std::ifstream in(path);
  REQUIRE(in.good());
  return json::parse(in);
}

bool close_rel(double a, double b, double rel) { return std::abs(a - b) <= rel * std::max(1.0, std::abs(b)); }

void check_model(const std::string& name) {
  const std::string dir = kvscope::test::models_dir() + "/" + name;
  INFO("model " << name);
  const json golden = read_json(dir + "/golden.json");
  auto model = Model::load(dir);
  auto tok = load_tokenizer(dir);
  const ModelConfig& c = model->config();
  const int n_new = golden.at("n_new_tokens").get<int>();
  REQUIRE(!golden.at("cases").empty());

  for (const auto& cs : golden.at("cases")) {
    const std::string text = cs.at("text").get<std::string>();
    INFO("prompt: " << text);
    const auto expect_prompt = cs.at("prompt_ids").get<std::vector<int32_t>>();
    const std::vector<int32_t> prompt = tok->encode(text, /*add_bos=*/true);
    CHECK(prompt == expect_prompt);

    // Greedy continuation, token for token.
    const auto expect_greedy = cs.at("greedy_ids").get<std::vector<int32_t>>();
    const std::vector<int32_t> greedy = model->generate_greedy(expect_prompt, n_new);
    CHECK(greedy == expect_greedy);
    std::vector<int32_t> all = expect_prompt;
    all.insert(all.end(), expect_greedy.begin(), expect_greedy.end());
    CHECK(tok->decode(all).substr(tok->decode(expect_prompt).size()) == cs.at("greedy_text").get<std::string>());

    // Last-position logits: top-10 ids and values, norm, first values.
    auto cache = model->new_cache();
    const std::vector<float> logits = model->forward(expect_prompt, *cache);
    REQUIRE(logits.size() == static_cast<size_t>(c.vocab_size));
    const json& ll = cs.at("last_prompt_logits");
    CHECK(ll.at("position").get<int>() == static_cast<int>(expect_prompt.size()) - 1);
    std::vector<int32_t> order(logits.size());
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + 10, order.end(),
                      [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
    const auto top_ids = ll.at("top10_ids").get<std::vector<int32_t>>();
    const auto top_vals = ll.at("top10_values").get<std::vector<double>>();
    for (int i = 0; i < 10; ++i) {
      INFO("rank " << i);
      CHECK(order[i] == top_ids[i]);
      CHECK(close_rel(logits[top_ids[i]], top_vals[i], 1e-3));
    }
    const auto first8 = ll.at("first8_values").get<std::vector<double>>();
    for (int i = 0; i < 8; ++i) CHECK(close_rel(logits[i], first8[i], 1e-3));
    double l2 = 0;
    for (float v : logits) l2 += double(v) * v;
    CHECK(close_rel(std::sqrt(l2), ll.at("l2_norm").get<double>(), 1e-3));

    // Captured post-RoPE keys, kv head 0, positions 0..3 (of prompt + greedy).
    const KvDump dump = capture_dump(*model, all, {});
    const json& keys = cs.at("keys_post_rope_kv_head0_first8");
    for (auto it = keys.begin(); it != keys.end(); ++it) {
      const int layer = std::stoi(it.key().substr(6));
      REQUIRE(layer < c.num_layers);
      const float* k = dump.k(layer, 0);
      const auto rows = it.value().get<std::vector<std::vector<double>>>();
      for (size_t pos = 0; pos < rows.size(); ++pos)
        for (size_t dim = 0; dim < rows[pos].size(); ++dim) {
          INFO(it.key() << " pos " << pos << " dim " << dim);
          CHECK(close_rel(k[pos * c.head_dim + dim], rows[pos][dim], 1e-4));
        }
      if (cs.contains("keys_post_rope_kv_head0_l2")) {
        const auto l2s = cs["keys_post_rope_kv_head0_l2"].at(it.key()).get<std::vector<double>>();
        for (size_t pos = 0; pos < l2s.size(); ++pos) {
          double s = 0;
          for (int dim = 0; dim < c.head_dim; ++dim) s += double(k[pos * c.head_dim + dim]) * k[pos * c.head_dim + dim];
          CHECK(close_rel(std::sqrt(s), l2s[pos], 1e-4));
        }
      }
    }
  }
}

}  // namespace

TEST_CASE("stories260K matches golden.json (llama2.c vocabulary, GQA, explicit lm_head)", "[model][golden]") {
  check_model("stories260K");
}

TEST_CASE("tinystories-llama-8L matches golden.json (SentencePiece, tied embeddings)", "[model][golden]") {
  check_model("tinystories-llama-8L");
}

TEST_CASE("tinystories-qwen2-4L matches golden.json (F16 weights, q/k/v bias)", "[model][golden]") {
  check_model("tinystories-qwen2-4L");
}
