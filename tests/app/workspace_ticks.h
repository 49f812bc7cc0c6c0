#pragma once
// Driving the GUI workspace without a window: tick it as the frame loop does.
#include <catch2/catch.hpp>

#include <chrono>
#include <thread>

#include "app/gui/workspace.h"

namespace kvscope::gui::test {

// Ticks the workspace like the frame loop does until `done` holds; a hang fails the test after
// `seconds` instead of stalling the suite.
template <typename Done>
void tick_until(Workspace& ws, Done done, double seconds = 60) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) FAIL("workspace jobs still running after " << seconds << " s");
    ws.tick();
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

// Ticks until no job is running or queued.
inline void settle(Workspace& ws) {
  tick_until(ws, [&] { return ws.idle(); });
}

}  // namespace kvscope::gui::test
