// Chat templates (python/chat_template.h) rendered as Transformers' apply_chat_template, and the
// rendered text tokenized with every special token as one id. The expected texts and ids below are
// written by hand from the templates in tests/python/data/*/tokenizer_config.json.
#include <catch2/catch.hpp>

#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "python/chat_template.h"
#include "test_util.h"

using namespace kvscope;
using json = nlohmann::ordered_json;  // messages keep their keys in the order written

namespace {

const std::string kData = std::string(KVSCOPE_SOURCE_DIR) + "/tests/python/data";

// GPT-2's byte -> printable character table (tokenizer.json vocabularies are written in it).
std::string byte_char(int b) {
  int n = 0;
  for (int c = 0; c < b; ++c)
    if (!((c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF))) ++n;
  const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  const uint32_t cp = printable ? b : 256 + n;
  std::string s;
  if (cp < 0x80) s.push_back(static_cast<char>(cp));
  else {
    s.push_back(static_cast<char>(0xc0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
  return s;
}

// A byte-level BPE whose id of every byte is the byte's value (so a plain character's id is its
// ASCII code), `merges` on top (ids 256, 257, ...), and the added special tokens.
std::unique_ptr<Tokenizer> byte_tokenizer(const std::string& regex, const std::vector<std::pair<std::string, std::string>>& merges,
                                          const std::vector<std::pair<std::string, int>>& specials) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
  json merge_list = json::array();
  int id = 256;
  for (const auto& [a, b] : merges) {
    vocab[a + b] = id++;
    merge_list.push_back(a + " " + b);
  }
  json added = json::array();
  for (const auto& [content, tid] : specials) added.push_back({{"id", tid}, {"content", content}, {"special", true}});
  json pre = {{"type", "Sequence"},
              {"pretokenizers",
               {{{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}},
                {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
  json j = {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merge_list}}},
            {"pre_tokenizer", pre},
            {"added_tokens", added}};
  return load_hf_bpe_from_json(j.dump(), "fixture tokenizer.json");
}

const char* kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// The plain text's ids under byte_tokenizer without merges: its bytes.
std::vector<int32_t> bytes(const std::string& s) { return std::vector<int32_t>(s.begin(), s.end()); }

std::vector<int32_t> cat(std::initializer_list<std::vector<int32_t>> parts) {
  std::vector<int32_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

const json kTwoTurns = json::array({{{"role", "user"}, {"content", "Hi "}}, {{"role", "assistant"}, {"content", "Hello!"}}});

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("chat template: ChatML (Qwen2.5 style) renders the hand-written text, special tokens one id each", "[chat]") {
  const ChatTemplate t = load_chat_template(kData + "/chatml");
  CHECK(t.tokens.at("eos_token") == "<|im_end|>");
  CHECK_FALSE(t.tokens.contains("bos_token"));  // null in the config: the template sees it undefined
  const std::string expected =
      "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
      "<|im_start|>user\nHi <|im_end|>\n"
      "<|im_start|>assistant\nHello!<|im_end|>\n";
  CHECK(render_chat(t, kTwoTurns, false) == expected);
  CHECK(render_chat(t, kTwoTurns, true) == expected + "<|im_start|>assistant\n");
  // A system message replaces the default one and is not repeated ({% continue %}, loopcontrols).
  json with_system = kTwoTurns;
  with_system.insert(with_system.begin(), json::object({{"role", "system"}, {"content", "Be brief."}}));
  CHECK(render_chat(t, with_system, false) ==
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi <|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n");

  // Qwen's ids order <|endoftext|>, <|im_start|>, <|im_end|>; "user" is one merged token (258).
  auto tok = byte_tokenizer(kQwen2Regex, {{"u", "s"}, {"us", "e"}, {"use", "r"}},
                            {{"<|endoftext|>", 300}, {"<|im_start|>", 301}, {"<|im_end|>", 302}});
  const RenderedChat r = render_and_encode(t, *tok, kTwoTurns, true);
  CHECK(r.text == expected + "<|im_start|>assistant\n");
  const std::vector<int32_t> want = cat({{301}, bytes("system\nYou are a helpful assistant."), {302, '\n'},
                                         {301, 258, '\n', 'H', 'i', ' ', 302, '\n'},
                                         {301}, bytes("assistant\nHello!"), {302, '\n'},
                                         {301}, bytes("assistant\n")});
  CHECK(r.ids == want);
  CHECK(std::count(r.ids.begin(), r.ids.end(), 301) == 4);
  CHECK(std::count(r.ids.begin(), r.ids.end(), 302) == 3);
}

TEST_CASE("chat template: Llama-3 style needs trim_blocks and lstrip_blocks; ids hand-checked", "[chat]") {
  const ChatTemplate t = load_chat_template(kData + "/llama3");
  CHECK(t.tokens.at("bos_token") == "<|begin_of_text|>");  // an AddedToken object in the config
  const std::string expected =
      "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
      "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>";
  CHECK(render_chat(t, kTwoTurns, false) == expected);
  CHECK(render_chat(t, kTwoTurns, true) == expected + "<|start_header_id|>assistant<|end_header_id|>\n\n");

  // "\n\n" is one pre-token under the Llama-3 regex and one merged id (256).
  auto tok = byte_tokenizer(kLlama3Regex, {{byte_char('\n'), byte_char('\n')}},
                            {{"<|begin_of_text|>", 300}, {"<|end_of_text|>", 301}, {"<|start_header_id|>", 302},
                             {"<|end_header_id|>", 303}, {"<|eot_id|>", 304}});
  const RenderedChat r = render_and_encode(t, *tok, kTwoTurns, true);
  const std::vector<int32_t> want = cat({{300, 302}, bytes("user"), {303, 256}, bytes("Hi"), {304},
                                         {302}, bytes("assistant"), {303, 256}, bytes("Hello!"), {304},
                                         {302}, bytes("assistant"), {303, 256}});
  CHECK(r.ids == want);
}

TEST_CASE("chat template: raise_exception's message is the error; syntax and sandbox errors are one line", "[chat]") {
  ChatTemplate t = parse_chat_template(
      R"({"chat_template": "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}ok"})",
      "raise/tokenizer_config.json");
  CHECK(render_chat(t, user_message("x"), true) == "ok");
  CHECK(error_of([&] { render_chat(t, json::array({{{"role", "assistant"}, {"content", "x"}}}), true); }) ==
        "raise/tokenizer_config.json: chat_template: Conversation roles must alternate user/assistant/user/assistant/...");

  t.source = "line one\n{% for m in messages %}{{ m.content }";
  CHECK_THAT(error_of([&] { render_chat(t, user_message("x"), true); }),
             Catch::Matchers::StartsWith("raise/tokenizer_config.json: chat_template line 2: syntax error:"));

  // The sandbox: no dunder attributes, and (immutable) no mutation of lists.
  t.source = "{{ messages.__class__.__mro__ }}";
  CHECK_THAT(error_of([&] { render_chat(t, user_message("x"), true); }),
             Catch::Matchers::Contains("chat_template line 1: SecurityError") && Catch::Matchers::Contains("unsafe"));
  t.source = "{% set xs = [] %}\n{{ xs.append(1) }}";
  CHECK_THAT(error_of([&] { render_chat(t, user_message("x"), true); }),
             Catch::Matchers::Contains("chat_template line 2: SecurityError"));
  t.source = "{{ messages[0].content / 2 }}";
  const std::string e = error_of([&] { render_chat(t, user_message("x"), true); });
  CHECK_THAT(e, Catch::Matchers::Contains("TypeError"));
  CHECK(e.find('\n') == std::string::npos);
}

TEST_CASE("chat template: tojson does not escape HTML and takes json.dumps options; strftime_now", "[chat]") {
  ChatTemplate t;
  t.where = "inline";
  t.source = "{{ messages | tojson }}|{{ messages[0] | tojson(indent=2, sort_keys=true) }}";
  const json msgs = json::array({{{"role", "user"}, {"content", "<b>caf\u00e9 & 'x'</b>"}}});
  CHECK(render_chat(t, msgs, false) ==
        "[{\"role\": \"user\", \"content\": \"<b>caf\u00e9 & 'x'</b>\"}]|"
        "{\n  \"content\": \"<b>caf\u00e9 & 'x'</b>\",\n  \"role\": \"user\"\n}");
  t.source = "{{ strftime_now('%Y') }}";
  const std::time_t now = std::time(nullptr);
  char year[8];
  std::strftime(year, sizeof year, "%Y", std::localtime(&now));
  CHECK(render_chat(t, msgs, false) == year);
  // {% generation %} (Transformers' assistant mask tag) renders its body; add_generation_prompt is a bool.
  t.source = "{% generation %}A{% endgeneration %}{{ add_generation_prompt }}";
  CHECK(render_chat(t, msgs, true) == "ATrue");
}

TEST_CASE("chat template: a folder without one is refused in one line", "[chat]") {
  TempDir d;
  CHECK(error_of([&] { load_chat_template(d.dir.string()); }) ==
        d.dir.string() + ": no chat template (no tokenizer_config.json or chat_template.jinja); --chat needs one");
  std::ofstream(d.path("tokenizer_config.json")) << R"({"eos_token": "</s>"})";
  CHECK(error_of([&] { load_chat_template(d.dir.string()); }) ==
        d.path("tokenizer_config.json") + ": no chat template (no \"chat_template\" entry); --chat needs one");
  // chat_template.jinja beside it (Transformers >= 4.43 saves it there) wins.
  std::ofstream(d.path("chat_template.jinja")) << "{{ eos_token }}";
  CHECK(render_chat(load_chat_template(d.dir.string()), user_message("x"), false) == "</s>");
  // Named templates: the "default" one.
  const ChatTemplate named = parse_chat_template(
      R"({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]})", "n.json");
  CHECK(named.source == "D");
}

TEST_CASE("SentencePiece: control tokens in rendered text are one id each, segments normalized apart", "[chat]") {
  auto tok = load_tokenizer(kvscope::test::models_dir() + "/tinystories-llama-8L");
  REQUIRE(tok->kind() == "sentencepiece");
  const std::vector<int32_t> ids = tok->encode_special("<s>[INST] Once upon a time [/INST] There was</s><s>[INST] Hi");
  const std::vector<int32_t> a = tok->encode("[INST] Once upon a time [/INST] There was", false);
  const std::vector<int32_t> b = tok->encode("[INST] Hi", false);
  CHECK(ids == cat({{tok->bos_id()}, a, {tok->eos_id(), tok->bos_id()}, b}));
  // Plain encode leaves "<s>" as text (several pieces).
  const std::vector<int32_t> plain = tok->encode("<s>", false);
  CHECK(std::find(plain.begin(), plain.end(), tok->bos_id()) == plain.end());
}
