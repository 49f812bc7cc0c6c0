#pragma once
// The GUI's window: GLFW + OpenGL 3 + Dear ImGui setup and teardown, theme and fonts, input
// tracking for idle throttling, and frame pacing. Knows nothing about kvscope's data.
#include <imgui.h>

#include <chrono>
#include <optional>
#include <string>

struct GLFWwindow;

namespace kvscope::gui {

class Window {
 public:
  // Opens a w x h window (Error when there is no display); ImGui keeps its layout in `ini_path`.
  Window(int w, int h, const std::string& ini_path);
  ~Window();
  Window(const Window&) = delete;
  Window& operator=(const Window&) = delete;

  void apply_style(bool dark, float ui_scale);  // theme + sizes now, fonts before the next frame
  bool should_close() const;
  void request_close();
  void size(int* w, int* h) const;              // window size
  void framebuffer_size(int* w, int* h) const;

  // Events: idle (no input for a second and nothing to animate) sleeps until an event instead of
  // redrawing an unchanged window 60 times a second.
  void wait_events(bool idle);
  double seconds_since_input() const;
  static void note_input();  // scripted edits count as input, so pacing behaves as for a person

  // One frame: begin (a scripted mouse replaces the real one), the caller draws and calls
  // ImGui::Render(), end_frame draws the result.
  void begin_frame(bool scripted_mouse, std::optional<ImVec2> mouse_pos, int mouse_button);
  void end_frame();  // ImGui's draw data into the cleared back buffer
  void swap();
  // Caps at ~60 fps when the swap does not wait for vblank (Xvfb, some drivers); `calm` (only
  // work runs and nobody touched the UI for 0.25 s) caps at 40 fps to leave the cores to the jobs.
  static void pace(std::chrono::steady_clock::time_point frame_start, bool calm);

 private:
  void rebuild_fonts();
  GLFWwindow* window_ = nullptr;
  std::string ini_path_;
  bool fonts_dirty_ = true;
  float ui_scale_ = 1.0f;
};

}  // namespace kvscope::gui
