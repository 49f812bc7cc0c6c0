// capture_model_to_file: the one capture path of `kvscope dump` and the GUI (core/model/capture_file.h).
#include <catch2/catch.hpp>

#include <filesystem>
#include <numeric>

#include "core/dump/kv_dump.h"
#include "core/model/capture_file.h"
#include "core/util/error.h"
#include "test_util.h"

using namespace kvscope;

TEST_CASE("capture_model_to_file: writes the dump, refuses or warns past the model's positions", "[model][capture]") {
  TempDir tmp;
  CaptureFileRequest r;
  r.model_dir = kvscope::test::models_dir() + "/stories260K";  // max_position_embeddings 512
  r.ids.resize(40);
  std::iota(r.ids.begin(), r.ids.end(), 1);
  r.capture.model_id = "stories260K";
  r.out = tmp.path("d.safetensors");
  std::vector<std::string> infos;
  r.info = [&](const std::string& m) { infos.push_back(m); };
  const uint64_t bytes = capture_model_to_file(r);
  CHECK(bytes == std::filesystem::file_size(r.out));
  CHECK(infos.size() == 1);
  const KvDump d = load_dump(r.out);
  CHECK(d.shape.tokens == 40);
  CHECK(d.meta.token_ids == r.ids);
  CHECK(d.meta.model_id == "stories260K");

  // Past max_position_embeddings: an error naming the model when asked (the GUI), else a warning (the CLI).
  r.ids.assign(513, 1);
  r.out = tmp.path("long.safetensors");
  r.refuse_past_max_positions = true;
  CHECK_THROWS_WITH(capture_model_to_file(r), Catch::Contains("513 tokens exceed the model's max_position_embeddings 512"));
  CHECK(!std::filesystem::exists(r.out));
  std::vector<std::string> warnings;
  r.warn = [&](const std::string& m) { warnings.push_back(m); };
  r.refuse_past_max_positions = false;
  capture_model_to_file(r);
  REQUIRE(warnings.size() == 1);
  CHECK_THAT(warnings[0], Catch::Contains("513 tokens exceed max_position_embeddings 512"));
  CHECK(load_dump(r.out).shape.tokens == 513);
  // No tokens, a tokenizer larger than the vocabulary: one clear error each.
  r.ids.clear();
  CHECK_THROWS_WITH(capture_model_to_file(r), Catch::Contains("the text encodes to no tokens"));
  r.ids.assign(8, 1);
  r.tokenizer_vocab = 1 << 20;
  CHECK_THROWS_WITH(capture_model_to_file(r), Catch::Contains("tokenizer has 1048576 tokens but config.json vocab_size is"));
}
