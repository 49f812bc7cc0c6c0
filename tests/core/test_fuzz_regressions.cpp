// Inputs the fuzzers (tests/fuzz) found crashing, kept byte for byte in tests/fuzz/regressions/,
// plus hand-made minimal versions of each: every one must now end in one kvscope::Error that
// names the file (or load cleanly), never another exception type, UB or an out-of-bounds access.
#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/dump/kv_dump.h"
#include "core/model/checkpoint.h"
#include "core/model/config.h"
#include "core/tensor/safetensors.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "storage/export.h"
#include "storage/run_store.h"
#include "tests/test_util.h"

using namespace kvscope;
namespace fs = std::filesystem;

namespace {

std::string regression(const std::string& prefix) {
  for (const auto& e : fs::directory_iterator(fs::path(KVSCOPE_SOURCE_DIR) / "tests/fuzz/regressions"))
    if (e.path().filename().string().rfind(prefix, 0) == 0) return e.path().string();
  FAIL("no regression input for " << prefix);
  return {};
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void put(const std::string& path, const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; }

std::string safetensors_bytes(const std::string& header) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);  // little-endian host
  return out + header;
}

// The message of the kvscope::Error `f` throws; any other exception escapes and fails the test.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  FAIL("no kvscope::Error thrown");
  return {};
}

}  // namespace

TEST_CASE("fuzz regression: JSON numbers beyond double range are a clear error, not out_of_range", "[fuzz]") {
  TempDir tmp;
  // nlohmann::json throws out_of_range (not parse_error) for 1e309; every JSON reader must catch it.
  CHECK_THAT(error_of([&] { parse_config(slurp(regression("config")), "cfg/config.json"); }),
                       Catch::Matchers::Contains("cfg/config.json") && Catch::Matchers::Contains("1e705"));
  CHECK_THAT(error_of([&] { parse_config(R"({"hidden_size": 1e309})", "c.json"); }), Catch::Matchers::Contains("c.json"));
  CHECK_THAT(error_of([&] { load_hf_bpe_from_json(slurp(regression("hf_tokenizer")), "tok.json"); }),
                       Catch::Matchers::Contains("tok.json"));

  const std::string st = tmp.path("big.safetensors");
  put(st, safetensors_bytes(R"({"a": {"dtype": "F32", "shape": [1e309], "data_offsets": [0, 4]}})"));
  CHECK_THAT(error_of([&] { SafetensorsFile::open(st); }), Catch::Matchers::Contains(st));
  const std::string dump = tmp.path("dump.safetensors");
  fs::copy_file(regression("dump"), dump);
  CHECK_THAT(error_of([&] { load_dump(dump); }), Catch::Matchers::Contains(dump));

  const std::string dir = tmp.path("model");
  fs::create_directories(dir);
  fs::copy_file(regression("checkpoint_index"), dir + "/model.safetensors.index.json");
  CHECK_THAT(error_of([&] { Checkpoint::open(dir); }), Catch::Matchers::Contains("model.safetensors.index.json"));
}

TEST_CASE("fuzz regression: an empty tensor reads as an empty vector", "[fuzz]") {
  // read_f32 of a [0, 5] tensor used to memcpy into the null data() of an empty vector (UBSan).
  TempDir tmp;
  const std::string path = tmp.path("empty.safetensors");
  fs::copy_file(regression("safetensors"), path);
  auto f = SafetensorsFile::open(path);
  REQUIRE(f->find("empty") != nullptr);
  CHECK(f->read_f32("empty").empty());
  CHECK(f->get("empty").shape == std::vector<int64_t>{0, 5});
}

