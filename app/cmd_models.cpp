// `kvscope models`: the models found in the Hugging Face cache and $KVSCOPE_MODEL_PATH.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "app/cli.h"
#include "core/model/discovery.h"
#include "core/util/json_text.h"

namespace kvscope::cli {

void register_models(CLI::App& app) {
  auto* cmd = app.add_subcommand("models", "List the models found in the Hugging Face cache and $KVSCOPE_MODEL_PATH");
  auto json_out = std::make_shared<bool>(false);
  cmd->add_flag("--json", *json_out, "Print the list as JSON");
  cmd->callback([json_out] {
    const auto models = discover_models();
    if (*json_out) {
      nlohmann::json arr = nlohmann::json::array();
      for (const auto& m : models) {
        nlohmann::json j = {{"id", m.id}, {"dir", m.dir}};
        if (!m.error.empty()) j["error"] = m.error;
        j["architecture"] = m.error.empty() || m.params ? std::string(arch_name(m.config.arch)) : "";
        j["layers"] = m.config.num_layers;
        j["heads"] = m.config.num_heads;
        j["kv_heads"] = m.config.num_kv_heads;
        j["head_dim"] = m.config.head_dim;
        j["params"] = m.params;
        j["dtype"] = m.dtype;
        arr.push_back(j);
      }
      fmt::print("{}\n", json_text(arr, 2));
      return;
    }
    if (models.empty()) {
      fmt::print(stderr, "kvscope models: no models found in {} or $KVSCOPE_MODEL_PATH\n", hf_hub_dir());
      return;
    }
    fmt::print("{:<36} {:<20} {:>6} {:>9} {:>8} {:>12} {:<6}\n", "model", "architecture", "layers", "heads/kv",
               "head_dim", "params", "dtype");
    for (const auto& m : models) {
      if (!m.error.empty() && m.params == 0) {
        fmt::print("{:<36} error: {}\n", m.id, m.error);
        continue;
      }
      fmt::print("{:<36} {:<20} {:>6} {:>9} {:>8} {:>12} {:<6}\n", m.id, arch_name(m.config.arch),
                 m.config.num_layers, fmt::format("{}/{}", m.config.num_heads, m.config.num_kv_heads),
                 m.config.head_dim, m.params, m.dtype);
      if (!m.error.empty()) fmt::print("{:<36} error: {}\n", "", m.error);
    }
  });
}

}  // namespace kvscope::cli
