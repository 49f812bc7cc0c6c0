#pragma once
// Renders figures (the views/ widgets) to PNG files without showing anything: a hidden GLFW
// window supplies the OpenGL context, each figure is one ImGui frame drawn into a framebuffer
// object of the figure's exact size, read back and written by png_capture. Needs a display
// (a real one or Xvfb). One renderer at a time per process (it owns GLFW and an ImGui context).
#include <functional>
#include <memory>
#include <string>

#include <imgui.h>

namespace kvscope::gui {

struct FigureStyle {
  bool dark = true;      // the GUI's default theme
  float font_px = 15.0f; // the GUI's font size at UI scale 1
};

class FigureRenderer {
 public:
  // Error (one line, saying how to get a display) when there is no display or no OpenGL 3 context.
  explicit FigureRenderer(const FigureStyle& style = {});
  ~FigureRenderer();
  FigureRenderer(const FigureRenderer&) = delete;
  FigureRenderer& operator=(const FigureRenderer&) = delete;

  // One frame whose only content is `draw(size)` in a borderless window filling w x h pixels,
  // written to `path` (atomically). `size` is the space inside the window padding.
  void render(const std::string& path, int w, int h, const std::function<void(ImVec2)>& draw);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvscope::gui
