#pragma once
// Helpers shared by all test folders: temporary directories and the path to the shared models.
#include <cstdlib>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <string>

namespace kvscope::test {

// A fresh directory under $TMPDIR, removed when the object goes away.
struct TempDir {
  std::filesystem::path dir;
  TempDir() {
    std::random_device rd;
    dir = std::filesystem::temp_directory_path() / ("kvscope-test-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(dir);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  std::string path(const std::string& name) const { return (dir / name).string(); }
};

// $KVSCOPE_TEST_MODELS (the shared real checkpoints). Tests that need them fail, never skip,
// when it is unset or wrong.
inline std::string models_dir() {
  const char* env = std::getenv("KVSCOPE_TEST_MODELS");
  if (!env || !*env) throw std::runtime_error("KVSCOPE_TEST_MODELS is not set (scripts/test.sh sets it to ../shared/models)");
  if (!std::filesystem::is_directory(env)) throw std::runtime_error(std::string("KVSCOPE_TEST_MODELS=") + env + " is not a directory");
  return env;
}

}  // namespace kvscope::test

using kvscope::test::TempDir;
