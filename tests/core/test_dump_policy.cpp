// KV dump files and policy JSON: round trips and errors that name the file and the JSON path.
#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/dump/kv_dump.h"
#include "core/policy/policy.h"
#include "core/synth/synth.h"
#include "core/tensor/safetensors.h"
#include "core/util/error.h"
#include "test_util.h"

using namespace kvscope;
using nlohmann::json;

static KvDump small_dump(bool q = true) {
  SynthOptions o;
  o.layers = 3;
  o.kv_heads = 2;
  o.q_heads = 4;
  o.head_dim = 8;
  o.tokens = 10;
  o.queries = q;
  o.planted = {{1, 0, 50.0f}};
  KvDump d = make_synthetic_dump(o);
  d.meta.token_ids = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  return d;
}

TEST_CASE("dump round trip keeps tensors (as fp16) and metadata") {
  TempDir dir;
  KvDump d = small_dump();
  save_dump(dir.path("d.safetensors"), d, DType::F32);
  KvDump e = load_dump(dir.path("d.safetensors"));
  CHECK(e.shape.layers == 3);
  CHECK(e.shape.kv_heads == 2);
  CHECK(e.shape.q_heads == 4);
  CHECK(e.shape.head_dim == 8);
  CHECK(e.shape.tokens == 10);
  CHECK(e.layers[2].k == d.layers[2].k);
  CHECK(e.layers[1].q == d.layers[1].q);
  CHECK(e.layers[0].k_pre_rope == d.layers[0].k_pre_rope);
  CHECK(e.meta.token_ids == d.meta.token_ids);
  CHECK(e.meta.model_id == d.meta.model_id);
  CHECK(e.meta.rope_theta == d.meta.rope_theta);
  CHECK(e.meta.kvscope_version == KVSCOPE_VERSION);
  save_dump(dir.path("h.safetensors"), d, DType::F16);
  KvDump h = load_dump(dir.path("h.safetensors"));
  CHECK(h.meta.dtype == "F16");
  CHECK(h.layers[0].v[5] == round_to_f16(d.layers[0].v[5]));
}

TEST_CASE("a dump written by a user's own hook (names only, no metadata) opens") {
  TempDir dir;
  std::vector<float> k(2 * 5 * 4, 1.0f), v(2 * 5 * 4, 2.0f), q(4 * 5 * 4, 0.5f);
  std::vector<TensorView> t;
  for (int l = 0; l < 2; ++l) {
    t.push_back({"layers." + std::to_string(l) + ".k", DType::F32, {2, 5, 4}, k.data()});
    t.push_back({"layers." + std::to_string(l) + ".v", DType::F32, {2, 5, 4}, v.data()});
    t.push_back({"layers." + std::to_string(l) + ".q", DType::F32, {4, 5, 4}, q.data()});
  }
  write_safetensors(dir.path("hook.safetensors"), t);
  KvDump d = load_dump(dir.path("hook.safetensors"), {.require_q = true});
  CHECK(d.shape.layers == 2);
  CHECK(d.shape.group() == 2);
  CHECK(d.meta.rope_style == "rotate_half");
}

TEST_CASE("bad dumps: missing Q, inconsistent shapes, metadata lies") {
  TempDir dir;
  std::string p = dir.path("noq.safetensors");
  save_dump(p, small_dump(false));
  CHECK_NOTHROW(load_dump(p));
  CHECK_THROWS_WITH(load_dump(p, {.require_q = true}), Catch::StartsWith(p + ": dump has no queries"));

  std::vector<float> a(2 * 5 * 4), b(2 * 6 * 4);
  write_safetensors(p, {{"layers.0.k", DType::F32, {2, 5, 4}, a.data()}, {"layers.0.v", DType::F32, {2, 6, 4}, b.data()}});
  CHECK_THROWS_WITH(load_dump(p), Catch::Contains("'layers.0.v' has shape [2, 6, 4], expected [2, 5, 4]"));
  write_safetensors(p, {{"layers.0.k", DType::F32, {2, 5, 4}, a.data()}});
  CHECK_THROWS_WITH(load_dump(p), Catch::Contains("'layers.0.v' is missing"));
  write_safetensors(p, {{"weights", DType::F32, {40}, a.data()}});
  CHECK_THROWS_WITH(load_dump(p), Catch::Contains("not a KV dump"));
  write_safetensors(p, {{"layers.0.k", DType::F32, {2, 5, 4}, a.data()}, {"layers.0.v", DType::F32, {2, 5, 4}, a.data()}},
                    {{"tokens", "7"}});
  CHECK_THROWS_WITH(load_dump(p), Catch::Contains("__metadata__.tokens = 7 but the tensors say 5"));
  std::vector<float> q3(3 * 5 * 4);
  write_safetensors(p, {{"layers.0.k", DType::F32, {2, 5, 4}, a.data()}, {"layers.0.v", DType::F32, {2, 5, 4}, a.data()},
                        {"layers.0.q", DType::F32, {3, 5, 4}, q3.data()}});
  CHECK_THROWS_WITH(load_dump(p), Catch::Contains("q_heads 3 is not a positive multiple of kv_heads 2"));
}

