#pragma once
// One error type for everything the user can get wrong: a file, a policy, a flag.
// The message always names the thing (usually a path) and the problem, on one line.
#include <fmt/format.h>
#include <stdexcept>
#include <string>

namespace kvscope {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// fail("model.safetensors", "tensor {} has {} bytes, expected {}", ...) -> "model.safetensors: tensor ..."
template <typename... Args>
[[noreturn]] void fail(const std::string& where, fmt::format_string<Args...> f, Args&&... args) {
  throw Error(where + ": " + fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace kvscope
