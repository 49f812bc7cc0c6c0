// Memory is planned: a command that cannot fit refuses in one line naming the model, the GB
// needed and available and what lowers it (exit 1), under an overridden reading and under a real
// address-space cap (prlimit --as). The estimate itself is checked against hand-counted bytes.
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <sstream>

#include "core/model/config.h"
#include "core/model/memory_plan.h"
#include "test_util.h"

using namespace kvscope;

namespace {

struct Run {
  int status;
  std::string err;
};

Run run_kvscope(const std::string& prefix, const std::string& args, const TempDir& dir) {
  const std::string err = dir.path("stderr.txt");
  const std::string cmd = prefix + " " + std::string(KVSCOPE_BIN) + " " + args + " >/dev/null 2>" + err;
  const int rc = std::system(cmd.c_str());
  std::ifstream in(err);
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, std::string(std::istreambuf_iterator<char>(in), {})};
}

int lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

}  // namespace

TEST_CASE("estimate_memory counts weights, one chunk, the KV cache of the layers run") {
  ModelConfig c;
  c.hidden_size = 64;
  c.intermediate_size = 172;
  c.num_layers = 5;
  c.num_heads = 8;
  c.num_kv_heads = 4;
  c.head_dim = 8;
  c.vocab_size = 512;
  const MemoryNeed m = estimate_memory(c, 1000000, 16, 100, 0, 1);
  CHECK(m.weights == 1000000);
  CHECK(m.kv_cache == 5 * 2 * 32 * 100 * 4);  // layers x (K, V) x kv dims x tokens x f32
  // Fewer layers run: less cache, weights of the embedding and the layers run only.
  const MemoryNeed two = estimate_memory(c, 1000000, 16, 100, 2, 0);
  CHECK(two.kv_cache == 2 * 2 * 32 * 100 * 4);
  CHECK(two.weights < m.weights);
  CHECK(estimate_memory(c, 1000000, 64, 100, 0, 1).activations > m.activations);
}

TEST_CASE("commands refuse in one line when the model does not fit") {
  TempDir dir;
  const std::string model = test::models_dir() + "/tinystories-llama-8L";
  const std::string small = "KVSCOPE_MEM_AVAILABLE_BYTES=100000000";  // 0.1 GB < 56 MB weights + runtime
  for (const std::string& args : {"generate --model " + model + " --prompt 'Once upon a time' --max-new 4",
                                  "dump --model " + model + " --prompt 'Once upon a time' --out " + dir.path("d.safetensors")}) {
    INFO(args);
    const Run r = run_kvscope(small, args, dir);
    CHECK(r.status == 1);
    CHECK(lines(r.err) == 1);
    CHECK_THAT(r.err, Catch::Contains(model) && Catch::Contains("needs") && Catch::Contains("0.10 GB are available") &&
                          Catch::Contains("KVSCOPE_MEM_AVAILABLE_BYTES"));
    CHECK_THAT(r.err, !Catch::Contains("internal error"));
  }
  CHECK_FALSE(std::filesystem::exists(dir.path("d.safetensors")));

  SECTION("the option that lowers the need is named, and a chunk chosen from memory fits") {
    std::ofstream(dir.path("t.txt")) << [] {
      std::string t;
      for (int i = 0; i < 300; ++i) t += "Once upon a time there was a cat who liked to play. ";
      return t;
    }();
    const ModelConfig c = load_config(model);
    const int64_t w = checkpoint_file_bytes(model);
    // Room for 64-token chunks of a 1,024-token dump, not for one 1,024-token chunk.
    const int64_t avail = estimate_memory(c, w, 64, 1024, 0, 0).total() + (int64_t{1} << 20);
    REQUIRE(estimate_memory(c, w, 1024, 1024, 0, 0).total() > avail);
    const std::string env = "KVSCOPE_MEM_AVAILABLE_BYTES=" + std::to_string(avail);
    const std::string args = "dump --model " + model + " --text " + dir.path("t.txt") + " --tokens 1024 --out " + dir.path("d.safetensors");
    const Run r = run_kvscope(env, args + " --chunk 1024", dir);
    CHECK(r.status == 1);
    CHECK_THAT(r.err, Catch::Contains("lower it with --chunk (now 1024)"));
    const Run ok = run_kvscope(env, args, dir);
    INFO(ok.err);
    CHECK(ok.status == 0);
    CHECK_THAT(ok.err, Catch::Contains("chunk 64"));
  }

#if !defined(__SANITIZE_ADDRESS__) && !defined(KVSCOPE_SANITIZED)  // ASan reserves terabytes of address space: no cap fits it
  SECTION("a real address-space cap (prlimit --as)") {
    // kvscope starts in ~0.15-0.2 GB of address space (OpenBLAS's per-thread buffers, GUI libraries;
    // measured, without libtorch); 0.4 GB leaves ~0.2 GB, less than the 56 MB of weights plus the
    // planned runtime. (Below ~0.25 GB OpenBLAS's own threads cannot get their buffers.)
    const int64_t cap = 400000000;
    const Run r = run_kvscope("prlimit --as=" + std::to_string(cap),
                              "generate --model " + model + " --prompt 'Once upon a time' --max-new 4", dir);
    INFO(r.err);
    CHECK(r.status == 1);
    CHECK(lines(r.err) == 1);
    CHECK_THAT(r.err, Catch::Contains(model) && Catch::Contains("RLIMIT_AS"));
    // So tight that OpenBLAS's own threads get no buffers: still the one line and exit 1, no hang at
    // exit (its exit handler waited for those threads forever; 124 = timeout's status).
    const Run tight = run_kvscope("timeout 60 prlimit --as=200000000",
                                  "generate --model " + model + " --prompt 'Once upon a time' --max-new 4", dir);
    INFO(tight.err);
    CHECK(tight.status == 1);
    CHECK(lines(tight.err) == 1);
  }
#endif
}
