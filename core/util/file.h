#pragma once
// Whole-file reads for the small inputs kvscope takes (texts, configs, policies).
#include <string>

namespace kvscope {

// The bytes of `path`; Error("<path>: cannot open the <what>") when it cannot be read.
std::string read_file(const std::string& path, const char* what = "file");

}  // namespace kvscope
