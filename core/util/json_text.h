#pragma once
// JSON text for output files and stdout. Strings in it may come from paths, file names or a
// database (SQLite does not check encodings): invalid UTF-8 becomes U+FFFD instead of making
// nlohmann throw a type_error in the middle of writing.
#include <string>

#include <nlohmann/json.hpp>

namespace kvscope {

inline std::string json_text(const nlohmann::json& j, int indent = 2) {
  return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace kvscope