TEST_CASE("fuzz regression: SentencePiece byte pieces must read <0xHH>", "[fuzz]") {
  // A byte piece "<0x-1>" made std::stoi return -1 and index byte_id[-1]; "<0xZZ>" threw
  // std::invalid_argument. Both are now refused at load, naming the file and the piece.
  TempDir tmp;
  const std::string path = tmp.path("tokenizer.model");
  fs::copy_file(regression("sentencepiece"), path);
  CHECK_THAT(error_of([&] { load_sentencepiece(path); }),
                       Catch::Matchers::Contains(path) && Catch::Matchers::Contains("<0xHH>"));

  auto piece = [](const std::string& text, int type) {
    auto bytes = [](int field, const std::string& s) {
      return std::string(1, static_cast<char>(field << 3 | 2)) + static_cast<char>(s.size()) + s;
    };
    return bytes(1, bytes(1, text) + std::string{0x18, static_cast<char>(type)});
  };
  const std::string model_type_bpe = std::string{0x12, 0x02, 0x18, 0x02};  // trainer_spec { model_type: 2 }
  for (const std::string bad : {"<0x-1>", "<0xZZ>", "<0x 1>"}) {
    put(path, piece("<unk>", 2) + piece("<s>", 3) + piece("</s>", 3) + piece(bad, 6) + model_type_bpe);
    CHECK_THAT(error_of([&] { load_sentencepiece(path); }), Catch::Matchers::Contains(bad));
  }
  put(path, piece("<unk>", 2) + piece("<s>", 3) + piece("</s>", 3) + piece("<0x41>", 6) + model_type_bpe);
  CHECK(load_sentencepiece(path)->decode(std::vector<int32_t>{3}) == "A");
}

TEST_CASE("fuzz regression: tokenizer.json values of the wrong type or size", "[fuzz]") {
  // An added token without "id" escaped as json::out_of_range; a huge id sized a dense table.
  const std::string found = slurp(regression("hf_tokenizer-crash-75a7"));
  CHECK_THAT(error_of([&] { load_hf_bpe_from_json(found, "t.json"); }), Catch::Matchers::Contains("t.json"));
  const auto base = [] {
    return nlohmann::json::parse(R"({"model": {"type": "BPE", "merges": [], "vocab": {"a": 0}},
                                     "pre_tokenizer": {"type": "ByteLevel"}})");
  };
  auto message = [](const nlohmann::json& j) { return error_of([&] { load_hf_bpe_from_json(j.dump(), "t.json"); }); };
  nlohmann::json j = base();
  j["added_tokens"] = nlohmann::json::array({{{"content", "x"}}});
  CHECK_THAT(message(j), Catch::Matchers::Contains("t.json") && Catch::Matchers::Contains("no id"));
  j = base();
  j["model"]["vocab"]["b"] = 2147483647;
  CHECK_THAT(message(j), Catch::Matchers::Contains("t.json") && Catch::Matchers::Contains("outside"));
  j = base();
  j["model"]["ignore_merges"] = "yes";
  CHECK_THAT(message(j), Catch::Matchers::Contains("t.json"));
  j = base();
  j["pre_tokenizer"] = {{"type", "Sequence"}};
  CHECK_THAT(message(j), Catch::Matchers::Contains("t.json") && Catch::Matchers::Contains("pretokenizers"));
}

TEST_CASE("fuzz regression: JSON exports of a store holding invalid UTF-8 stay valid JSON", "[fuzz]") {
  // A run whose created_at held the bytes A4 04 00.. made run_to_json throw nlohmann's type_error 316
  // (SQLite does not check text encoding). Invalid bytes now become U+FFFD.
  TempDir tmp;
  const std::string db = tmp.path("runs.sqlite");
  fs::copy_file(regression("export"), db);
  std::vector<StoredRun> runs;
  {
    RunStore store(db);  // read-write: a newer schema migrates the old file
    for (const auto& l : store.list_runs()) runs.push_back(store.load_run(l.id));
  }
  REQUIRE(runs.size() == 2);  // run 1 has the bad created_at, run 2 is the seed's replay run
  for (const StoredRun& r : runs) {
    const std::string doc = run_to_json(r);
    REQUIRE(nlohmann::json::accept(doc));
    if (r.id == 1)
      CHECK(nlohmann::json::parse(doc)["created_at"] == "2026-11-29T22:05\xef\xbf\xbd\x04" + std::string(6, '\0'));
  }
  CHECK(nlohmann::json::accept(to_json(summary_table(runs))));

  // Hand-made: one invalid byte in the middle of valid UTF-8 text, in a table cell and a header.
  Table t{"summary", {"note", "bad\xff"}, {{Cell::str("caf\xc3\xa9 \xc3 end"), Cell::number(1.5)}}};
  const auto j = nlohmann::json::parse(to_json(t));
  CHECK(j["rows"][0]["note"] == "caf\xc3\xa9 \xef\xbf\xbd end");
  CHECK(j["columns"][1] == "bad\xef\xbf\xbd");
  CHECK(j["rows"][0]["bad\xef\xbf\xbd"] == 1.5);
}
