#pragma once
// The script interpreter (script.h): one table row per verb, {verb, arity, handler}. The parser
// checks verbs and arities against this table; step_script runs one action per frame.
#include <string>
#include <vector>

#include "app/gui/script.h"

namespace kvscope::gui {

struct Shell;

struct ScriptVerb {
  const char* verb;
  int arity;
  // Runs the action; false: not done yet, call again next frame. Throws Error("<where>: ...").
  bool (*run)(Shell& s, const ScriptAction& a, const std::string& where);
};

const std::vector<ScriptVerb>& script_verbs();
const ScriptVerb* find_script_verb(const std::string& verb);  // null when unknown

// Advances the shell's script by at most one action (called once per frame, before drawing).
void step_script(Shell& s);

}  // namespace kvscope::gui
