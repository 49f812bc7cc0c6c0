#pragma once
// A PNG read back for the GUI screenshot and report tests (stb_image), with pixel access.
#include <catch2/catch.hpp>

#include <stb/stb_image.h>

#include <cstdint>
#include <string>
#include <vector>

#include "views/colormap.h"

namespace kvscope::test {

struct Image {
  int w = 0, h = 0;
  std::vector<uint8_t> rgb;
  views::Rgb at(int x, int y) const {
    const uint8_t* p = &rgb[(static_cast<size_t>(y) * w + x) * 3];
    return {p[0], p[1], p[2]};
  }
  uint32_t packed_at(int x, int y) const {  // 0xRRGGBB, for sets and equality
    const views::Rgb c = at(x, y);
    return uint32_t(c.r) << 16 | uint32_t(c.g) << 8 | c.b;
  }
};

inline Image load_png(const std::string& path) {
  Image img;
  int n = 0;
  uint8_t* data = stbi_load(path.c_str(), &img.w, &img.h, &n, 3);
  INFO(path);
  REQUIRE(data != nullptr);
  img.rgb.assign(data, data + static_cast<size_t>(img.w) * img.h * 3);
  stbi_image_free(data);
  return img;
}

}  // namespace kvscope::test
