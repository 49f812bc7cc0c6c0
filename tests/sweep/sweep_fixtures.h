#pragma once
// Small dumps, spec files and a kvscope runner for the sweep tests.
#include <catch2/catch.hpp>

#include <csignal>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Statement.h>

#include "core/dump/kv_dump.h"
#include "core/synth/synth.h"
#include "test_util.h"

namespace kvscope::test {

inline void write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
  REQUIRE(f.good());
}

// A small synthetic dump with queries (attention metrics) and pre-RoPE keys.
inline void write_synth_dump(const std::string& path, uint64_t seed, int tokens = 96, bool pre_rope = true) {
  SynthOptions o;
  o.layers = 2;
  o.kv_heads = 2;
  o.q_heads = 4;
  o.head_dim = 32;
  o.tokens = tokens;
  o.seed = seed;
  o.planted = {{0, 1, 60.0f}, {1, 0, 30.0f}};
  o.k_pre_rope = pre_rope;
  save_dump(path, make_synthetic_dump(o));
}

struct CliResult {
  int code = -1;
  std::string out, err;
};

inline std::string q(const std::string& s) { return "'" + s + "'"; }

// Runs `kvscope <args>` through the shell (args pre-quoted by the caller).
inline CliResult kvscope_cli(const TempDir& tmp, const std::string& args, const std::string& env = "") {
  static int n = 0;
  const std::string out = tmp.path("stdout" + std::to_string(n)), err = tmp.path("stderr" + std::to_string(n));
  ++n;
  const std::string cmd = env + " '" KVSCOPE_BIN "' " + args + " >'" + out + "' 2>'" + err + "'";
  const int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
}

// Starts `kvscope sweep ...` as a child process (stdout/stderr to files); returns its pid.
inline pid_t start_kvscope(const std::vector<std::string>& args, const std::string& log, const std::string& delay_ms) {
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    setenv("KVSCOPE_SWEEP_TEST_DELAY_MS", delay_ms.c_str(), 1);
    std::vector<char*> argv;
    std::string bin = KVSCOPE_BIN;
    argv.push_back(bin.data());
    std::vector<std::string> copy = args;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

inline int64_t sql_count(const std::string& db_path, const std::string& sql) {
  SQLite::Database db(db_path, SQLite::OPEN_READONLY);
  db.setBusyTimeout(5000);
  SQLite::Statement st(db, sql);
  st.executeStep();
  return st.getColumn(0).getInt64();
}

}  // namespace kvscope::test
