#pragma once
// RULER-style synthetic long-context tasks (Hsieh et al. 2024, "RULER: What's the Real Context Size
// of Your Long-Context Language Models?"), generated here from a seed: no downloads.
//   niah_single      one needle "One of the special magic numbers for KEY is: VALUE." in the haystack;
//                    asked for KEY's numbers
//   niah_multikey    4 needles with different keys; asked for one key
//   niah_multivalue  4 needles with the same key and different values; all 4 must be returned
//   niah_multiquery  4 needles with different keys; asked for all 4 keys
//   vt               variable tracking: a chain "VAR A = 12345", "VAR B = VAR A", ... (5 names) spread
//                    through the haystack; asked which variables hold 12345
//   cwe              common words extraction: a numbered list where 10 words appear 6 times and
//                    the others 2 times; asked for the 10 most common
// Templates follow RULER's synthetic.yaml, each ending with its answer prefix. Scoring is RULER's
// string_match_all (Scorer::All): the fraction of the expected strings found in the output.
// Keys are adjective-noun pairs, values 7-digit numbers, variable names 5 capital letters, all from
// std::mt19937(seed + item). The haystack is RULER's "noise" sentences or 12-word chunks of a file.
#include <string>
#include <vector>

namespace kvscope {

struct RulerPrompt {
  std::string text;                  // the whole prompt, answer prefix included
  std::vector<std::string> answers;  // every one must appear in the output
};

// The task names above; false for anything else.
bool is_ruler_task(const std::string& task);

// The prompt of item `item` with `amount` units of haystack (sentences; list words for cwe). Its
// needles, keys and values depend on (task, seed, item) only, not on `amount`, so callers can search
// the amount that fits a token budget.
RulerPrompt build_ruler_prompt(const std::string& task, unsigned seed, int item, int amount,
                               const std::vector<std::string>& haystack);

}  // namespace kvscope
