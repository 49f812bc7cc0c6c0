#include "core/util/interrupt.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

namespace kvscope {

namespace {

// Fixed storage: the handler may only use async-signal-safe calls (unlink, write, _exit).
constexpr int kSlots = 16;
constexpr size_t kPathMax = 4096;
enum SlotState : int { kFree = 0, kFilling = 1, kLive = 2 };  // the handler unlinks kLive slots only
char g_paths[kSlots][kPathMax];
std::atomic<int> g_state[kSlots];

void write_str(const char* s) {
  ssize_t r = ::write(STDERR_FILENO, s, std::strlen(s));
  (void)r;
}

void on_interrupt(int sig) {
  for (int i = 0; i < kSlots; ++i)
    if (g_state[i].load() == kLive) ::unlink(g_paths[i]);
  write_str(sig == SIGINT ? "kvscope: interrupted by SIGINT" : "kvscope: interrupted by SIGTERM");
  write_str("; stopped before finishing, no output written (a run not yet committed is not stored)\n");
  _exit(128 + sig);
}

}  // namespace

void install_interrupt_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  sigaddset(&sa.sa_mask, SIGINT);
  sigaddset(&sa.sa_mask, SIGTERM);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

TempFileGuard::TempFileGuard(const std::string& path) {
  if (path.size() >= kPathMax) return;
  for (int i = 0; i < kSlots; ++i) {
    int expected = kFree;
    if (!g_state[i].compare_exchange_strong(expected, kFilling)) continue;
    std::memcpy(g_paths[i], path.c_str(), path.size() + 1);
    g_state[i].store(kLive);
    slot_ = i;
    return;
  }
}

TempFileGuard::~TempFileGuard() {
  if (slot_ >= 0) g_state[slot_].store(kFree);
}

}  // namespace kvscope
