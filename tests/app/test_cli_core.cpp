// The command line as a user meets it: synth -> quantize, and one-line errors for bad input.
#include <sys/wait.h>

#include <array>
#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace {

struct Run {
  int status;
  std::string out, err;
};

// Runs kvscope with the given arguments, capturing stdout and stderr.
Run run_kvscope(const std::string& args, const TempDir& dir) {
  std::string out = dir.path("stdout.txt"), err = dir.path("stderr.txt");
  // Runs go to a database inside the test's directory, never the user's ~/.local/share.
  std::string cmd = "XDG_DATA_HOME=" + dir.path("data") + " " + std::string(KVSCOPE_BIN) + " " + args + " >" + out + " 2>" + err;
  int rc = std::system(cmd.c_str());
  auto slurp = [](const std::string& p) {
    std::ifstream in(p);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, slurp(out), slurp(err)};
}

}  // namespace

TEST_CASE("synth then quantize --json reports the required fields") {
  TempDir dir;
  std::string dump = dir.path("demo.safetensors");
  auto s = run_kvscope("synth --tokens 512 --out " + dump, dir);
  REQUIRE(s.status == 0);
  auto r = run_kvscope("quantize --dump " + dump + " --preset kvmix-3 --json", dir);
  REQUIRE(r.status == 0);
  auto j = nlohmann::json::parse(r.out);
  for (const char* key : {"method", "bits_per_element", "bytes_per_token", "k_nmse", "v_nmse", "attn_cos_mean", "attn_cos_min", "per_head"})
    CHECK(j.contains(key));
  CHECK(j["method"] == "kvmix");
  CHECK(j["bytes_per_token"] == 6720.0);
  CHECK(j["per_head"].size() == 24 * 2 * 2);
  auto h = j["per_head"][0];
  for (const char* key : {"layer", "head", "kind", "nmse", "cos", "bits"}) CHECK(h.contains(key));
  // The readable table has one row per layer and a total line.
  auto t = run_kvscope("quantize --dump " + dump + " --preset kivi-2", dir);
  REQUIRE(t.status == 0);
  CHECK_THAT(t.out, Catch::Contains("total: ") && Catch::Contains("bits/element") && Catch::Contains("   23 "));
  // Both runs were stored (in the test's own XDG_DATA_HOME) and list back; --no-store keeps none.
  CHECK_THAT(r.err, Catch::Contains("stored run 1"));
  auto listed = run_kvscope("runs list", dir);
  CHECK_THAT(listed.out, Catch::Contains("kvmix") && Catch::Contains("kivi"));
  auto ns = run_kvscope("quantize --no-store --no-attention --dump " + dump + " --preset fp16", dir);
  CHECK_THAT(ns.err, !Catch::Contains("stored run"));
  auto p = run_kvscope("presets", dir);
  CHECK_THAT(p.out, Catch::Contains("kivi-2") && Catch::Contains("kvmix-3") && Catch::Contains("uniform-4"));
}

TEST_CASE("bad input: one clear line naming the file, non-zero exit, no crash") {
  TempDir dir;
  std::string good = dir.path("good.safetensors");
  REQUIRE(run_kvscope("synth --layers 2 --tokens 64 --out " + good, dir).status == 0);
  auto expect_error = [&](const std::string& args, const std::string& needle) {
    auto r = run_kvscope(args, dir);
    INFO(args << "\n" << r.err);
    CHECK(r.status == 1);
    CHECK_THAT(r.err, Catch::StartsWith("kvscope: error: ") && Catch::Contains(needle));
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK_THAT(r.err, !Catch::Contains("stored run"));  // a failed quantize stores nothing
  };
  // Truncated file.
  std::ifstream in(good, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  std::string trunc = dir.path("trunc.safetensors");
  std::ofstream(trunc, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  expect_error("quantize --dump " + trunc + " --preset kivi-2", trunc + ": tensor 'layers.");
  // Header claiming data past the end.
  std::ofstream(dir.path("short.safetensors"), std::ios::binary) << bytes.substr(0, 6);
  expect_error("quantize --dump " + dir.path("short.safetensors") + " --preset kivi-2", "truncated safetensors file");
  // Corrupt header.
  std::string corrupt = bytes;
  corrupt[8] = '#';  // the header's opening brace
  std::ofstream(dir.path("corrupt.safetensors"), std::ios::binary) << corrupt;
  expect_error("quantize --dump " + dir.path("corrupt.safetensors") + " --preset kivi-2", "not valid JSON");
  // Missing file.
  expect_error("quantize --dump " + dir.path("none.safetensors") + " --preset kivi-2", "none.safetensors: cannot open");
  // A dump without queries needs --no-attention.
  std::string noq = dir.path("noq.safetensors");
  REQUIRE(run_kvscope("synth --layers 2 --tokens 64 --no-queries --out " + noq, dir).status == 0);
  expect_error("quantize --dump " + noq + " --preset kivi-2", noq + ": dump has no queries");
  CHECK(run_kvscope("quantize --dump " + noq + " --preset kivi-2 --no-attention", dir).status == 0);
  // Invalid policy and unknown preset.
  std::ofstream(dir.path("p.json")) << R"({"method": "uniform", "k": {"bits": 12}})";
  expect_error("quantize --dump " + good + " --policy " + dir.path("p.json"), "p.json: $.k.bits: must be an integer in 1..8");
  expect_error("quantize --dump " + good + " --preset kivi-9", "kivi-9: unknown preset");
  expect_error("quantize --dump " + good + " --preset kivi-2 --attn-queries zero", "--attn-queries: 'zero'");
}

TEST_CASE("--json output survives a path that is not UTF-8") {
  // Linux paths are bytes; nlohmann throws on invalid UTF-8 unless told to replace it (was an
  // "internal error" exit 2 before json_text).
  TempDir dir;
  const std::string dump = dir.path("bad\xff" "name.safetensors");
  REQUIRE(run_kvscope("synth --layers 2 --tokens 64 --out '" + dump + "'", dir).status == 0);
  auto r = run_kvscope("quantize --no-store --dump '" + dump + "' --preset kivi-2 --json", dir);
  INFO(r.err);
  REQUIRE(r.status == 0);
  auto j = nlohmann::json::parse(r.out);
  CHECK(j["dump"].get<std::string>().find("bad\xef\xbf\xbdname") != std::string::npos);  // U+FFFD
}
