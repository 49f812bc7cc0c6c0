#pragma once
// Reads the current OpenGL framebuffer (the frame just rendered, before the swap) and writes a
// PNG atomically via stb_image_write. x, y are top-left based window pixels.
#include <cstdint>
#include <string>
#include <vector>

namespace kvscope::gui {

void write_framebuffer_png(const std::string& path, int x, int y, int w, int h, int framebuffer_h);

// Pixels as OpenGL reads them (RGB, rows bottom to top) written as a PNG (rows top to bottom),
// through a temporary file renamed into place.
void write_gl_pixels_png(const std::string& path, int w, int h, const std::vector<uint8_t>& bottom_up_rgb);

}  // namespace kvscope::gui
