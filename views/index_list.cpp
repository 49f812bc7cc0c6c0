#include "views/index_list.h"

#include <algorithm>
#include <cctype>

namespace kvscope::views {

std::optional<std::vector<int>> parse_index_list(const std::string& text, int limit) {
  std::vector<int> out;
  size_t i = 0, n = text.size();
  auto skip = [&] {
    while (i < n && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  };
  auto number = [&]() -> std::optional<int> {
    skip();
    size_t start = i;
    long v = 0;
    while (i < n && std::isdigit(static_cast<unsigned char>(text[i])) && v <= limit) v = v * 10 + (text[i++] - '0');
    if (i == start || v >= limit) return std::nullopt;
    return static_cast<int>(v);
  };
  skip();
  while (i < n) {
    auto a = number();
    if (!a) return std::nullopt;
    int b = *a;
    skip();
    if (i < n && text[i] == '-') {
      ++i;
      auto e = number();
      if (!e || *e < *a) return std::nullopt;
      b = *e;
      skip();
    }
    for (int v = *a; v <= b; ++v) out.push_back(v);
    if (i < n) {
      if (text[i] != ',') return std::nullopt;
      ++i;
      skip();
      if (i == n) return std::nullopt;  // trailing comma
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace kvscope::views
