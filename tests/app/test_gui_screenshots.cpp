// Screenshot tests: run `kvscope gui` under Xvfb with a script, load the PNGs it writes and check
// that the views drew what the data says: the planted outlier K heads of the demo dump are the
// hottest heatmap cells, the drill-down shows outlier channels, the plots have curves, and the
// light theme is light. Cell positions come from the layout file written beside each PNG.
#include <catch2/catch.hpp>


#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "png_image.h"
#include "test_util.h"
#include "views/colormap.h"
#include "views/plot_model.h"

using kvscope::views::Colormap;
using kvscope::views::colormap_sample;
using kvscope::views::Rgb;
using kvscope::test::Image;
using kvscope::test::load_png;

namespace {

nlohmann::json load_json(const std::string& path) {
  std::ifstream in(path);
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

double luma(Rgb c) { return 0.299 * c.r + 0.587 * c.g + 0.114 * c.b; }
int color_distance(Rgb a, Rgb b) { return std::abs(a.r - b.r) + std::abs(a.g - b.g) + std::abs(a.b - b.b); }

// Centre pixel of heatmap cell (row, col) from the layout the app reported.
Rgb cell_color(const Image& img, const nlohmann::json& grid, int row, int col) {
  float x0 = grid["x0"], y0 = grid["y0"], x1 = grid["x1"], y1 = grid["y1"];
  int rows = grid["rows"], cols = grid["cols"];
  float cw = (x1 - x0) / cols, ch = (y1 - y0) / rows;
  // A third of the way in from the left: the "fp16" marker text and outlines stay clear.
  int x = static_cast<int>(x0 + (col + 0.66f) * cw), y = static_cast<int>(y0 + (row + 0.5f) * ch);
  return img.at(x, y);
}

// Pixels in a rectangle close to `c`.
int count_near(const Image& img, int x0, int y0, int x1, int y1, Rgb c, int tol) {
  int n = 0;
  for (int y = std::max(0, y0); y < std::min(img.h, y1); ++y)
    for (int x = std::max(0, x0); x < std::min(img.w, x1); ++x) n += color_distance(img.at(x, y), c) <= tol;
  return n;
}

int distinct_colors(const Image& img) {
  std::set<uint32_t> s;
  for (size_t i = 0; i + 2 < img.rgb.size(); i += 3 * 7) s.insert(img.rgb[i] << 16 | img.rgb[i + 1] << 8 | img.rgb[i + 2]);
  return static_cast<int>(s.size());
}

void run_gui(const TempDir& tmp, const std::string& script_text) {
  std::string script = tmp.path("script.txt");
  std::ofstream(script) << script_text;
  std::string cmd = "env XDG_CONFIG_HOME=" + tmp.path("config") + " XDG_DATA_HOME=" + tmp.path("data") +
                    " xvfb-run -a -s '-screen 0 1600x1000x24' " KVSCOPE_BIN
                    " gui --demo-tokens 512 --width 1600 --height 1000 --script " + script + " > " + tmp.path("log.txt") +
                    " 2>&1";
  int rc = std::system(cmd.c_str());
  std::ifstream log(tmp.path("log.txt"));
  std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  INFO(text);
  REQUIRE(rc == 0);
}

}  // namespace

TEST_CASE("GUI screenshots of the demo dump under Xvfb") {
  TempDir tmp;
  std::string heat = tmp.path("heat.png"), drill = tmp.path("drill.png"), rd = tmp.path("rd.png"),
              attn = tmp.path("attn.png"), light = tmp.path("light.png"), fig = tmp.path("fig.png");
  run_gui(tmp, "preset uniform-2\n"
               "metric mse\n"
               "view heatmap\n"
               "wait_jobs\n"
               "screenshot " + heat + "\n"
               "click k 8 0\n"
               "wait_frames 3\n"
               "screenshot " + drill + "\n"
               "save_run\n"
               "preset kivi-2\n"
               "wait_jobs\n"
               "save_run\n"
               "view rd\n"
               "wait_frames 2\n"
               "screenshot " + rd + "\n"
               "save_figure rd " + fig + " 640 400\n"
               "view attention\n"
               "wait_frames 2\n"
               "screenshot " + attn + "\n"
               "theme light\n"
               "view heatmap\n"
               "wait_frames 3\n"
               "screenshot " + light + "\n");

  {  // one GUI run feeds every block (a SECTION would re-run it)
    INFO("heatmap: the planted outlier K heads are the hottest cells");
    Image img = load_png(heat);
    REQUIRE(img.w == 1600);
    REQUIRE(img.h == 1000);
    CHECK(distinct_colors(img) > 50);  // not blank
    nlohmann::json layout = load_json(heat + ".json");
    REQUIRE(layout["view"] == "heatmap");
    REQUIRE(layout["metric"] == "mse");
    const auto& k = layout["heatmaps"]["k"];
    REQUIRE(k["rows"] == 24);
    REQUIRE(k["cols"] == 2);
    // The largest K MSE maps to the top of viridis (#fde725): the head with max |K| 220.
    CHECK(color_distance(cell_color(img, k, 8, 0), colormap_sample(Colormap::Viridis, 1.0)) < 30);
    // Every planted head is brighter than every ordinary head.
    std::set<std::pair<int, int>> planted = {{8, 0}, {1, 1}, {0, 1}, {0, 0}, {2, 1}, {2, 0}};
    double dimmest_planted = 1e9, brightest_other = -1;
    for (int l = 0; l < 24; ++l)
      for (int h = 0; h < 2; ++h) {
        double y = luma(cell_color(img, k, l, h));
        if (planted.count({l, h})) dimmest_planted = std::min(dimmest_planted, y);
        else brightest_other = std::max(brightest_other, y);
      }
    CHECK(dimmest_planted > brightest_other);
    // V has no planted outliers: its cells sit in the lower half of the shared colour scale.
    const auto& v = layout["heatmaps"]["v"];
    for (int l = 0; l < 24; ++l) CHECK(luma(cell_color(img, v, l, 0)) < luma(colormap_sample(Colormap::Viridis, 0.6)));
  }

  {
    INFO("drill-down: the head's outlier channels are drawn as red bars");
    Image img = load_png(drill);
    nlohmann::json layout = load_json(drill + ".json");
    CHECK(layout["selected"] == nlohmann::json({"k", 8, 0}));
    // The detail panel is right of the heatmaps; outlier bars use (240, 80, 60).
    int red = count_near(img, 900, 100, 1600, 500, Rgb{240, 80, 60}, 20);
    CHECK(red > 100);
  }

  {
    INFO("RD plot: two runs drawn, Pareto markers present");
    Image img = load_png(rd);
    CHECK(distinct_colors(img) > 50);
    // kivi (series 0, sorted by method) in Okabe-Ito orange; Pareto rings in (255, 80, 80).
    CHECK(count_near(img, 350, 150, 1600, 900, kvscope::views::series_color(0), 20) > 20);
    CHECK(count_near(img, 350, 150, 1600, 900, Rgb{255, 80, 80}, 30) > 20);
    Image f = load_png(fig);
    CHECK(f.w == 640);
    CHECK(f.h == 400);
    CHECK(distinct_colors(f) > 20);
  }

  {
    INFO("attention view: the live curve and the two saved runs are drawn");
    Image img = load_png(attn);
    // Live kivi-2 (series 0) lies under saved run 2 (series 2, also kivi-2); run 1 is uniform-2.
    int live_or_run2 = count_near(img, 350, 150, 1600, 900, kvscope::views::series_color(0), 20) +
                       count_near(img, 350, 150, 1600, 900, kvscope::views::series_color(2), 20);
    CHECK(live_or_run2 > 100);
    CHECK(count_near(img, 350, 150, 1600, 900, kvscope::views::series_color(1), 20) > 100);
  }

  {
    INFO("light theme: light background, dark heatmap cells still coloured");
    Image img = load_png(light);
    CHECK(luma(img.at(5, 995)) > 200);  // status bar background
    nlohmann::json layout = load_json(light + ".json");
    CHECK(layout["dark"] == false);
  }
}
