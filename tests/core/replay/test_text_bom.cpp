// `kvscope dump --text` and a `text:` replay workload read a file through the same reader: a UTF-8
// byte-order mark (as Gutenberg texts have) is removed by both, so both see the same tokens.
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <cstdlib>
#include <fstream>

#include "core/dump/kv_dump.h"
#include "core/replay/workload.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/file.h"
#include "test_util.h"

using namespace kvscope;

TEST_CASE("dump --text and replay text: read the same tokens from a file with a byte-order mark") {
  TempDir tmp;
  const std::string model = test::models_dir() + "/stories260K";
  std::string text;
  for (int i = 0; i < 12; ++i) text += "Once upon a time there was a little cat who liked to play in the sun. ";
  std::ofstream(tmp.path("bom.txt"), std::ios::binary) << "\xEF\xBB\xBF" << text;
  std::ofstream(tmp.path("plain.txt"), std::ios::binary) << text;

  const auto tok = load_tokenizer(model);
  const std::vector<int32_t> want = tok->encode(text, /*add_bos=*/true);
  REQUIRE(want.size() > 64);

  // The replay side: a window of 64 tokens, the first half is the prompt.
  const auto slices = load_workloads({"text:" + tmp.path("bom.txt") + ";window=64;n=1"}, *tok, 512);
  REQUIRE(slices.size() == 1);
  REQUIRE(slices[0].items.size() == 1);
  const std::vector<int32_t> prompt = slices[0].items[0].prompt;
  CHECK(prompt == std::vector<int32_t>(want.begin(), want.begin() + 32));

  // The dump side, through the command line.
  for (const char* name : {"bom", "plain"}) {
    INFO(name);
    const std::string out = tmp.path(std::string(name) + ".safetensors");
    const std::string cmd = std::string(KVSCOPE_BIN) + " dump --model " + model + " --text " + tmp.path(std::string(name) + ".txt") +
                            " --tokens 32 --out " + out + " 2>" + tmp.path("err.txt");
    const int status = std::system(cmd.c_str());
    INFO(read_file(tmp.path("err.txt")));
    REQUIRE((WIFEXITED(status) && WEXITSTATUS(status) == 0));
    CHECK(load_dump(out).meta.token_ids == prompt);
  }
}
