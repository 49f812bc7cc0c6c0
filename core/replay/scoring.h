#pragma once
// Scorers of generated answers, as the long-context benchmarks define them.
//   exact     SQuAD/LongBench normalized exact match: lower-case, punctuation and the articles
//             a/an/the removed, whitespace collapsed; 1 when equal.
//   f1        token F1 of the normalized words (LongBench qa_f1_score): 2PR / (P + R) over the
//             multiset of common words.
//   rouge_l   ROUGE-L F-measure of the whitespace words (LCS; LongBench rouge_score with beta 1).
//   contains  1 when the normalized answer occurs in the normalized output.
//   all       RULER's string_match_all: the fraction of the answers that occur in the output
//             (case-insensitive); the item's answers are scored together.
//   first_line  kvscope's original jsonl rule: the output's first line, trimmed, equals the answer.
// With several answers, every scorer but `all` takes the best one (LongBench's max over answers).
#include <string>
#include <vector>

namespace kvscope {

enum class Scorer { FirstLine, Exact, F1, RougeL, Contains, All };

// "exact" | "f1" | "rouge_l" | "contains" | "all" | "first_line"; false for anything else.
bool parse_scorer(const std::string& name, Scorer& out);
const char* scorer_name(Scorer s);

std::string normalize_answer(const std::string& s);
double token_f1(const std::string& output, const std::string& answer);
double rouge_l(const std::string& output, const std::string& answer);

// The item's score in [0, 1].
double score_answer(Scorer s, const std::string& output, const std::vector<std::string>& answers);

}  // namespace kvscope
