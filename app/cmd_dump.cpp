// `kvscope dump --model M (--text FILE | --prompt S) [--tokens N] --out F`: captures the KV cache
// (post-RoPE K, V, Q and pre-RoPE K, Q per layer) into a dump file, streamed chunk by chunk and
// renamed into place when complete. Memory is planned first (core/model/memory_plan.h).
#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "app/cli.h"
#include "core/dump/kv_dump.h"
#include "core/model/capture.h"
#include "core/model/discovery.h"
#include "core/model/memory_plan.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "core/util/file.h"

namespace kvscope::cli {

namespace {

struct DumpOptions {
  std::string model, text_file, prompt, out, dtype = "F16", layers;
  int tokens = 0, chunk = 0, q_positions = 0;
  bool no_q = false, no_pre_rope = false;
};

// At most `max` bytes of `s` as valid UTF-8 (dump metadata is JSON): cut at a character
// boundary, invalid bytes replaced by U+FFFD.
std::string utf8_prefix(const std::string& s, size_t max) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    bool ok = n > 0 && i + n <= s.size();
    for (size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(s[i + k]) & 0xc0) == 0x80;
    const std::string ch = ok ? s.substr(i, n) : std::string("\xef\xbf\xbd");
    if (out.size() + ch.size() > max) break;
    out += ch;
    i += ok ? n : 1;
  }
  return out;
}

void run_dump(const DumpOptions& o) {
  if (o.text_file.empty() == o.prompt.empty()) fail("dump", "give exactly one of --text FILE or --prompt TEXT");
  if (o.tokens < 0) fail("--tokens", "must be >= 0, got {}", o.tokens);
  DType dtype;
  if (!parse_dtype(o.dtype, &dtype) || (dtype != DType::F16 && dtype != DType::BF16 && dtype != DType::F32))
    fail("--dtype", "\"{}\" is not one of F16, BF16, F32", o.dtype);
  std::string text = o.prompt;
  if (!o.text_file.empty()) {
    text = read_text_file(o.text_file, "text file");
    if (text.empty()) fail(o.text_file, "the text file is empty");
  }
  if (o.chunk < 0) fail("--chunk", "must be >= 0, got {}", o.chunk);
  if (o.q_positions < 0) fail("--q-positions", "must be >= 0, got {}", o.q_positions);
  const std::string dir = resolve_model(o.model);
  const ModelConfig cfg = load_config(dir);
  std::vector<int> layers;
  if (!o.layers.empty()) layers = parse_layer_list(o.layers, cfg.num_layers, "--layers");
  auto tok = load_tokenizer(dir);
  std::vector<int32_t> ids = tok->encode(text, /*add_bos=*/true);
  if (o.tokens > 0 && static_cast<int>(ids.size()) > o.tokens) ids.resize(o.tokens);
  if (ids.empty()) fail("dump", "the text encodes to no tokens");

  // Plan memory before mapping anything: weights as stored, one chunk, the KV cache of the layers run.
  const int T = static_cast<int>(ids.size());
  const int layers_run = layers.empty() ? 0 : layers.back() + 1;
  const int64_t weights = checkpoint_file_bytes(dir);
  const int chunk = o.chunk > 0 ? std::min(o.chunk, T) : default_chunk(cfg, weights, T, layers_run);
  require_memory(dir, estimate_memory(cfg, weights, chunk, T, layers_run, 0),
                 fmt::format("lower it with --chunk (now {}), --layers or --tokens (now {})", chunk, T));
  auto model = Model::load(dir);  // validates the checkpoint (errors name its file) before the tokenizer check
  if (tok->vocab_size() > cfg.vocab_size)
    fail(dir, "tokenizer has {} tokens but config.json vocab_size is {}", tok->vocab_size(), cfg.vocab_size);
  const int max_pos = model->config().max_position_embeddings;
  if (max_pos > 0 && static_cast<int>(ids.size()) > max_pos)
    fmt::print(stderr, "kvscope dump: warning: {} tokens exceed max_position_embeddings {} of {}\n", ids.size(),
               max_pos, dir);

  CaptureOptions co;
  co.model_id = o.model;
  co.prompt = utf8_prefix(text, o.text_file.empty() ? std::string::npos : 4096);
  co.workload = o.text_file.empty() ? "prompt" : "text:" + std::filesystem::path(o.text_file).filename().string();
  co.with_q = !o.no_q;
  co.with_pre_rope = !o.no_pre_rope;
  co.chunk_tokens = chunk;
  co.layers = layers;
  co.q_positions = o.q_positions;
  co.progress = [](int done, int total) { fmt::print(stderr, "kvscope dump: prefill {}/{} tokens\n", done, total); };
  fmt::print(stderr, "kvscope dump: {} ({}, {} layers, {} weights) on {} tokens, chunk {}\n", dir,
             arch_name(model->config().arch), model->config().num_layers, model->storage_dtype(), ids.size(), chunk);
  const uint64_t bytes = capture_to_file(*model, ids, co, o.out, dtype);
  fmt::print(stderr, "kvscope dump: wrote {} ({:.1f} MB)\n", o.out, static_cast<double>(bytes) / 1e6);
}

}  // namespace

void register_dump(CLI::App& app) {
  auto o = std::make_shared<DumpOptions>();
  auto* cmd = app.add_subcommand("dump", "Capture the KV cache of a model on a text into a .safetensors dump");
  cmd->add_option("--model", o->model, "Model folder or Hugging Face id (org/name)")->required();
  auto* text = cmd->add_option("--text", o->text_file, "Text file to run");
  auto* prompt = cmd->add_option("--prompt", o->prompt, "Prompt text to run");
  text->excludes(prompt);
  cmd->add_option("--tokens", o->tokens, "Keep only the first N tokens (BOS included; 0 = all)");
  cmd->add_option("--out", o->out, "Dump file to write (.safetensors)")->required();
  cmd->add_option("--dtype", o->dtype, "Storage dtype of the dump: F16, BF16 or F32")->capture_default_str();
  cmd->add_flag("--no-q", o->no_q, "Do not store the queries");
  cmd->add_flag("--no-pre-rope", o->no_pre_rope, "Do not store pre-RoPE keys and queries");
  cmd->add_option("--chunk", o->chunk, "Prefill chunk in tokens (0 = the largest that fits in memory, up to 2048)");
  cmd->add_option("--layers", o->layers, "Keep only these layers, e.g. 0-3,16 (later layers are not run)");
  cmd->add_option("--q-positions", o->q_positions,
                  "Store queries at N positions spread over the sequence (0 = all); listed in the metadata");
  cmd->callback([o] { run_dump(*o); });
}

}  // namespace kvscope::cli
