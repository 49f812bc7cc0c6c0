// Sweep specs: validation errors, method variants, cell order and cell hashes.
#include <catch2/catch.hpp>

#include <filesystem>
#include <set>

#include "core/policy/policy.h"
#include "core/sweep/sweep.h"
#include "core/util/error.h"
#include "core/util/content_hash.h"
#include "test_util.h"
#include "tests/sweep/sweep_fixtures.h"

using namespace kvscope;
using Catch::Contains;
using test::write_file;

namespace {

// Parses `text` as the spec file `spec.json` in `tmp`; returns the error message ("" if none).
std::string spec_error(const TempDir& tmp, const std::string& text) {
  const std::string path = tmp.path("spec.json");
  write_file(path, text);
  try {
    load_sweep_spec(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("sweep spec errors name the file and the JSON path", "[sweep]") {
  TempDir tmp;
  test::write_synth_dump(tmp.path("a.safetensors"), 1, 32);
  const std::string spec = tmp.path("spec.json");
  const std::string head = R"({"name": "t", "dumps": ["a.safetensors"], )";
  struct Case {
    std::string text, expect;
  };
  const std::vector<Case> cases = {
      {head + R"("methods": [{"preset": "uniform-4"}, {"preset": "watersic-2", "bits": [2]}]})",
       spec + ": $.methods[1].bits: watersic is set by \"rates\""},
      {head + R"("methods": [{"preset": "kivi-2", "rates": [1, 2]}]})", spec + ": $.methods[0].rates: only watersic takes"},
      {head + R"("methods": [{"preset": "uniform-4", "bits": [2, 9]}]})",
       spec + ": $.methods[0].bits[1]: must be an integer in 1..8"},
      {head + R"("methods": [{"preset": "uniform-4", "bits": []}]})", spec + ": $.methods[0].bits: must be a non-empty array"},
      {head + R"("methods": [{"preset": "fp16", "bits": [4]}]})", spec + ": $.methods[0].bits: fp16 keeps every tensor"},
      {head + R"("methods": [{"preset": "no-such-preset"}]})", spec + ": $.methods[0].preset: no-such-preset: unknown preset"},
      {head + R"("methods": [{"policy": "missing.json"}]})", spec + ": $.methods[0].policy: "},
      {head + R"("methods": [{"preset": "uniform-4", "policy": "x.json"}]})",
       spec + ": $.methods[0]: give exactly one of \"preset\" or \"policy\""},
      {head + R"("methods": [{"preset": "uniform-4", "bitz": [2]}]})", spec + ": $.methods[0].bitz: unknown field"},
      {head + R"("methods": [{"preset": "uniform-4"}], "colour": 1})", spec + ": $.colour: unknown field"},
      {head + R"("methods": []})", spec + ": $.methods: must be a non-empty array"},
      {head + R"("methods": [{"preset": "uniform-4", "bits": [4]}, {"preset": "uniform-4", "bits": [4]}]})",
       spec + ": $.methods[1].bits[0]: policy uniform-4@4b is also $.methods[0].bits[0]"},
      {head + R"("methods": [{"preset": "uniform-4"}], "attn_queries": -3})", spec + ": $.attn_queries: must be a positive"},
      {head + R"("methods": [{"preset": "uniform-4"}], "replay": {"max_tokens": 2, "x": 1}})", spec + ": $.replay.x: unknown field"},
      {R"({"name": "t", "models": ["m"], "methods": [{"preset": "fp16"}]})", spec + ": $.workloads: replay cells need both"},
      {R"({"name": "t", "methods": [{"preset": "fp16"}]})", spec + ": $: give \"dumps\""},
      {R"({"name": "has space", "dumps": ["a.safetensors"], "methods": [{"preset": "fp16"}]})", spec + ": $.name: must be"},
      {R"({"name": "t", "dumps": ["a.safetensors"], "workloads": ["text:x.txt"], "models": [")" + tmp.path("a.safetensors") +
           R"("], "methods": [{"preset": "fp16"}]})",
       spec + ": $.models[0]: "},
      {R"({"name": "t", "dumps": [3], "methods": [{"preset": "fp16"}]})", spec + ": $.dumps[0]: must be a non-empty string"},
      {R"({"name": "t", "dumps": ["a.safetensors"], "methods": [{"preset": "fp16"}],)", spec + ": not valid JSON"},
  };
  for (const auto& c : cases) {
    INFO(c.text);
    CHECK_THAT(spec_error(tmp, c.text), Contains(c.expect));
  }
  // A bit count the preset itself refuses (symmetric needs >= 2) names the variant too.
  write_file(tmp.path("sym.json"), R"({"method": "uniform", "k": {"bits": 4, "symmetric": true}, "v": {"bits": 4}})");
  CHECK_THAT(spec_error(tmp, head + R"("methods": [{"policy": "sym.json", "bits": [3, 1]}]})"),
             Contains(spec + ": $.methods[0].bits[1]: policy sym: "));
  CHECK(spec_error(tmp, head + R"("methods": [{"policy": "sym.json", "bits": [3, 2]}]})").empty());
}

