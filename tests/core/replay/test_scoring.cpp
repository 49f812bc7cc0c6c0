// Answer scorers (core/replay/scoring.h) on hand-worked strings, RULER-style prompts
// (core/replay/ruler.h), and RULER/LongBench workloads on a real tokenizer.
#include <catch2/catch.hpp>

#include <fstream>

#include "core/replay/ruler.h"
#include "core/replay/scoring.h"
#include "core/replay/workload.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "test_util.h"

using namespace kvscope;
using Catch::Matchers::WithinAbs;

TEST_CASE("normalized exact match, token F1, ROUGE-L and contains on hand-worked strings", "[scoring]") {
  CHECK(normalize_answer("The  Cat, sat!") == "cat sat");
  CHECK(score_answer(Scorer::Exact, "the cat sat.", {"Cat sat"}) == 1);
  CHECK(score_answer(Scorer::Exact, "a cat sat down", {"cat sat"}) == 0);
  // F1: output "the cat sat on the mat" -> cat sat on mat (4 words), answer "cat on a hat" -> cat on hat
  // (3 words); common: cat, on = 2; P = 2/4, R = 2/3; F1 = 2 (1/2)(2/3) / (1/2 + 2/3) = (2/3) / (7/6) = 4/7.
  CHECK_THAT(token_f1("the cat sat on the mat", "cat on a hat"), WithinAbs(4.0 / 7.0, 1e-12));
  // ROUGE-L on raw words: "a b c d e" vs "a c e f": LCS = a c e = 3; R = 3/4, P = 3/5;
  // F = 2 (3/4)(3/5) / (3/4 + 3/5) = 0.9 / 1.35 = 2/3.
  CHECK_THAT(rouge_l("a b c d e", "a c e f"), WithinAbs(2.0 / 3.0, 1e-12));
  CHECK(rouge_l("", "a") == 0);
  CHECK(score_answer(Scorer::Contains, "The key is 12345, I think", {"12345"}) == 1);
  CHECK(score_answer(Scorer::Contains, "The key is 1234", {"12345"}) == 0);
  // Best of several answers; `all` counts the fraction found.
  CHECK_THAT(score_answer(Scorer::F1, "cat on hat", {"dog", "cat on a hat"}), WithinAbs(1.0, 1e-12));
  CHECK_THAT(score_answer(Scorer::All, "numbers: 1111111, 3333333.", {"1111111", "2222222", "3333333", "4444444"}),
             WithinAbs(0.5, 1e-12));
  CHECK(score_answer(Scorer::FirstLine, "  42 \nmore", {"42"}) == 1);
  Scorer s;
  CHECK(parse_scorer("rouge_l", s));
  CHECK(s == Scorer::RougeL);
  CHECK_FALSE(parse_scorer("bleu", s));
}

TEST_CASE("RULER-style prompts hold their needles and answers, independent of the haystack amount", "[scoring]") {
  const std::vector<std::string> hay = {"The grass is green.", "The sky is blue."};
  for (const std::string task : {"niah_single", "niah_multikey", "niah_multivalue", "niah_multiquery", "vt", "cwe"}) {
    INFO(task);
    REQUIRE(is_ruler_task(task));
    const RulerPrompt a = build_ruler_prompt(task, 7, 0, 10, hay), b = build_ruler_prompt(task, 7, 0, 200, hay);
    CHECK(a.answers == b.answers);
    CHECK(b.text.size() > a.text.size());
    CHECK(build_ruler_prompt(task, 7, 1, 10, hay).answers != a.answers);  // another item, other needles
    const size_t expected = task == "niah_single" || task == "niah_multikey" ? 1 : task == "vt" ? 5 : task == "cwe" ? 10 : 4;
    CHECK(a.answers.size() == expected);
    for (const auto& ans : a.answers) CHECK(b.text.find(ans) != std::string::npos);
    // A model that repeats the needles scores 1 under string_match_all.
    std::string all;
    for (const auto& ans : a.answers) all += ans + ", ";
    CHECK(score_answer(Scorer::All, all, a.answers) == 1);
  }
  CHECK_FALSE(is_ruler_task("niah"));
  const RulerPrompt v = build_ruler_prompt("vt", 3, 0, 50, hay);
  CHECK(v.text.find("VAR " + v.answers[1] + " = VAR " + v.answers[0] + ".") != std::string::npos);  // the chain
}

TEST_CASE("ruler and LongBench workloads build items that fit and are refused with one line when wrong", "[scoring]") {
  const std::string dir = kvscope::test::models_dir() + "/stories260K";
  auto tok = load_tokenizer(dir);
  // stories260K's 512-token vocabulary spends ~370 tokens on the template and 4 needles alone.
  auto slices = load_workloads({"ruler:task=niah_multikey,len=480,n=2,max_new=12"}, *tok, 512);
  REQUIRE(slices.size() == 1);
  CHECK(slices[0].kind == WorkloadKind::Ruler);
  REQUIRE(slices[0].items.size() == 2);
  for (const auto& it : slices[0].items) {
    CHECK(it.prompt.size() <= 480 - 12);  // len is the whole sequence, as RULER's max_seq_length
    CHECK(it.prompt.size() > 430);        // the haystack fills the budget
    CHECK(it.scorer == Scorer::All);
    CHECK(it.max_new == 12);
  }
  TempDir tmp;
  const std::string lb = tmp.path("lb.jsonl");
  std::ofstream(lb) << R"({"context": "Tom has a red ball.", "input": "What color is the ball?", "answers": ["red", "red ball"], "metric": "f1"})"
                    << "\n"
                    << R"({"prompt": "Say hi", "answer": "hi"})" << "\n";
  auto j = load_workloads({"jsonl:" + lb}, *tok, 512);
  REQUIRE(j[0].items.size() == 2);
  CHECK(j[0].items[0].scorer == Scorer::F1);
  CHECK(j[0].items[0].answers.size() == 2);
  CHECK(j[0].items[1].answers.empty());  // the original first-line rule
  auto err = [&](const std::string& spec) {
    try {
      load_workloads({spec}, *tok, 512);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK(err("ruler:task=haystack,len=480").find("task must be") != std::string::npos);
  CHECK(err("ruler:task=vt,len=60,max_new=8").find("too short") != std::string::npos);
  CHECK(err("ruler:task=vt,len=20").find("leaves no room for a prompt after max_new=32") != std::string::npos);
  // len = the model's limit fits (the prompt leaves room for max_new); one more is refused.
  const auto full = load_workloads({"ruler:task=niah_single,len=512,n=1,max_new=32"}, *tok, 512);
  CHECK(full[0].items[0].prompt.size() + 32 <= 512);
  CHECK(full[0].items[0].prompt.size() > 470);
  CHECK(err("ruler:task=niah_single,len=513").find("len=513 is longer than the model's max_position_embeddings (512)") != std::string::npos);
  CHECK(err("jsonl:" + lb + ";metric=bleu").find("metric must be") != std::string::npos);
}
