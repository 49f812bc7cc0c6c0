#pragma once
// "0-3, 8" -> {0, 1, 2, 3, 8}: the layer/head lists typed into the policy editor's override row.
#include <optional>
#include <string>
#include <vector>

namespace kvscope::views {

// Sorted, without duplicates. Empty text = empty list (meaning "all"). nullopt when the text is
// not a list of non-negative integers and ranges a-b with a <= b, or names an index >= limit.
std::optional<std::vector<int>> parse_index_list(const std::string& text, int limit);

}  // namespace kvscope::views
