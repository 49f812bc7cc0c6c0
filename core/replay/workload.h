#pragma once
// Replay workloads: what the model reads and what counts as a good answer.
//
// A workload is given as a spec string (several may be given):
//   text:PATH[;window=W][;n=N]      teacher-forced perplexity: N windows of W tokens (defaults 256, 4;
//                                   W is capped by max_position_embeddings), consecutive from the start
//                                   of the file; the first half of a window is the prompt, the second
//                                   half is scored token by token.
//   text:PATH;ctx=C;protocol=chunks[;n=N]
//                                   llama.cpp's perplexity protocol: consecutive chunks of C tokens of
//                                   BOS + text (every chunk of the file unless n is given), the chunk's
//                                   first token replaced by BOS; prompt = positions 0..C/2, scored =
//                                   the C - 1 - C/2 tokens after it. (ctx is a synonym of window.)
//   jsonl:PATH[;max_new=M]          one JSON object per line: {"prompt": "...", "answer": "..."}
//                                   (optional "max_new"); scored by exact match and contains. With a
//                                   chat renderer (--chat) a line may give "messages" (a list of
//                                   {"role", "content"}) instead of "prompt", and either is rendered
//                                   through the model's chat template (a prompt as one user message).
//   passkey:len=L,depth=D,n=N[,max_new=M][,filler=PATH]
//                                   N generated prompts of L tokens with a 5-digit pass key placed at
//                                   depth D (0 = start, 1 = end) of generated filler sentences (or of
//                                   text from PATH); scored by whether the answer contains the key.
//   ruler:task=T,len=L,n=N[,max_new=M][,filler=PATH][,seed=S]
//                                   RULER-style tasks (core/replay/ruler.h): T = niah_single, niah_multikey,
//                                   niah_multivalue, niah_multiquery, vt, cwe; L is the whole sequence
//                                   (RULER's max_seq_length): N prompts of at most L - M tokens (M = max_new);
//                                   scored by RULER's string_match_all.
//   jsonl items may also be LongBench-style {"context", "input", "answers": [...]} (prompt = context,
//   a blank line, input) and name a "metric" (exact, f1, rouge_l, contains, all); `;metric=M` sets the
//   file's default.
//   file:PATH                       a workload file: one spec per line, '#' starts a comment, relative
//                                   paths are relative to the file.
// Bad specs and files give one Error naming the file (and line) and the problem.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/replay/scoring.h"
#include "core/tokenizer/tokenizer.h"

namespace kvscope {

struct WorkloadItem {
  std::vector<int32_t> prompt;
  std::vector<int32_t> target;  // text: the tokens to score (teacher-forced); empty for generation
  std::string answer;           // generation: expected answer
  int max_new = 0;              // generation: greedy tokens to produce
  std::string chat_text;        // --chat: the rendered chat the prompt ids encode ("" otherwise)
  // Generation scored by `scorer` against `answers` (LongBench items, jsonl metric, RULER tasks); empty:
  // the kind's original rule on `answer` (jsonl: first-line exact match, passkey: contains).
  std::vector<std::string> answers;
  Scorer scorer = Scorer::FirstLine;
};

enum class WorkloadKind { Text, Jsonl, Passkey, Ruler };

struct WorkloadSlice {
  std::string name;  // e.g. "text:alice.txt", "passkey:len=512,depth=0.5"
  WorkloadKind kind = WorkloadKind::Text;
  std::vector<WorkloadItem> items;
};

std::string workload_kind_name(WorkloadKind k);

// --chat: renders a JSON array of messages into the text the model reads (with the generation
// prompt); app/ binds it to the model's chat template (python/chat_template.h). Rendered text is
// encoded with Tokenizer::encode_special (the template writes BOS and the special tokens).
// The messages are given as JSON text (their keys in the order written: templates' tojson shows it).
using ChatRenderer = std::function<std::string(const std::string& messages_json)>;

// Parses the specs and builds the slices; every item must fit in `max_positions`.
std::vector<WorkloadSlice> load_workloads(const std::vector<std::string>& specs, const Tokenizer& tok,
                                          int max_positions, const ChatRenderer& chat = {});

// Scoring of generated answers (both sides trimmed of whitespace; the output is cut at its first newline
// for exact match).
bool answer_exact_match(const std::string& output, const std::string& answer);
bool answer_contains(const std::string& output, const std::string& answer);

}  // namespace kvscope
