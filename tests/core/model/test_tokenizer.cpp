// Tokenizers: SentencePiece against the official library's output, round trips on real text,
// byte-level BPE on a hand-made vocabulary with hand-worked ids.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "test_util.h"
#include "tests/protobuf_writer.h"

using json = nlohmann::json;
using namespace kvscope;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string data_dir() {
  const char* env = std::getenv("KVSCOPE_TEST_DATA");
  std::string dir = env && *env ? env : kvscope::test::models_dir() + "/../data";
  REQUIRE(std::filesystem::is_directory(dir));
  return dir;
}

const char* kDataFiles[] = {"tinystories_validation_head.txt", "pg11_alice_in_wonderland.txt",
                            "pg1342_pride_and_prejudice.txt"};

}  // namespace

TEST_CASE("SentencePiece ids equal the official library's (llama2 32k)", "[tokenizer]") {
  const std::string dir = kvscope::test::models_dir() + "/llama2-tokenizer-32k";
  auto tok = load_sentencepiece(dir + "/tokenizer.model");
  const json golden = json::parse(slurp(dir + "/tokenization_golden.json"));
  CHECK(tok->kind() == "sentencepiece");
  CHECK(tok->vocab_size() == golden.at("vocab_size").get<int>());
  CHECK(tok->bos_id() == golden.at("bos_id").get<int>());
  CHECK(tok->eos_id() == golden.at("eos_id").get<int>());
  REQUIRE(golden.at("cases").size() >= 6);
  for (const auto& c : golden.at("cases")) {
    const std::string text = c.at("text").get<std::string>();
    INFO("text: " << text);
    const auto ids = tok->encode(text);
    CHECK(ids == c.at("ids").get<std::vector<int32_t>>());
    const auto pieces = c.at("pieces").get<std::vector<std::string>>();
    REQUIRE(ids.size() == pieces.size());
    for (size_t i = 0; i < ids.size(); ++i) CHECK(tok->piece(ids[i]) == pieces[i]);
    CHECK(tok->decode(ids) == c.at("decoded").get<std::string>());
    const auto with_bos = tok->encode(text, true);
    REQUIRE(!with_bos.empty());
    CHECK(with_bos[0] == 1);
  }
}

TEST_CASE("SentencePiece round-trips the shared text files exactly", "[tokenizer]") {
  auto tok = load_sentencepiece(kvscope::test::models_dir() + "/llama2-tokenizer-32k/tokenizer.model");
  for (const char* f : kDataFiles) {
    INFO(f);
    const std::string text = slurp(data_dir() + "/" + f).substr(0, 200000);
    const auto ids = tok->encode(text);
    CHECK(ids.size() > text.size() / 8);  // real tokens, not one id per byte or one per text
    CHECK(ids.size() < text.size() / 2);
    CHECK(tok->decode(ids) == text);
  }
}

TEST_CASE("llama2.c vocabulary encodes as llama2.c and round-trips", "[tokenizer]") {
  const std::string dir = kvscope::test::models_dir();
  auto tok = load_llama2c_vocab(dir + "/stories260K/tok512.bin");
  CHECK(tok->kind() == "llama2c");
  CHECK(tok->vocab_size() == 512);
  // Hand-checked against tokens.tsv: 403 " Once", 407 " upon", 261 " a", 378 " time".
  CHECK(tok->encode("Once upon a time", true) == std::vector<int32_t>{1, 403, 407, 261, 378});
  // A character missing from the 512-piece vocabulary falls back to its bytes (id = byte + 3).
  const auto ids = tok->encode("\xe4\xbd\xa0");  // U+4F60
  REQUIRE(ids.size() >= 3);
  CHECK(ids[ids.size() - 3] == 0xe4 + 3);
  CHECK(ids[ids.size() - 2] == 0xbd + 3);
  CHECK(ids[ids.size() - 1] == 0xa0 + 3);
  const std::string text = slurp(data_dir() + "/tinystories_validation_head.txt").substr(0, 20000) + " caf\xc3\xa9 \xf0\x9f\x98\x80";
  CHECK(tok->decode(tok->encode(text)) == text);

  // The 32k llama2.c export of the Llama 2 vocabulary gives the official ids on plain text.
  auto big = load_llama2c_vocab(dir + "/llama2-tokenizer-32k/tokenizer.bin");
  const json golden = json::parse(slurp(dir + "/llama2-tokenizer-32k/tokenization_golden.json"));
  CHECK(big->encode(golden["cases"][2]["text"].get<std::string>()) ==
        golden["cases"][2]["ids"].get<std::vector<int32_t>>());
}

