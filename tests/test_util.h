#pragma once
// Helpers shared by all test folders: temporary directories and the path to the shared models.
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
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

// The whole content of a text file ("" when it cannot be read).
inline std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

#ifdef KVSCOPE_BIN
struct CliRun {
  int rc;
  std::string out, err;
};

// Runs `kvscope ARGS` with its run store under dir (XDG_DATA_HOME), capturing stdout and stderr.
inline CliRun run_cli(const TempDir& dir, const std::string& args) {
  const std::string out = dir.path("out.txt"), err = dir.path("err.txt");
  const std::string cmd = "XDG_DATA_HOME=" + dir.path("data") + " " + std::string(KVSCOPE_BIN) + " " + args + " >" +
                          out + " 2>" + err;
  const int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
}
#endif

}  // namespace kvscope::test

using kvscope::test::TempDir;
