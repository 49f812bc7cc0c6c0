#include "python/chat_template.h"

#include <filesystem>

#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "core/util/file.h"
#include "python/interpreter.h"

namespace kvscope {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
namespace py = pybind11;

// The rendering side, in Python: the environment Transformers compiles chat templates in
// (chat_template_utils._compile_jinja_template), rebuilt here from its documented behaviour.
const char* const kChatModule = R"py(
import json
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2.exceptions import TemplateError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment


class TemplateRaised(TemplateError):
    """Thrown by the template's raise_exception(message): the message is the whole error."""


def raise_exception(message):
    raise TemplateRaised(message)


def strftime_now(format):
    return datetime.now().strftime(format)


def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # jinja2's own tojson escapes <, >, & and ' for HTML; a prompt needs the JSON text as written.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


class GenerationTag(jinja2.ext.Extension):
    """{% generation %}...{% endgeneration %}: marks assistant text for Transformers' assistant-token
    mask; rendered, it is just its body."""
    tags = {"generation"}

    def parse(self, parser):
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


_compiled = {}


def compile_template(source):
    template = _compiled.get(source)
    if template is None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=[GenerationTag, jinja2.ext.loopcontrols])
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = strftime_now
        template = env.from_string(source)
        if len(_compiled) > 16:
            _compiled.clear()
        _compiled[source] = template
    return template


def render(source, messages_json, add_generation_prompt, tokens_json):
    template = compile_template(source)
    return template.render(messages=json.loads(messages_json), tools=None, documents=None,
                           add_generation_prompt=add_generation_prompt, **json.loads(tokens_json))
)py";

// The module, created once under the GIL and kept for the life of the process (never destroyed:
// the interpreter is never finalized either).
py::object& chat_module() {
  static py::object* mod = [] {
    py::module_ types = py::module_::import("types");
    auto* m = new py::object(types.attr("ModuleType")("kvscope_chat"));
    py::dict ns = m->attr("__dict__");
    py::exec(kChatModule, ns);
    return m;
  }();
  return *mod;
}

std::string token_string(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return {};
}

}  // namespace

nlohmann::ordered_json user_message(const std::string& prompt) {
  return nlohmann::ordered_json::array({{{"role", "user"}, {"content", prompt}}});
}

ChatTemplate parse_chat_template(const std::string& text, const std::string& where) {
  json cfg;
  try {
    cfg = json::parse(text);
  } catch (const json::exception& e) {
    fail(where, "not valid JSON ({})", e.what());
  }
  if (!cfg.is_object()) fail(where, "expected a JSON object");
  ChatTemplate t;
  t.where = where;
  t.tokens = json::object();
  for (const auto& [key, value] : cfg.items()) {
    const bool named = key.size() > 6 && key.compare(key.size() - 6, 6, "_token") == 0;
    if (named) {
      const std::string s = token_string(value);
      if (!s.empty()) t.tokens[key] = s;
    } else if (key == "additional_special_tokens" && value.is_array()) {
      json list = json::array();
      for (const auto& v : value)
        if (const std::string s = token_string(v); !s.empty()) list.push_back(s);
      t.tokens[key] = list;
    }
  }
  if (!cfg.contains("chat_template") || cfg["chat_template"].is_null()) return t;
  const json& ct = cfg["chat_template"];
  if (ct.is_string()) {
    t.source = ct.get<std::string>();
  } else if (ct.is_array()) {
    for (const auto& entry : ct)
      if (entry.is_object() && entry.value("name", std::string()) == "default" && entry.contains("template") &&
          entry["template"].is_string())
        t.source = entry["template"].get<std::string>();
    if (t.source.empty()) fail(where, "chat_template is a list without a template named \"default\"");
  } else {
    fail(where, "chat_template must be a string or a list of {{\"name\", \"template\"}}");
  }
  return t;
}

ChatTemplate load_chat_template(const std::string& model_dir) {
  const fs::path dir(model_dir);
  const fs::path cfg_path = dir / "tokenizer_config.json";
  ChatTemplate t;
  if (fs::exists(cfg_path)) t = parse_chat_template(read_file(cfg_path.string(), "tokenizer config"), cfg_path.string());
  const fs::path jinja_path = dir / "chat_template.jinja";
  if (fs::exists(jinja_path)) {
    t.source = read_file(jinja_path.string(), "chat template");
    t.where = jinja_path.string();
  }
  if (t.source.empty()) {
    if (!fs::exists(cfg_path))
      fail(model_dir, "no chat template (no tokenizer_config.json or chat_template.jinja); --chat needs one");
    fail(cfg_path.string(), "no chat template (no \"chat_template\" entry); --chat needs one");
  }
  return t;
}

std::string render_chat(const ChatTemplate& t, const nlohmann::ordered_json& messages, bool add_generation_prompt) {
  if (!messages.is_array()) fail(t.where, "chat messages must be a JSON array, got {}", messages.type_name());
  const std::string messages_json = messages.dump(), tokens_json = t.tokens.is_object() ? t.tokens.dump() : "{}";
  std::string error;
  std::string out = python::with_gil([&]() -> std::string {
    try {
      py::object& m = chat_module();
      return m.attr("render")(t.source, messages_json, add_generation_prompt, tokens_json).cast<std::string>();
    } catch (const py::error_already_set& e) {
      py::object& m = chat_module();
      if (e.matches(m.attr("TemplateRaised"))) {
        error = t.where + ": chat_template: " + py::str(e.value()).cast<std::string>();
      } else if (e.matches(m.attr("TemplateSyntaxError"))) {
        const py::object v = e.value();
        error = fmt::format("{}: chat_template line {}: syntax error: {}", t.where, v.attr("lineno").cast<int>(),
                            py::str(v.attr("message")).cast<std::string>());
      } else {
        const python::ExceptionInfo info = python::exception_info(e, "<template>");
        error = t.where + ": chat_template" + (info.line > 0 ? " line " + std::to_string(info.line) : "") + ": " +
                info.type + ": " + info.message;
      }
      return {};
    }
  });
  if (!error.empty()) {
    // One line: a message with newlines is cut at the first.
    if (const size_t nl = error.find('\n'); nl != std::string::npos) error.resize(nl);
    throw Error(error);
  }
  return out;
}

RenderedChat render_and_encode(const ChatTemplate& t, const Tokenizer& tok, const nlohmann::ordered_json& messages,
                               bool add_generation_prompt) {
  RenderedChat r;
  r.text = render_chat(t, messages, add_generation_prompt);
  r.ids = tok.encode_special(r.text);
  return r;
}

}  // namespace kvscope