TEST_CASE("load_tokenizer picks what the folder has", "[tokenizer]") {
  const std::string dir = kvscope::test::models_dir();
  CHECK(load_tokenizer(dir + "/stories260K")->kind() == "llama2c");
  CHECK(load_tokenizer(dir + "/tinystories-llama-8L")->kind() == "sentencepiece");
  TempDir tmp;
  try {
    load_tokenizer(tmp.dir.string());
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Catch::Contains(tmp.dir.string()) && Catch::Contains("no tokenizer"));
  }
  // A truncated tokenizer.model: clear error naming the file.
  const std::string bytes = slurp(dir + "/llama2-tokenizer-32k/tokenizer.model");
  const std::string cut = tmp.path("tokenizer.model");
  std::ofstream(cut, std::ios::binary) << bytes.substr(0, bytes.size() / 2 + 3);
  try {
    load_tokenizer(tmp.dir.string());
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Catch::Contains(cut) && Catch::Contains("truncated"));
  }
}

// ---- byte-level BPE on a hand-made vocabulary -------------------------------------------------
// Byte-level alphabet (GPT-2): printable bytes are themselves, space -> U+0120 "Ġ", "\n" -> U+010A
// "Ċ"; the emoji U+1F600 (F0 9F 98 80) -> "ð" "Ł" "ĺ" "Ģ"; "é" (C3 A9) -> "Ã" "©".
namespace {

json bpe_json(const json& vocab, const json& merges, const json& pre_tokenizer, const json& added = json::array()) {
  json j;
  j["version"] = "1.0";
  j["added_tokens"] = added;
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = pre_tokenizer;
  j["model"] = {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}};
  j["decoder"] = {{"type", "ByteLevel"}};
  return j;
}

json byte_level(bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", use_regex}};
}

json split_then_bytes(const std::string& regex) {
  return {{"type", "Sequence"},
          {"pretokenizers",
           {{{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}},
            byte_level(false)}}};
}

const char* kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

}  // namespace

TEST_CASE("byte-level BPE: merge ranks, UTF-8 multibyte, special tokens (hand-worked)", "[tokenizer]") {
  const json vocab = {{"H", 0},       {"e", 1},      {"l", 2},   {"o", 3},       {"\xc4\xa0", 4} /*Ġ*/,
                      {"w", 5},       {"r", 6},      {"d", 7},   {"He", 8},      {"ll", 9},
                      {"llo", 10},    {"Hello", 11}, {"\xc4\xa0w", 12},          {"or", 13},
                      {"\xc4\xa0wor", 14},           {"\xc4\xa0worl", 15},       {"\xc4\xa0world", 16},
                      {"el", 17},     {"\xc3\x83", 18} /*Ã*/,   {"\xc2\xa9", 19} /*©*/,
                      {"\xc3\x83\xc2\xa9", 20},      {"\xc3\xb0", 22} /*ð*/,     {"\xc5\x81", 23} /*Ł*/,
                      {"\xc4\xba", 24} /*ĺ*/,        {"\xc4\xa2", 25} /*Ģ*/,     {"\xc3\xb0\xc5\x81", 26}};
  const json merges = {"l l", "H e", "ll o", "He llo", "\xc4\xa0 w", "o r", "\xc4\xa0w or", "\xc4\xa0wor l",
                       "\xc4\xa0worl d", "e l", "\xc3\x83 \xc2\xa9", "\xc3\xb0 \xc5\x81"};
  const json added = {{{"id", 27}, {"content", "<|endoftext|>"}, {"special", true}},
                      {{"id", 28}, {"content", "<x>"}, {"special", false}}};
  auto tok = load_hf_bpe_from_json(bpe_json(vocab, merges, byte_level(true), added).dump(), "test.json");
  CHECK(tok->kind() == "byte-level-bpe");
  // "Hello" -> H e l l o -> (ll, rank 0) -> (He, 1) -> (llo, 2) -> (Hello, 3); " world" likewise.
  CHECK(tok->encode("Hello world") == std::vector<int32_t>{11, 16});
  // Rank order, not position: "e l" (rank 9) loses to "l l" (rank 0): e ll o -> e llo.
  CHECK(tok->encode("ello") == std::vector<int32_t>{1, 10});
  // Two-byte letter: " é" is one pre-token (letter), Ã © merge to "Ã©".
  CHECK(tok->encode("Hello \xc3\xa9") == std::vector<int32_t>{11, 4, 20});
  // Four-byte emoji: only ð Ł merges.
  CHECK(tok->encode(" \xf0\x9f\x98\x80") == std::vector<int32_t>{4, 26, 24, 25});
  // Special and added tokens are cut out before BPE; decode drops special tokens only.
  CHECK(tok->encode("Hello<|endoftext|> world<x>") == std::vector<int32_t>{11, 27, 16, 28});
  CHECK(tok->decode(std::vector<int32_t>{11, 27, 16, 28}) == "Hello world<x>");
  CHECK(tok->eos_id() == 27);
  for (std::string s : {"Hello world", "Hello \xc3\xa9", " \xf0\x9f\x98\x80", "ello"})
    CHECK(tok->decode(tok->encode(s)) == s);
}

