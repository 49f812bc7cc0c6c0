#include "core/replay/block_hook.h"

#include <nlohmann/json.hpp>

#include "core/util/error.h"

namespace kvscope {

using json = nlohmann::json;

namespace {
json rows_of(const std::vector<BlockChoice>& choices) {
  json rows = json::array();
  for (const BlockChoice& c : choices)
    rows.push_back({c.layer, std::string(1, c.kind), c.head_group, c.index, c.first, c.tokens, c.bits});
  return rows;
}
}  // namespace

std::string block_choices_json(const std::vector<BlockChoice>& choices, const std::vector<BlockChoice>& greedy) {
  if (choices.empty() && greedy.empty()) return "";
  json j = {{"columns", {"layer", "kind", "head_group", "block", "first", "tokens", "bits"}}, {"rows", rows_of(choices)}};
  if (!greedy.empty()) j["greedy_rows"] = rows_of(greedy);
  return j.dump();
}

std::vector<BlockChoice> parse_block_choices(const std::string& text, const std::string& where, bool greedy) {
  std::vector<BlockChoice> out;
  try {
    const json j = json::parse(text);
    const char* key = greedy ? "greedy_rows" : "rows";
    if (!j.contains(key)) return out;
    for (const json& r : j.at(key)) {
      BlockChoice c;
      c.layer = r.at(0).get<int>();
      const std::string kind = r.at(1).get<std::string>();
      if (kind != "k" && kind != "v") throw Error("kind must be \"k\" or \"v\"");
      c.kind = kind[0];
      c.head_group = r.at(2).get<int>();
      c.index = r.at(3).get<int>();
      c.first = r.at(4).get<int>();
      c.tokens = r.at(5).get<int>();
      c.bits = r.at(6).get<int>();
      out.push_back(c);
    }
  } catch (const std::exception& e) {
    fail(where, "block choices: {}", e.what());
  }
  return out;
}

int RecordedBlockBits::choose_bits(const KvBlock& b) {
  for (const BlockChoice& c : choices_)
    if (c.layer == b.layer && c.kind == b.kind && c.head_group == b.head_group && c.index == b.index) return c.bits;
  fail("replay", "no recorded choice for block {} of layer {} kind {} head group {}", b.index, b.layer, b.kind, b.head_group);
}

}  // namespace kvscope
