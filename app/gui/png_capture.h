#pragma once
// Reads the current OpenGL framebuffer (the frame just rendered, before the swap) and writes a
// PNG atomically via stb_image_write. x, y are top-left based window pixels.
#include <string>

namespace kvscope::gui {

void write_framebuffer_png(const std::string& path, int x, int y, int w, int h, int framebuffer_h);

}  // namespace kvscope::gui
