// Workspace: the policy script being watched (python/policy_script.h). Planning calls the script's
// hooks on the UI thread (a few hundred calls, milliseconds); the re-quantization it triggers runs
// in the background like any policy edit.
#include <filesystem>
#include <system_error>

#include "app/gui/workspace.h"
#include "core/util/error.h"
#include "python/policy_script.h"

namespace kvscope::gui {

namespace {

std::string stamp_of(const std::string& path) {
  std::error_code ec;
  const auto t = std::filesystem::last_write_time(path, ec);
  if (ec) return "";
  const auto n = std::filesystem::file_size(path, ec);
  return std::to_string(t.time_since_epoch().count()) + ":" + std::to_string(ec ? 0 : n);
}

}  // namespace

void Workspace::open_policy_script(const std::string& path) {
  script_path_ = path;
  script_stamp_ = stamp_of(path);
  if (replan_script()) policy_edited(true);
}

bool Workspace::replan_script() {
  if (script_path_.empty()) return false;
  try {
    check_policy_script(script_path_);  // syntax and class before any planning
    if (!dump_) {
      live_status_ = "policy script " + script_path_ + ": planned when a dump is open";
      return false;
    }
    ScriptTarget t;
    t.model_id = dump_->meta().model_id;
    t.layers = dump_->shape().layers;
    t.kv_heads = dump_->shape().kv_heads;
    t.head_dim = dump_->shape().head_dim;
    t.tokens = dump_->shape().tokens;
    const std::shared_ptr<const KvDump> whole = dump_->whole();  // token_stats read the dump's values
    t.dump = whole.get();
    policy_ = plan_policy_script(script_path_, t);
    live_status_ = "policy script " + std::filesystem::path(script_path_).filename().string() + " planned";
    return true;
  } catch (const Error& e) {
    error(e.what());
    return false;
  }
}

void Workspace::watch_policy_script() {
  if (script_path_.empty()) return;
  const auto now = Clock::now();
  if (now - script_checked_ < std::chrono::milliseconds(500)) return;
  script_checked_ = now;
  const std::string stamp = stamp_of(script_path_);
  if (stamp.empty() || stamp == script_stamp_) return;  // unchanged (or mid-save: looked at again next time)
  script_stamp_ = stamp;
  if (replan_script()) policy_edited(true);
}

}  // namespace kvscope::gui
