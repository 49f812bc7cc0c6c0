#include "app/gui/script.h"

#include "app/gui/script_verbs.h"

#include <sstream>

#include "core/util/error.h"
#include "core/util/file.h"

namespace kvscope::gui {

std::vector<ScriptAction> parse_script_text(const std::string& text, const std::string& where) {
  std::vector<ScriptAction> out;
  std::istringstream in(text);
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (auto hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    std::istringstream words(line);
    ScriptAction a;
    a.line = n;
    if (!(words >> a.verb)) continue;
    for (std::string w; words >> w;) a.args.push_back(w);
    const ScriptVerb* verb = find_script_verb(a.verb);  // the interpreter's table: verbs and arities
    if (!verb) fail(where + ":" + std::to_string(n), "unknown script action '{}'", a.verb);
    if (static_cast<int>(a.args.size()) != verb->arity)
      fail(where + ":" + std::to_string(n), "'{}' takes {} argument(s), got {}", a.verb, verb->arity, a.args.size());
    out.push_back(std::move(a));
  }
  return out;
}

std::vector<ScriptAction> load_script(const std::string& path) {
  return parse_script_text(read_text_file(path, "script"), path);
}

}  // namespace kvscope::gui
