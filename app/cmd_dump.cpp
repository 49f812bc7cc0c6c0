// `kvscope dump --model M (--text FILE | --prompt S | --messages FILE) [--chat] [--tokens N] --out F`:
// captures the KV cache (post-RoPE K, V, Q and pre-RoPE K, Q per layer) into a dump file, streamed
// chunk by chunk and renamed into place when complete. Memory is planned first (core/model/memory_plan.h).
// --chat renders the prompt (one user message) or --messages (a JSON list of {"role", "content"})
// through the model's chat template first, as Transformers' apply_chat_template(add_generation_prompt=True)
// does; the dump's prompt is the rendered text and its token ids those of the rendered text, each
// special token one id.
#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "app/cli.h"
#include "core/dump/kv_dump.h"
#include "core/model/capture.h"
#include "core/model/capture_file.h"
#include "core/model/discovery.h"
#include "core/model/memory_plan.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "core/util/file.h"
#include "python/chat_template.h"

namespace kvscope::cli {

namespace {

struct DumpOptions {
  std::string model, text_file, prompt, messages_file, out, dtype = "F16", layers;
  int tokens = 0, chunk = 0, q_positions = 0;
  bool no_q = false, no_pre_rope = false, chat = false;
};

void run_dump(const DumpOptions& o) {
  if (int(!o.text_file.empty()) + int(!o.prompt.empty()) + int(!o.messages_file.empty()) != 1)
    fail("dump", "give exactly one of --text FILE, --prompt TEXT or --messages FILE");
  if (!o.messages_file.empty() && !o.chat) fail("--messages", "needs --chat (the model's chat template renders them)");
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
  std::vector<int32_t> ids;
  if (o.chat) {  // before the model loads: a missing template or a template error costs nothing
    nlohmann::ordered_json messages = user_message(text);  // keys in the order written, as json.loads
    if (!o.messages_file.empty()) {
      try {
        messages = nlohmann::ordered_json::parse(read_file(o.messages_file, "messages file"));
      } catch (const nlohmann::json::exception& e) {
        fail(o.messages_file, "not valid JSON ({})", e.what());
      }
      if (messages.is_object() && messages.contains("messages")) messages = messages["messages"];
      if (!messages.is_array() || messages.empty())
        fail(o.messages_file, "expected a non-empty JSON list of {{\"role\", \"content\"}} messages");
    }
    const RenderedChat r = render_and_encode(load_chat_template(dir), *tok, messages, /*add_generation_prompt=*/true);
    text = r.text;
    ids = r.ids;
  } else {
    ids = tok->encode(text, /*add_bos=*/true);
  }
  if (o.tokens > 0 && static_cast<int>(ids.size()) > o.tokens) ids.resize(o.tokens);

  // The GUI's Capture goes through the same function (core/model/capture_file.h).
  CaptureFileRequest r;
  r.model_dir = dir;
  r.tokenizer_vocab = tok->vocab_size();
  r.ids = std::move(ids);
  CaptureOptions& co = r.capture;
  co.model_id = o.model;
  co.prompt = utf8_prefix(text, o.text_file.empty() ? std::string::npos : 4096);
  co.workload = o.text_file.empty() ? "prompt" : "text:" + std::filesystem::path(o.text_file).filename().string();
  if (o.chat) co.workload += ";chat";
  co.with_q = !o.no_q;
  co.with_pre_rope = !o.no_pre_rope;
  co.chunk_tokens = o.chunk;
  co.layers = layers;
  co.q_positions = o.q_positions;
  co.progress = [](int done, int total) { fmt::print(stderr, "kvscope dump: prefill {}/{} tokens\n", done, total); };
  r.out = o.out;
  r.dtype = dtype;
  r.warn = [](const std::string& m) { fmt::print(stderr, "kvscope dump: warning: {}\n", m); };
  r.info = [](const std::string& m) { fmt::print(stderr, "kvscope dump: {}\n", m); };
  const uint64_t bytes = capture_model_to_file(r);
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
  cmd->add_option("--messages", o->messages_file, "JSON list of {role, content} messages (with --chat)")->type_name("FILE");
  cmd->add_flag("--chat", o->chat, "Render through the model's chat template (tokenizer_config.json), as Transformers does");
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
