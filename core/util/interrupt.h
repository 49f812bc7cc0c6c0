#pragma once
// SIGINT/SIGTERM for the command line: the process ends with one clear line on stderr
// ("kvscope: interrupted by SIGTERM; no output written"), deletes the temporary files of writes in
// progress (so nothing half-written is left behind, not even under a temporary name) and exits
// with 128 + signal. SQLite needs nothing here: an unfinished transaction is rolled back by the
// next connection.
#include <string>

namespace kvscope {

// Installs the handlers (idempotent). main() calls it; the GUI keeps its own Cancel path.
void install_interrupt_handlers();

// Registers `path` (a temporary file being written) for deletion if the process is interrupted
// while the guard lives. At most 16 at a time; more are not tracked (still written atomically).
class TempFileGuard {
 public:
  explicit TempFileGuard(const std::string& path);
  ~TempFileGuard();
  TempFileGuard(const TempFileGuard&) = delete;
  TempFileGuard& operator=(const TempFileGuard&) = delete;

 private:
  int slot_ = -1;
};

}  // namespace kvscope