TEST_CASE("byte-level BPE: GPT-2, Qwen2 and Llama-3 pre-tokenizer splits (hand-worked)", "[tokenizer]") {
  // Merges that could cross pre-token boundaries show where the text was split.
  const json vocab = {{"I", 0}, {"'", 1}, {"M", 2}, {"\xc4\xa0", 3}, {"2", 4}, {"0", 5}, {"4", 6},
                      {"\xc4\x8a", 7} /*Ċ*/, {"o", 8}, {"k", 9}, {"'M", 10}, {"\xc4\xa0" "2", 11}, {"20", 12},
                      {"\xc4\x8a\xc4\x8a", 13}, {"ok", 14}, {"I'", 15}};
  const json merges = {"' M", "\xc4\xa0 2", "2 0", "\xc4\x8a \xc4\x8a", "o k", "I '"};
  const std::string text = "I'M 2024\n\nok";
  // GPT-2: case-sensitive contractions ("'M" is not one), " 2024" one piece, "\n\n" before a word
  // splits as "\n" "\n".
  auto gpt2 = load_hf_bpe_from_json(bpe_json(vocab, merges, byte_level(true)).dump(), "gpt2.json");
  CHECK(gpt2->encode(text) == std::vector<int32_t>{0, 1, 2, 11, 5, 4, 6, 7, 7, 14});
  // Qwen2: "'M" (case-insensitive), " " alone, single digits, "\n\n" together.
  auto qwen = load_hf_bpe_from_json(bpe_json(vocab, merges, split_then_bytes(kQwen2Regex)).dump(), "qwen.json");
  CHECK(qwen->encode(text) == std::vector<int32_t>{0, 10, 3, 4, 5, 4, 6, 13, 14});
  // Llama-3: digits in groups of up to three: "202" "4".
  auto llama3 = load_hf_bpe_from_json(bpe_json(vocab, merges, split_then_bytes(kLlama3Regex)).dump(), "l3.json");
  CHECK(llama3->encode(text) == std::vector<int32_t>{0, 10, 3, 12, 4, 6, 13, 14});
  for (auto* t : {gpt2.get(), qwen.get(), llama3.get()}) CHECK(t->decode(t->encode(text)) == text);
}

