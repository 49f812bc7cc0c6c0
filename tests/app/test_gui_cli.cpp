// `kvscope gui` bad input: one clear error line and a non-zero exit, never a crash.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>

#include "test_util.h"

namespace {
struct Result {
  int rc;
  std::string err;
};
Result run(const TempDir& tmp, const std::string& args) {
  std::string cmd = "env -u DISPLAY -u WAYLAND_DISPLAY XDG_CONFIG_HOME=" + tmp.path("cfg") + " " KVSCOPE_BIN " " + args +
                    " > /dev/null 2> " + tmp.path("err.txt");
  int rc = std::system(cmd.c_str());
  std::ifstream in(tmp.path("err.txt"));
  return {rc, std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>())};
}
}  // namespace

TEST_CASE("a bad GUI script names the file and line, before any window opens") {
  TempDir tmp;
  std::string script = tmp.path("bad.txt");
  std::ofstream(script) << "view heatmap\nhover k 8\n";
  Result r = run(tmp, "gui --script " + script);
  CHECK(r.rc != 0);
  CHECK(r.err == "kvscope: error: " + script + ":2: 'hover' takes 3 argument(s), got 2\n");
}

TEST_CASE("without a display the GUI says so instead of crashing") {
  TempDir tmp;
  Result r = run(tmp, "gui --frames 1");
  CHECK(r.rc != 0);
  CHECK(r.err.find("kvscope: error: gui: cannot initialise GLFW") != std::string::npos);
  Result bare = run(tmp, "");  // `kvscope` alone opens the GUI: same message
  CHECK(bare.rc != 0);
  CHECK(bare.err.find("cannot initialise GLFW") != std::string::npos);
}

TEST_CASE("opening a corrupt dump in the GUI reports the file and problem") {
  TempDir tmp;
  std::string dump = tmp.path("broken.safetensors");
  std::ofstream(dump) << "definitely not safetensors";
  std::string script = tmp.path("s.txt");
  std::ofstream(script) << "wait_jobs\n";
  std::string cmd = "env XDG_CONFIG_HOME=" + tmp.path("cfg") + " XDG_DATA_HOME=" + tmp.path("data") +
                    " xvfb-run -a -s '-screen 0 1280x800x24' " KVSCOPE_BIN " gui --open " + dump + " --script " + script +
                    " > /dev/null 2> " + tmp.path("err.txt");
  int rc = std::system(cmd.c_str());
  std::ifstream in(tmp.path("err.txt"));
  std::string err((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(rc != 0);
  CHECK(err.find("kvscope: error: load broken.safetensors: " + dump + ": ") != std::string::npos);
}
