// Independent check of replay's numbers: tests/core/replay/numpy_replay.py (numpy only, float64 forward,
// its own KIVI fake quantization) fed the same tokens must reproduce kvscope's next-token KL, Δp
// and perplexities for kivi-2 on tinystories-llama-8L.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdlib>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/model/model.h"
#include "core/replay/replay.h"
#include "core/tokenizer/tokenizer.h"
#include "test_util.h"

using namespace kvscope;

namespace {

// Relative agreement asked of the two implementations (the bound); measured: ~1e-5 (see below).
constexpr double kRelTol = 1e-3;

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// The first interpreter that imports numpy: $KVSCOPE_PYTHON, python3 on PATH, /usr/bin/python3
// (scripts/setup.sh installs python3-numpy for the system python).
std::string python_with_numpy() {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("KVSCOPE_PYTHON"); env && *env) candidates.push_back(env);
  candidates.push_back("python3");
  candidates.push_back("/usr/bin/python3");
  for (const auto& py : candidates)
    if (std::system((shell_quote(py) + " -c 'import numpy' >/dev/null 2>&1").c_str()) == 0) return py;
  FAIL("no python3 with numpy (apt-get install python3-numpy, or set KVSCOPE_PYTHON)");
  return "";
}

}  // namespace

TEST_CASE("numpy forward reproduces replay's KL, Δp and perplexity for kivi-2", "[numpy_check]") {
  const std::string dir = kvscope::test::models_dir() + "/tinystories-llama-8L";
  const char* data_env = std::getenv("KVSCOPE_TEST_DATA");
  const std::string data = data_env && *data_env ? data_env : kvscope::test::models_dir() + "/../data";
  auto model = Model::load(dir);
  auto tok = load_tokenizer(dir);
  // One window of 384 tokens: 192 prompt + 192 scored. KIVI's 128-token blocks quantize keys in the
  // prefill (one block) and again during decoding; values leave the window from the prefill on.
  auto slices = load_workloads({"text:" + data + "/pg11_alice_in_wonderland.txt;window=384;n=1"}, *tok,
                               model->config().max_position_embeddings);
  const Policy policy = load_preset("kivi-2");
  REQUIRE(policy.residual == 128);
  REQUIRE(policy.k.bits == 2);
  REQUIRE(policy.v.bits == 2);
  REQUIRE(policy.k.group_size == 32);
  const SliceMetrics m = run_replay(*model, *tok, slices, policy).at(0);
  REQUIRE(m.next_token_kl > 1e-4);  // the check must see quantization error

  TempDir tmp;
  const WorkloadItem& it = slices[0].items[0];
  nlohmann::json item = {{"prompt", it.prompt}, {"target", it.target}, {"bits", 2}, {"group", 32}, {"residual", 128}};
  std::ofstream(tmp.path("item.json")) << item.dump();
  const std::string script = std::string(KVSCOPE_SOURCE_DIR) + "/tests/core/replay/numpy_replay.py";
  const std::string cmd = shell_quote(python_with_numpy()) + " " + shell_quote(script) + " " + shell_quote(dir) + " " +
                          shell_quote(tmp.path("item.json")) + " " + shell_quote(tmp.path("out.json"));
  REQUIRE(std::system(cmd.c_str()) == 0);
  nlohmann::json out;
  std::ifstream(tmp.path("out.json")) >> out;
  REQUIRE(out["steps"].get<int>() == m.steps);
  auto rel = [](double a, double b) { return std::fabs(a - b) / std::max(std::fabs(b), 1e-300); };
  INFO("kvscope KL " << m.next_token_kl << " numpy " << out["kl"].get<double>());
  INFO("kvscope ppl " << m.ppl << " numpy " << out["ppl"].get<double>() << "; ppl_ref " << m.ppl_ref << " numpy "
                      << out["ppl_ref"].get<double>());
  INFO("kvscope dp mean " << m.kl.dp_mean << " rms " << m.kl.dp_rms << "; numpy " << out["dp_mean"].get<double>() << " "
                          << out["dp_rms"].get<double>());
  CHECK(rel(m.next_token_kl, out["kl"].get<double>()) < kRelTol);
  CHECK(rel(m.ppl, out["ppl"].get<double>()) < kRelTol);
  CHECK(rel(m.ppl_ref, out["ppl_ref"].get<double>()) < kRelTol);
  CHECK(rel(m.kl.dp_rms, out["dp_rms"].get<double>()) < kRelTol);
  // Δp's mean is a small difference of signed values: measured against its own spread.
  CHECK(std::fabs(m.kl.dp_mean - out["dp_mean"].get<double>()) < kRelTol * m.kl.dp_rms);
}
