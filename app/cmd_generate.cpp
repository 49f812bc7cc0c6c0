// `kvscope generate --model M --prompt S --max-new N`: greedy continuation, streamed to stdout.
#include <fmt/format.h>

#include <cstdio>

#include "app/cli.h"
#include "core/model/discovery.h"
#include "core/model/memory_plan.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"

namespace kvscope::cli {

namespace {

struct GenerateOptions {
  std::string model;
  std::string prompt;
  int max_new = 32;
  bool ids = false;
};

void run_generate(const GenerateOptions& o) {
  if (o.max_new < 0) fail("--max-new", "must be >= 0, got {}", o.max_new);
  const std::string dir = resolve_model(o.model);
  const ModelConfig cfg = load_config(dir);
  auto tok = load_tokenizer(dir);
  std::vector<int32_t> seq = tok->encode(o.prompt, /*add_bos=*/true);
  if (seq.empty()) fail("--prompt", "the prompt encodes to no tokens");
  const int context = static_cast<int>(seq.size()) + o.max_new;
  require_memory(dir, estimate_memory(cfg, checkpoint_file_bytes(dir), static_cast<int>(seq.size()), context),
                 fmt::format("lower it with a shorter --prompt or --max-new (context now {} tokens)", context));
  auto model = Model::load(dir);  // validates the checkpoint (errors name its file) before the tokenizer check
  if (tok->vocab_size() > cfg.vocab_size)
    fail(dir, "tokenizer has {} tokens but config.json vocab_size is {}", tok->vocab_size(), cfg.vocab_size);
  const size_t prompt_len = seq.size();
  auto cache = model->new_cache(static_cast<int>(seq.size()) + o.max_new);
  std::vector<float> logits = model->forward(seq, *cache);
  // Print the text as it grows: decode the whole sequence and emit what is new.
  std::string shown = tok->decode(seq);
  for (int i = 0; i < o.max_new; ++i) {
    int32_t best = 0;
    for (int32_t t = 1; t < static_cast<int32_t>(logits.size()); ++t)
      if (logits[t] > logits[best]) best = t;
    seq.push_back(best);
    const std::string text = tok->decode(seq);
    if (text.size() > shown.size() && text.compare(0, shown.size(), shown) == 0) {
      fmt::print("{}", text.substr(shown.size()));
      std::fflush(stdout);
      shown = text;
    }
    if (i + 1 < o.max_new) logits = model->forward(std::span<const int32_t>(&seq.back(), 1), *cache);
  }
  fmt::print("\n");
  if (o.ids) {
    std::string s;
    for (size_t i = prompt_len; i < seq.size(); ++i) s += (s.empty() ? "" : ",") + std::to_string(seq[i]);
    fmt::print("ids: {}\n", s);
  }
}

}  // namespace

void register_generate(CLI::App& app) {
  auto o = std::make_shared<GenerateOptions>();
  auto* cmd = app.add_subcommand("generate", "Print a greedy continuation of a prompt");
  cmd->add_option("--model", o->model, "Model folder or Hugging Face id (org/name)")->required();
  cmd->add_option("--prompt", o->prompt, "Prompt text (BOS is prepended when the vocabulary has one)")->required();
  cmd->add_option("--max-new", o->max_new, "Number of tokens to generate")->capture_default_str();
  cmd->add_flag("--ids", o->ids, "Also print the generated token ids");
  cmd->callback([o] { run_generate(*o); });
}

}  // namespace kvscope::cli
