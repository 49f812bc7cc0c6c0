#include "app/gui/png_capture.h"

#include <GL/gl.h>
#include <stb/stb_image_write.h>

#include <algorithm>
#include <string>

#include "core/util/error.h"
#include "core/util/file.h"

namespace kvscope::gui {

void write_framebuffer_png(const std::string& path, int x, int y, int w, int h, int framebuffer_h) {
  if (w <= 0 || h <= 0) fail(path, "nothing to capture ({}x{} pixels)", w, h);
  std::vector<uint8_t> pixels(static_cast<size_t>(w) * h * 3);
  glPixelStorei(GL_PACK_ALIGNMENT, 1);
  glReadBuffer(GL_BACK);
  // OpenGL rows start at the bottom.
  glReadPixels(x, framebuffer_h - y - h, w, h, GL_RGB, GL_UNSIGNED_BYTE, pixels.data());
  write_gl_pixels_png(path, w, h, pixels);
}

void write_gl_pixels_png(const std::string& path, int w, int h, const std::vector<uint8_t>& pixels) {
  if (w <= 0 || h <= 0 || pixels.size() != static_cast<size_t>(w) * h * 3)
    fail(path, "nothing to capture ({}x{} pixels)", w, h);
  std::vector<uint8_t> flipped(pixels.size());
  size_t row = static_cast<size_t>(w) * 3;
  for (int r = 0; r < h; ++r) std::copy_n(&pixels[(h - 1 - r) * row], row, &flipped[r * row]);
  // Encoded in memory, then written like every other output (temp file, fsync, rename).
  std::string png;
  auto append = [](void* ctx, void* data, int size) { static_cast<std::string*>(ctx)->append(static_cast<const char*>(data), size); };
  if (!stbi_write_png_to_func(append, &png, w, h, 3, flipped.data(), static_cast<int>(row))) fail(path, "cannot encode the PNG");
  write_file_atomic(path, png);
}

}  // namespace kvscope::gui