TEST_CASE("bits and rates make renamed policy variants", "[sweep]") {
  TempDir tmp;
  test::write_synth_dump(tmp.path("a.safetensors"), 1, 32);
  // A policy file with two overrides: one naming bits (follows the sweep), one keeping fp16.
  write_file(tmp.path("mine.json"), R"({"name": "mine", "method": "uniform", "k": {"bits": 4, "group_size": 32},
    "v": {"bits": 4}, "overrides": [{"layers": [0], "kind": "k", "bits": 8}, {"layers": [1], "heads": [0], "fp16": true}]})");
  write_file(tmp.path("spec.json"), R"({"name": "t", "dumps": ["a.safetensors"], "methods": [
    {"preset": "uniform-4", "bits": [2, 3]}, {"preset": "kivi-2", "bits": [4]}, {"preset": "watersic-2", "rates": [1, 2.5]},
    {"policy": "mine.json", "bits": [3]}, {"preset": "fp16"}]})");
  const SweepSpec s = load_sweep_spec(tmp.path("spec.json"));
  std::vector<std::string> names;
  for (const auto& m : s.methods) names.push_back(m.policy.name);
  CHECK(names == std::vector<std::string>{"uniform-4@2b", "uniform-4@3b", "kivi-2@4b", "watersic-2@1r", "watersic-2@2.5r",
                                          "mine@3b", "fp16"});
  CHECK(s.methods[1].policy.k.bits == 3);
  CHECK(s.methods[1].policy.v.bits == 3);
  CHECK(s.methods[1].policy.k.group_size == 32);  // everything else as in the preset
  CHECK(method_name(s.methods[2].policy.method) == "kivi");
  CHECK(s.methods[2].policy.k.bits == 4);
  CHECK(s.methods[2].policy.residual == 128);
  CHECK(s.methods[4].policy.watersic.target_rate == 2.5);
  CHECK(s.methods[3].policy.watersic.target_rate == 1.0);
  const Policy& mine = s.methods[5].policy;
  REQUIRE(mine.overrides.size() == 2);
  CHECK(apply_override(mine.k, mine.overrides[0]).bits == 3);  // the override's bits followed
  CHECK(apply_override(mine.v, mine.overrides[1]).full_precision);
  CHECK(s.methods[3].source == "$.methods[2].rates[0]");
}

TEST_CASE("cells come in grid order with stable content hashes", "[sweep]") {
  TempDir tmp;
  test::write_synth_dump(tmp.path("a.safetensors"), 1, 32);
  test::write_synth_dump(tmp.path("b.safetensors"), 2, 32);
  write_file(tmp.path("words.txt"), "Once upon a time there was a little cat. It liked to play in the sun.\n");
  const std::string model = test::models_dir() + "/stories260K";
  auto spec_text = [&](const std::string& bits, int attn, const std::string& workload2) {
    return R"({"name": "t", "dumps": ["a.safetensors", "b.safetensors"], "models": [")" + model +
           R"("], "workloads": ["text:words.txt;window=8;n=1", ")" + workload2 + R"("],
             "methods": [{"preset": "uniform-4", "bits": [)" + bits + R"(]}, {"preset": "fp16"}],
             "attn_queries": )" + std::to_string(attn) + R"(, "replay": {"max_tokens": 4}})";
  };
  auto plan = [&](const std::string& text) {
    write_file(tmp.path("spec.json"), text);
    return plan_cells(load_sweep_spec(tmp.path("spec.json")));
  };
  const std::string base_text = spec_text("2, 3", 64, "passkey:len=200,depth=0.5,n=1");
  const auto cells = plan(base_text);
  // 2 dumps x 3 variants, then 1 model x 2 workloads x 3 variants.
  REQUIRE(cells.size() == 12);
  for (int i = 0; i < 12; ++i) CHECK(cells[i].index == i);
  CHECK(cells[0].kind == CellKind::Quantize);
  CHECK((cells[2].dump == 0 && cells[2].method == 2 && cells[3].dump == 1 && cells[3].method == 0));
  CHECK(cells[6].kind == CellKind::Replay);
  CHECK((cells[6].workload == 0 && cells[9].workload == 1 && cells[11].method == 2));
  CHECK(cells[0].target == "a.safetensors");
  CHECK(cells[9].target == model + " passkey:len=200,depth=0.5,n=1");
  std::set<std::string> distinct;
  for (const auto& c : cells) {
    CHECK(c.hash == hash_text(c.identity));
    CHECK(c.hash.rfind("fnv1a64:", 0) == 0);
    distinct.insert(c.hash);
  }
  CHECK(distinct.size() == 12);

  // Same spec twice: same hashes.
  const auto again = plan(base_text);
  for (size_t i = 0; i < cells.size(); ++i) CHECK(again[i].hash == cells[i].hash);

  // A changed bit count changes only its own cells (index 1 = uniform-4@3b on a, 4 on b, 7 and 10 replay).
  const auto bits4 = plan(spec_text("2, 4", 64, "passkey:len=200,depth=0.5,n=1"));
  for (size_t i = 0; i < cells.size(); ++i) {
    INFO(i);
    CHECK((bits4[i].hash != cells[i].hash) == (i % 3 == 1));
  }
  // attn_queries is part of quantize cells only; the workload spec of its replay cells only.
  const auto attn = plan(spec_text("2, 3", 32, "passkey:len=200,depth=0.5,n=1"));
  for (size_t i = 0; i < cells.size(); ++i) CHECK((attn[i].hash != cells[i].hash) == (i < 6));
  const auto wl = plan(spec_text("2, 3", 64, "passkey:len=200,depth=0.25,n=1"));
  for (size_t i = 0; i < cells.size(); ++i) CHECK((wl[i].hash != cells[i].hash) == (i >= 9));

  // One byte of dump b changes b's cells only.
  {
    std::fstream f(tmp.path("b.safetensors"), std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(-3, std::ios::end);
    char c = 0;
    f.read(&c, 1);
    f.seekp(-3, std::ios::end);
    c = static_cast<char>(c ^ 1);
    f.write(&c, 1);
  }
  const auto dump_b = plan(base_text);
  for (size_t i = 0; i < cells.size(); ++i) CHECK((dump_b[i].hash != cells[i].hash) == (i >= 3 && i < 6));
  // A changed workload file changes the replay cells that read it.
  write_file(tmp.path("words.txt"), "Once upon a time there was a little dog. It liked to play in the sun.\n");
  const auto text2 = plan(base_text);
  for (size_t i = 0; i < cells.size(); ++i) CHECK((text2[i].hash != dump_b[i].hash) == (i >= 6 && i < 9));
  // Moving the whole study folder keeps every hash (paths in identities are relative to the spec).
  const std::string moved = tmp.path("moved");
  std::filesystem::create_directories(moved);
  for (const char* f : {"a.safetensors", "b.safetensors", "words.txt"})
    std::filesystem::copy_file(tmp.path(f), moved + "/" + f);
  write_file(moved + "/spec.json", base_text);
  const auto moved_cells = plan_cells(load_sweep_spec(moved + "/spec.json"));
  for (size_t i = 0; i < cells.size(); ++i) CHECK(moved_cells[i].hash == text2[i].hash);
}

