// The GUI on a real model's KV cache: `kvscope dump` captures the shared tinystories-qwen2-4L
// checkpoint, the GUI opens the dump under Xvfb, and the heatmap's brightest K cell must be the
// head the CLI (`kvscope quantize --json`) reports with the largest absolute MSE.
#include <catch2/catch.hpp>

#include <stb/stb_image.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "test_util.h"

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

int sh(const std::string& cmd) { return std::system(cmd.c_str()); }

}  // namespace

TEST_CASE("GUI heatmap of a real model's dump agrees with the CLI") {
  TempDir tmp;
  std::string model = kvscope::test::models_dir() + "/tinystories-qwen2-4L";
  std::string env = "env XDG_CONFIG_HOME=" + tmp.path("cfg") + " XDG_DATA_HOME=" + tmp.path("data") + " ";
  std::string dump = tmp.path("real.safetensors");
  std::string prompt =
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her "
      "friends. One day, Lily saw a big red ball under a tree. She ran to get it, but a small dog took it first.";
  int rc = sh(env + KVSCOPE_BIN " dump --model " + model + " --prompt '" + prompt + "' --out " + dump + " > " +
              tmp.path("dump.log") + " 2>&1");
  INFO(slurp(tmp.path("dump.log")));
  REQUIRE(rc == 0);

  rc = sh(env + KVSCOPE_BIN " quantize --dump " + dump + " --preset uniform-2 --no-store --no-attention --json > " +
          tmp.path("q.json") + " 2> " + tmp.path("q.log"));
  INFO(slurp(tmp.path("q.log")));
  REQUIRE(rc == 0);
  nlohmann::json q = nlohmann::json::parse(slurp(tmp.path("q.json")));
  int want_layer = -1, want_head = -1;
  double best = -1;
  for (const auto& h : q["per_head"])
    if (h["kind"] == "k" && h["mse"].get<double>() > best) {
      best = h["mse"];
      want_layer = h["layer"];
      want_head = h["head"];
    }
  REQUIRE(want_layer >= 0);

  std::string png = tmp.path("real.png");
  std::ofstream(tmp.path("s.txt")) << "preset uniform-2\nmetric mse\nview heatmap\nwait_jobs\nscreenshot " << png << "\n";
  rc = sh(env + "xvfb-run -a -s '-screen 0 1600x1000x24' " KVSCOPE_BIN " gui --open " + dump +
          " --width 1600 --height 1000 --script " + tmp.path("s.txt") + " > " + tmp.path("gui.log") + " 2>&1");
  INFO(slurp(tmp.path("gui.log")));
  REQUIRE(rc == 0);

  nlohmann::json layout = nlohmann::json::parse(slurp(png + ".json"));
  const auto& k = layout["heatmaps"]["k"];
  REQUIRE(k["rows"] == 4);  // 4 layers
  REQUIRE(k["cols"] == 2);  // 2 KV heads
  int w = 0, h = 0, n = 0;
  unsigned char* img = stbi_load(png.c_str(), &w, &h, &n, 3);
  REQUIRE(img != nullptr);
  std::set<unsigned> colors;
  for (int i = 0; i < w * h; i += 97) colors.insert(img[3 * i] << 16 | img[3 * i + 1] << 8 | img[3 * i + 2]);
  CHECK(colors.size() > 50);  // not blank
  float x0 = k["x0"], y0 = k["y0"], x1 = k["x1"], y1 = k["y1"];
  int got_layer = -1, got_head = -1;
  double brightest = -1;
  for (int l = 0; l < 4; ++l)
    for (int hd = 0; hd < 2; ++hd) {
      int x = static_cast<int>(x0 + (hd + 0.66f) * (x1 - x0) / 2), y = static_cast<int>(y0 + (l + 0.5f) * (y1 - y0) / 4);
      const unsigned char* p = img + 3 * (static_cast<size_t>(y) * w + x);
      double luma = 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
      if (luma > brightest) {
        brightest = luma;
        got_layer = l;
        got_head = hd;
      }
    }
  stbi_image_free(img);
  CHECK(got_layer == want_layer);
  CHECK(got_head == want_head);
  CHECK(brightest > 180);  // the top of viridis (#fde725) is bright
}