static std::string policy_error(const std::string& text) {
  try {
    parse_policy(json::parse(text), "p.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST_CASE("policy validation names the JSON path of each error") {
  CHECK(policy_error(R"({"method": "uniform", "k": {"bits": 9}})") == "p.json: $.k.bits: must be an integer in 1..8");
  CHECK(policy_error(R"({"method": "zip"})") == "p.json: $.method: unknown method 'zip' (expected fp16, uniform, kivi, kvmix, skvq, watersic, ggml, fp8, nvfp4, turboquant, qjl or kvquant)");
  CHECK(policy_error(R"({"k": {}})") == "p.json: $.method: is required (fp16, uniform, kivi, kvmix, skvq, watersic, ggml, fp8, nvfp4, turboquant, qjl or kvquant)");
  CHECK(policy_error(R"({"method": "uniform", "v": {"axis": "diagonal"}})") ==
        "p.json: $.v.axis: must be \"token\", \"channel\" or \"head\"");
  CHECK(policy_error(R"({"method": "uniform", "v": {"group_szie": 4}})") == "p.json: $.v.group_szie: unknown field");
  CHECK(policy_error(R"({"method": "uniform", "k": {"clip_ratio": 0}})") == "p.json: $.k.clip_ratio: must be in (0, 1]");
  CHECK(policy_error(R"({"method": "uniform", "k": {"bits": 1, "symmetric": true}})") ==
        "p.json: $.k: symmetric quantization needs at least 2 bits");
  CHECK(policy_error(R"({"method": "kivi", "residual": 100})") == "p.json: $.residual: must be a multiple of k.group_size (32) for kivi");
  CHECK(policy_error(R"({"method": "kvmix", "outlier_heads": {"rule": "list", "heads": [[0]]}})") ==
        "p.json: $.outlier_heads.heads[0]: must be a [layer, head] pair of non-negative integers");
  CHECK(policy_error(R"({"method": "uniform", "overrides": [{"layers": [0], "bits": 0}]})") ==
        "p.json: $.overrides[0].bits: must be an integer in 1..8");
  CHECK(policy_error(R"({"method": "uniform", "overrides": [{"layers": [-1]}]})") ==
        "p.json: $.overrides[0].layers[0]: must be an integer in 0..65536");
  CHECK(policy_error(R"([1, 2])") == "p.json: $: must be an object");
  CHECK(policy_error(R"({"method": "uniform"})").empty());
}

TEST_CASE("every preset parses, lists with a description, and survives a JSON round trip") {
  auto presets = list_presets();
  std::vector<std::string> names;
  for (auto& p : presets) names.push_back(p.name);
  for (const char* want : {"fp16", "uniform-8", "uniform-4", "uniform-2", "kivi-2", "kivi-4", "kvmix-1", "kvmix-2", "kvmix-3"})
    CHECK(std::count(names.begin(), names.end(), want) == 1);
  for (auto& info : presets) {
    CHECK_FALSE(info.description.empty());
    Policy p = load_preset(info.name);
    Policy again = parse_policy(policy_to_json(p), "round trip");
    CHECK(canonical_policy_json(again) == canonical_policy_json(p));
  }
  Policy kivi = load_preset("kivi-2");
  CHECK(kivi.k.axis == Axis::Channel);
  CHECK(kivi.v.axis == Axis::Token);
  CHECK(kivi.residual == 128);
  CHECK(kivi.k.group_size == 32);
  CHECK_THROWS_WITH(load_preset("nope"), Catch::Contains("nope: unknown preset (known: fp16"));
}

TEST_CASE("policy files: bad JSON names the file") {
  TempDir dir;
  std::string p = dir.path("bad.json");
  std::ofstream(p) << "{\"method\": ";
  CHECK_THROWS_WITH(load_policy_file(p), Catch::StartsWith(p + ": not valid JSON"));
  CHECK_THROWS_WITH(load_policy_file(dir.path("none.json")), Catch::Contains("cannot open policy file"));
}
