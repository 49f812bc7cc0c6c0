// kvscope presets: the shipped method presets, one line each.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "app/cli.h"
#include "core/policy/policy.h"
#include "core/util/json_text.h"

namespace kvscope::cli {

void register_presets(CLI::App& app) {
  auto* cmd = app.add_subcommand("presets", "List the method presets shipped in assets/presets");
  auto show = std::make_shared<std::string>();
  cmd->add_option("--show", *show, "Print one preset's JSON");
  cmd->callback([show] {
    if (!show->empty()) {
      fmt::print("{}\n", json_text(policy_to_json(load_preset(*show)), 2));
      return;
    }
    for (const auto& p : list_presets()) fmt::print("{:<10} {}\n", p.name, p.description);
  });
}

}  // namespace kvscope::cli
