// Bad checkpoints and arguments: one clear error naming the file and the problem, in the
// library and through the CLI (non-zero exit, nothing written).
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "core/dump/kv_dump.h"
#include "core/model/checkpoint.h"
#include "core/model/discovery.h"
#include "core/model/model.h"
#include "core/util/error.h"
#include "synthetic.h"
#include "test_util.h"
#include "tests/tolerances.h"

using namespace kvscope;
namespace fs = std::filesystem;

namespace {

// The message of the kvscope::Error that loading `dir` throws ("" if it loads).
std::string load_error(const std::string& dir) {
  try {
    Model::load(dir);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

struct CliResult {
  int rc;
  std::string err, out;
};

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

CliResult run_cli(const std::string& args, const TempDir& tmp) {
  const std::string err_file = tmp.path("stderr.txt"), out_file = tmp.path("stdout.txt");
  const std::string cmd =
      shell_quote(KVSCOPE_BIN) + " " + args + " >" + shell_quote(out_file) + " 2>" + shell_quote(err_file);
  const int status = std::system(cmd.c_str());
  auto slurp = [](const std::string& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(err_file), slurp(out_file)};
}

// Sets an environment variable for one scope, restoring the old value even when a REQUIRE fails.
struct EnvGuard {
  std::string name;
  std::optional<std::string> old;
  EnvGuard(const std::string& n, const std::string& value) : name(n) {
    if (const char* v = std::getenv(n.c_str())) old = v;
    setenv(n.c_str(), value.c_str(), 1);
  }
  ~EnvGuard() {
    if (old) setenv(name.c_str(), old->c_str(), 1);
    else unsetenv(name.c_str());
  }
};

}  // namespace

TEST_CASE("missing, truncated and incomplete weights name the file", "[model][bad]") {
  TempDir tmp;
  const std::string dir = tmp.dir.string();
  synth::Spec s;
  std::ofstream(dir + "/config.json") << synth::make_config(s).dump();
  std::string msg = load_error(dir);
  CHECK_THAT(msg, Catch::Contains(dir + "/model.safetensors") && Catch::Contains("missing"));

  synth::write_model(dir, s);
  REQUIRE(load_error(dir).empty());
  const auto size = fs::file_size(dir + "/model.safetensors");
  fs::resize_file(dir + "/model.safetensors", size - 100);
  msg = load_error(dir);
  CHECK_THAT(msg, Catch::Contains(dir + "/model.safetensors") && Catch::Contains("truncated"));

  // A tensor the config needs is absent.
  TempDir tmp2;
  auto weights = synth::make_weights(s);
  std::vector<TensorView> views;
  for (const auto& [name, sv] : weights)
    if (name != "model.layers.1.mlp.up_proj.weight") views.push_back({name, DType::F32, sv.first, sv.second.data()});
  write_safetensors(tmp2.path("model.safetensors"), views);
  std::ofstream(tmp2.path("config.json")) << synth::make_config(s).dump();
  msg = load_error(tmp2.dir.string());
  CHECK_THAT(msg, Catch::Contains(tmp2.path("model.safetensors")) &&
                      Catch::Contains("model.layers.1.mlp.up_proj.weight") && Catch::Contains("missing"));

  // Untied config but no lm_head.weight.
  views.clear();
  for (const auto& [name, sv] : weights)
    if (name != "lm_head.weight") views.push_back({name, DType::F32, sv.first, sv.second.data()});
  write_safetensors(tmp2.path("model.safetensors"), views);
  msg = load_error(tmp2.dir.string());
  CHECK_THAT(msg, Catch::Contains("lm_head.weight") && Catch::Contains("tie_word_embeddings"));
}

TEST_CASE("a shape that disagrees with config.json is caught before any compute", "[model][bad]") {
  TempDir tmp;
  synth::Spec s;
  synth::write_model(tmp.dir.string(), s);
  auto cfg = synth::make_config(s);
  cfg["intermediate_size"] = 41;  // weights have 40
  std::ofstream(tmp.path("config.json")) << cfg.dump();
  const std::string msg = load_error(tmp.dir.string());
  CHECK_THAT(msg, Catch::Contains(tmp.path("model.safetensors")) && Catch::Contains("mlp.gate_proj.weight") &&
                      Catch::Contains("[40, 24]") && Catch::Contains("[41, 24]") && Catch::Contains("config.json"));
  cfg = synth::make_config(s);
  cfg["num_key_value_heads"] = 4;  // GQA mismatch: k_proj is [16, 24]
  std::ofstream(tmp.path("config.json")) << cfg.dump();
  CHECK_THAT(load_error(tmp.dir.string()), Catch::Contains("k_proj.weight") && Catch::Contains("[32, 24]"));
}

TEST_CASE("unsupported architectures and bad configs name config.json", "[model][bad]") {
  TempDir tmp;
  synth::Spec s;
  synth::write_model(tmp.dir.string(), s);
  auto cfg = synth::make_config(s);
  cfg["architectures"] = {"GPT2LMHeadModel"};
  std::ofstream(tmp.path("config.json")) << cfg.dump();
  CHECK_THAT(load_error(tmp.dir.string()), Catch::Contains(tmp.path("config.json")) &&
                                               Catch::Contains("unsupported architecture") &&
                                               Catch::Contains("GPT2LMHeadModel"));
  cfg = synth::make_config(s);
  cfg["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}};
  std::ofstream(tmp.path("config.json")) << cfg.dump();
  CHECK_THAT(load_error(tmp.dir.string()), Catch::Contains("config.json") && Catch::Contains("yarn"));
  cfg = synth::make_config(s);
  cfg["num_attention_heads"] = 3;
  std::ofstream(tmp.path("config.json")) << cfg.dump();
  CHECK_THAT(load_error(tmp.dir.string()), Catch::Contains("config.json") && Catch::Contains("multiple"));
  std::ofstream(tmp.path("config.json")) << "{\"architectures\": [";
  CHECK_THAT(load_error(tmp.dir.string()), Catch::Contains("config.json") && Catch::Contains("not valid JSON"));
}

TEST_CASE("a pickled .bin checkpoint is refused, never unpickled", "[model][bad]") {
  TempDir tmp;
  synth::Spec s;
  std::ofstream(tmp.path("config.json")) << synth::make_config(s).dump();
  // A pickle stream that would run os.system if it were ever unpickled.
  std::ofstream(tmp.path("pytorch_model.bin"), std::ios::binary) << "\x80\x02" "cos\nsystem\n(S'touch pwned'\ntR.";
  const std::string msg = load_error(tmp.dir.string());
  CHECK_THAT(msg, Catch::Contains(tmp.path("pytorch_model.bin")) && Catch::Contains("refusing to unpickle"));
  CHECK_FALSE(fs::exists(tmp.path("pwned")));
}

TEST_CASE("sharded checkpoints: a missing shard or tensor names the file", "[model][bad]") {
  TempDir tmp;
  synth::Spec s;
  synth::write_model(tmp.dir.string(), s, /*shards=*/2);
  REQUIRE(load_error(tmp.dir.string()).empty());
  fs::remove(tmp.path("model-00002-of-00002.safetensors"));
  CHECK_THAT(load_error(tmp.dir.string()),
             Catch::Contains(tmp.path("model-00002-of-00002.safetensors")) && Catch::Contains("missing shard"));
}

TEST_CASE("model discovery: folders, HF cache ids, KVSCOPE_MODEL_PATH", "[model][discovery]") {
  TempDir tmp;
  synth::Spec s;
  const fs::path snap = tmp.dir / "hub" / "models--acme--tiny" / "snapshots" / "abc123";
  fs::create_directories(snap);
  fs::create_directories(tmp.dir / "hub" / "models--acme--tiny" / "refs");
  std::ofstream(tmp.dir / "hub" / "models--acme--tiny" / "refs" / "main") << "abc123";
  synth::write_model(snap.string(), s);
  const fs::path local = tmp.dir / "mine" / "llama-x";
  fs::create_directories(local);
  s.arch = "Qwen3ForCausalLM";
  s.qk_norm = true;
  synth::write_model(local.string(), s);

  EnvGuard hf("HF_HOME", tmp.path(""));
  EnvGuard mp("KVSCOPE_MODEL_PATH", tmp.path("nonexistent") + ":" + (tmp.dir / "mine").string());
  CHECK(resolve_model("acme/tiny") == snap.string());
  CHECK(resolve_model("llama-x") == local.string());
  CHECK(resolve_model(local.string()) == local.string());
  CHECK_THROWS_WITH(resolve_model("acme/none"), Catch::Contains("acme/none") && Catch::Contains("models--acme--none"));
  const auto models = discover_models();
  REQUIRE(models.size() == 2);
  CHECK(models[0].id == "acme/tiny");
  CHECK(models[0].error.empty());
  CHECK(models[0].config.arch == Arch::Llama);
  CHECK(models[1].id == "llama-x");
  CHECK(models[1].config.arch == Arch::Qwen3);
  CHECK(models[1].dtype == "F32");
  // Parameter count from the shapes: embed + per layer (attn, mlp, 2 norms, q/k norms) + norm + lm_head.
  const int64_t per_layer = 24 * 32 + 2 * 24 * 16 + 32 * 24 + 3 * 24 * 40 + 2 * 24 + 2 * 8;
  CHECK(models[1].params == 50 * 24 + 2 * per_layer + 24 + 50 * 24);

  // Through the CLI.
  const auto r = run_cli("models", tmp);
  CHECK(r.rc == 0);
  CHECK(r.err.empty());
  CHECK_THAT(r.out, Catch::Contains("acme/tiny") && Catch::Contains("LlamaForCausalLM") &&
                        Catch::Contains("llama-x") && Catch::Contains("Qwen3ForCausalLM") && Catch::Contains("4/2"));
}

TEST_CASE("CLI: bad input exits non-zero with the file named, writes nothing", "[model][bad][cli]") {
  TempDir tmp;
  synth::Spec s;
  const std::string dir = tmp.path("m");
  fs::create_directories(dir);
  std::ofstream(dir + "/config.json") << synth::make_config(s).dump();
  std::ofstream(dir + "/pytorch_model.bin", std::ios::binary) << "\x80\x02.";
  const std::string out = tmp.path("out.safetensors");

  auto r = run_cli("dump --model " + shell_quote(dir) + " --prompt hi --out " + shell_quote(out), tmp);
  CHECK(r.rc == 1);
  // No tokenizer in the folder: that is the first thing the command needs.
  CHECK_THAT(r.err, Catch::Contains("kvscope: error:") && Catch::Contains(dir));
  CHECK_FALSE(fs::exists(out));

  // Real tokenizer, pickle weights.
  fs::copy_file(kvscope::test::models_dir() + "/stories260K/tok512.bin", dir + "/tok512.bin");
  r = run_cli("generate --model " + shell_quote(dir) + " --prompt hi --max-new 3", tmp);
  CHECK(r.rc == 1);
  CHECK_THAT(r.err, Catch::Contains(dir + "/pytorch_model.bin") && Catch::Contains("refusing to unpickle"));

  // Truncated safetensors.
  fs::remove(dir + "/pytorch_model.bin");
  synth::write_model(dir, s);
  fs::resize_file(dir + "/model.safetensors", fs::file_size(dir + "/model.safetensors") / 2);
  r = run_cli("dump --model " + shell_quote(dir) + " --prompt hi --out " + shell_quote(out), tmp);
  CHECK(r.rc == 1);
  CHECK_THAT(r.err, Catch::Contains(dir + "/model.safetensors") && Catch::Contains("truncated"));
  CHECK_FALSE(fs::exists(out));

  // Missing text file and unknown model id.
  r = run_cli("dump --model " + shell_quote(dir) + " --text " + shell_quote(tmp.path("nope.txt")) + " --out " +
                  shell_quote(out), tmp);
  CHECK(r.rc == 1);
  CHECK_THAT(r.err, Catch::Contains(tmp.path("nope.txt")));
  r = run_cli("generate --model no-such-org/no-such-model --prompt hi", tmp);
  CHECK(r.rc == 1);
  CHECK_THAT(r.err, Catch::Contains("no-such-org/no-such-model"));
}

TEST_CASE("CLI: dump and generate on a real model", "[model][cli]") {
  TempDir tmp;
  const std::string dir = kvscope::test::models_dir() + "/stories260K";
  const std::string out = tmp.path("d.safetensors");
  auto r = run_cli("dump --model " + shell_quote(dir) + " --prompt 'Once upon a time' --out " + shell_quote(out), tmp);
  CHECK(r.rc == 0);
  CHECK_THAT(r.err, Catch::Contains("5/5 tokens"));
  const KvDump d = load_dump(out);
  CHECK(d.shape.layers == 5);
  CHECK(d.shape.kv_heads == 4);
  CHECK(d.shape.q_heads == 8);
  CHECK(d.shape.head_dim == 8);
  CHECK(d.meta.token_ids == std::vector<int32_t>{1, 403, 407, 261, 378});
  // golden.json: layer 0, kv head 0, position 3, dim 3 = 12.80529 (stored as F16).
  CHECK(d.k(0, 0)[3 * 8 + 3] == Approx(12.80529).epsilon(test::tol::kFp16));

  // Invalid UTF-8 in the prompt still gives valid (JSON) metadata.
  r = run_cli("dump --model " + shell_quote(dir) + " --prompt " + shell_quote("caf\xff!") + " --out " + shell_quote(out), tmp);
  CHECK(r.rc == 0);
  CHECK(load_dump(out).meta.prompt == "caf\xef\xbf\xbd!");

  const std::string txt = tmp.path("gen.txt");
  const std::string cmd = shell_quote(KVSCOPE_BIN) + " generate --model " + shell_quote(dir) +
                          " --prompt 'Once upon a time' --max-new 12 > " + shell_quote(txt);
  REQUIRE(std::system(cmd.c_str()) == 0);
  std::ifstream in(txt);
  std::string line;
  std::getline(in, line);
  CHECK(line == ", there was a little girl named Lily. She");  // golden greedy_text, first 12 tokens
}
