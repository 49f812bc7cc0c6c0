#pragma once
// Chat templates rendered as Transformers' `apply_chat_template` does: the Jinja source of
// tokenizer_config.json's "chat_template" runs in jinja2's ImmutableSandboxedEnvironment with
// trim_blocks and lstrip_blocks, the loopcontrols extension and the {% generation %} tag, the
// globals raise_exception(message) and strftime_now(format), a tojson filter that does not escape
// HTML (json.dumps with ensure_ascii=False, indent, separators, sort_keys), and the variables
// messages, add_generation_prompt, tools = documents = None and the special tokens of the
// tokenizer config (bos_token, eos_token, unk_token, pad_token, ...).
// The rendered text holds the template's special tokens as text; Tokenizer::encode_special turns
// each into its one id (as Transformers tokenizes with add_special_tokens=False: the template
// writes the BOS itself).
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace kvscope {

class Tokenizer;

struct ChatTemplate {
  std::string source;     // the Jinja text
  std::string where;      // the file it came from (errors name it)
  nlohmann::json tokens = nlohmann::json::object();  // {"bos_token": "<s>", ...}: the strings the template sees
};

// tokenizer_config.json's "chat_template": a string, or a list of {"name", "template"} (the one
// named "default"); a "chat_template.jinja" file beside it wins, as in Transformers >= 4.43.
// Errors name the folder: "<dir>: no chat template (tokenizer_config.json has no \"chat_template\")".
ChatTemplate load_chat_template(const std::string& model_dir);
// The same from the text of a tokenizer_config.json (`where` names it in errors).
ChatTemplate parse_chat_template(const std::string& tokenizer_config_text, const std::string& where);

// Renders `messages` (a JSON array of {"role", "content", ...} objects; ordered_json keeps the keys in
// the order written, as Python's json.loads does, which `tojson` shows). A template error becomes
// one Error: "<where>: chat_template: <raise_exception's message>" or
// "<where>: chat_template line N: <Type>: <message>".
std::string render_chat(const ChatTemplate& t, const nlohmann::ordered_json& messages, bool add_generation_prompt);

// A rendered chat and its token ids (what --chat stores with a run).
struct RenderedChat {
  std::string text;
  std::vector<int32_t> ids;
};
RenderedChat render_and_encode(const ChatTemplate& t, const Tokenizer& tok, const nlohmann::ordered_json& messages,
                               bool add_generation_prompt);

// "prompt" as Transformers pipelines pass a bare string: [{"role": "user", "content": prompt}].
nlohmann::ordered_json user_message(const std::string& prompt);

}  // namespace kvscope