TEST_CASE("byte-level BPE round-trips real text with a full byte alphabet", "[tokenizer]") {
  // All 256 byte symbols (the GPT-2 table written out from its definition) plus a few merges.
  json vocab = json::object();
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    const unsigned cp = printable ? b : 256 + extra++;
    std::string s;
    if (cp < 0x80) s.push_back(static_cast<char>(cp));
    else {
      s.push_back(static_cast<char>(0xc0 | (cp >> 6)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    }
    vocab[s] = b;
  }
  vocab["th"] = 256;
  vocab["the"] = 257;
  vocab["\xc4\xa0the"] = 258;
  const json merges = {"t h", "th e", "\xc4\xa0 the"};
  for (const char* regex : {kQwen2Regex, kLlama3Regex}) {
    auto tok = load_hf_bpe_from_json(bpe_json(vocab, merges, split_then_bytes(regex)).dump(), "full.json");
    const std::string text = slurp(data_dir() + "/pg11_alice_in_wonderland.txt").substr(0, 60000) +
                             " Caf\xc3\xa9 na\xc3\xafve \xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x98\x80 \r\n";
    const auto ids = tok->encode(text);
    CHECK(tok->decode(ids) == text);
    CHECK(std::count(ids.begin(), ids.end(), 258) > 100);  // " the" merged
  }
}

TEST_CASE("byte-level BPE rejects what it does not implement, naming the file", "[tokenizer]") {
  const json vocab = {{"a", 0}};
  json j = bpe_json(vocab, json::array(), split_then_bytes("\\w+"));
  CHECK_THROWS_WITH(load_hf_bpe_from_json(j.dump(), "odd.json"), Catch::Contains("odd.json") && Catch::Contains("regex"));
  j = bpe_json(vocab, json::array({"a b"}), byte_level(true));
  CHECK_THROWS_WITH(load_hf_bpe_from_json(j.dump(), "m.json"), Catch::Contains("m.json") && Catch::Contains("merge"));
  j["model"]["type"] = "WordPiece";
  CHECK_THROWS_WITH(load_hf_bpe_from_json(j.dump(), "w.json"), Catch::Contains("w.json") && Catch::Contains("WordPiece"));
}

// ---- SentencePiece on a hand-written tokenizer.model ------------------------------------------
namespace {

using namespace test_pb;

// ModelProto: pieces (1), trainer_spec (2: model_type 3, byte_fallback 35, unk/bos/eos 40-42),
// normalizer_spec (3: name 1, add_dummy_prefix 3, remove_extra_whitespaces 4).
std::string tiny_spm(bool dummy_prefix, bool remove_extra_ws, int model_type = 2) {
  std::string m = pb_piece("<unk>", 0, 2) + pb_piece("<s>", 0, 3) + pb_piece("</s>", 0, 3);
  for (int b = 0; b < 256; ++b) m += pb_piece(fmt::format("<0x{:02X}>", b), 0, 6);  // ids 3..258
  const std::string sp = "\xe2\x96\x81";
  m += pb_piece(sp, -10, 1);         // 259
  m += pb_piece("a", -10, 1);        // 260
  m += pb_piece("b", -10, 1);        // 261
  m += pb_piece("c", -10, 1);        // 262
  m += pb_piece("ab", -1, 1);        // 263
  m += pb_piece("bc", -0.7f, 1);     // 264
  m += pb_piece(sp + "a", -3, 1);    // 265
  m += pb_piece(sp + "ab", -0.5f, 1);  // 266
  m += pb_piece("<sep>", 0, 4);      // 267 user-defined
  m += pb_bytes(2, pb_int(3, model_type) + pb_int(35, 1) + pb_int(40, 0) + pb_int(41, 1) + pb_int(42, 2));
  m += pb_bytes(3, pb_bytes(1, "identity") + pb_int(3, dummy_prefix) + pb_int(4, remove_extra_ws));
  return m;
}

}  // namespace

TEST_CASE("SentencePiece on a hand-written model: score order, byte fallback, user-defined, flags",
          "[tokenizer]") {
  TempDir tmp;
  const std::string path = tmp.path("tokenizer.model");
  std::ofstream(path, std::ios::binary) << tiny_spm(true, true);
  auto tok = load_sentencepiece(path);
  CHECK(tok->vocab_size() == 268);
  // "▁abc": pairs ▁a (-3), ab (-1), bc (-0.7): bc merges first, then ▁a; "ab" never forms.
  CHECK(tok->encode("abc") == std::vector<int32_t>{265, 264});
  CHECK(tok->decode(std::vector<int32_t>{265, 264}) == "abc");
  // Not in the vocabulary: UTF-8 bytes (é = C3 A9) as <0xNN> pieces.
  CHECK(tok->encode("\xc3\xa9") == std::vector<int32_t>{259, 3 + 0xC3, 3 + 0xA9});
  CHECK(tok->decode(tok->encode("\xc3\xa9")) == "\xc3\xa9");
  // A user-defined piece is cut out whole and does not merge: ▁ a b <sep> b c -> bc, ab, ▁ab.
  CHECK(tok->encode("ab<sep>bc") == std::vector<int32_t>{266, 267, 264});
  // remove_extra_whitespaces: "  a  b " -> "a b" -> ▁a ▁ b.
  CHECK(tok->encode("  a  b ") == std::vector<int32_t>{265, 259, 261});
  CHECK(tok->encode("abc", true) == std::vector<int32_t>{1, 265, 264});

  std::ofstream(path, std::ios::binary) << tiny_spm(false, false);
  tok = load_sentencepiece(path);
  CHECK(tok->encode("abc") == std::vector<int32_t>{260, 264});  // no dummy prefix: a bc
  CHECK(tok->encode(" a") == std::vector<int32_t>{265});        // space kept as ▁
  CHECK(tok->decode(tok->encode(" a  b")) == " a  b");

  std::ofstream(path, std::ios::binary) << tiny_spm(true, true, /*UNIGRAM*/ 1);
  CHECK_THROWS_WITH(load_sentencepiece(path), Catch::Contains(path) && Catch::Contains("only BPE"));
}