TEST_CASE("a grid that lists the same measurement twice is refused", "[sweep]") {
  TempDir tmp;
  test::write_synth_dump(tmp.path("a.safetensors"), 1, 32);
  std::filesystem::copy_file(tmp.path("a.safetensors"), tmp.path("copy.safetensors"));
  write_file(tmp.path("spec.json"), R"({"name": "t", "dumps": ["a.safetensors", "copy.safetensors"],
    "methods": [{"preset": "uniform-4"}, {"preset": "fp16"}]})");
  CHECK_THROWS_WITH(plan_cells(load_sweep_spec(tmp.path("spec.json"))),
                    Contains(tmp.path("spec.json") + ": cell 2 (uniform-4 copy.safetensors) measures the same as cell 0 "
                                                     "(uniform-4 a.safetensors)"));
}

TEST_CASE("model identity follows config, tokenizer and weight bytes", "[sweep]") {
  TempDir tmp;
  const std::string src = test::models_dir() + "/stories260K";
  const std::string dir = tmp.path("model");
  std::filesystem::create_directories(dir);
  for (const char* f : {"config.json", "model.safetensors", "tok512.bin"}) std::filesystem::copy_file(src + "/" + f, dir + "/" + f);
  const std::string h0 = model_identity_hash(dir);
  CHECK(h0 == model_identity_hash(src));  // golden.json, tokens.tsv and llama2c/ are not part of it
  test::write_file(dir + "/README.md", "notes");
  CHECK(model_identity_hash(dir) == h0);
  std::string cfg = test::slurp(dir + "/config.json");
  test::write_file(dir + "/config.json", cfg + " ");
  const std::string h1 = model_identity_hash(dir);
  CHECK(h1 != h0);
  // A fine-tuned checkpoint: same config, same sizes, one weight changed.
  std::string weights = test::slurp(dir + "/model.safetensors");
  weights[weights.size() - 1] ^= 1;
  test::write_file(dir + "/model.safetensors", weights);
  const std::string h2 = model_identity_hash(dir);
  CHECK(h2 != h1);
  std::filesystem::resize_file(dir + "/model.safetensors", weights.size() + 1);
  CHECK(model_identity_hash(dir) != h2);
}

TEST_CASE("--shard I/N parsing", "[sweep]") {
  CHECK(parse_shard("0/1") == std::pair<int, int>{0, 1});
  CHECK(parse_shard("3/4") == std::pair<int, int>{3, 4});
  for (const char* bad : {"4/4", "-1/4", "1", "a/b", "1/0", "1/4x", "", "/4"}) {
    INFO(bad);
    CHECK_THROWS_WITH(parse_shard(bad), Contains("--shard") && Contains("I/N"));
  }
}
