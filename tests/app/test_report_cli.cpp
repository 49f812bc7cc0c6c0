// `kvscope report` end to end: a real model's KV dump (tinystories-qwen2-4L) quantized with four
// presets into a fresh store, then the report, run without DISPLAY so that it re-runs itself under
// xvfb-run. Checks that report.md names every run and embeds every figure, and that each PNG is
// the expected size and actually has a drawing in it. Bad input: one error line, exit 1.
#include <catch2/catch.hpp>


#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "storage/run_store.h"
#include "png_image.h"
#include "test_util.h"
#include "views/plot_model.h"

using Catch::Contains;
using kvscope::test::Image;
using kvscope::test::load_png;

namespace {

std::string slurp(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

int sh(const std::string& cmd) {
  int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// Pixels of the central region that differ from the figure's background (its corner pixel).
int drawn_pixels(const Image& img) {
  uint32_t bg = img.packed_at(0, 0);
  int n = 0;
  for (int y = img.h / 8; y < img.h * 7 / 8; ++y)
    for (int x = img.w / 8; x < img.w * 7 / 8; ++x) n += img.packed_at(x, y) != bg;
  return n;
}

int distinct_colors(const Image& img) {
  std::set<uint32_t> s;
  for (int y = 0; y < img.h; y += 2)
    for (int x = 0; x < img.w; x += 2) s.insert(img.packed_at(x, y));
  return static_cast<int>(s.size());
}

int count_color(const Image& img, kvscope::views::Rgb c, int tol) {
  int n = 0;
  for (int y = 0; y < img.h; ++y)
    for (int x = 0; x < img.w; ++x) {
      uint32_t p = img.packed_at(x, y);
      int d = std::abs(int(p >> 16) - c.r) + std::abs(int(p >> 8 & 255) - c.g) + std::abs(int(p & 255) - c.b);
      n += d <= tol;
    }
  return n;
}

}  // namespace

TEST_CASE("kvscope report on a real model's runs, under xvfb-run", "[report][xvfb]") {
  TempDir tmp;
  const std::string bin = KVSCOPE_BIN;
  const std::string model = kvscope::test::models_dir() + "/tinystories-qwen2-4L";
  {
    std::ofstream text(tmp.path("story.txt"));
    for (int i = 0; i < 12; ++i)
      text << "Once upon a time, there was a little girl named Lily. She loved to play in the park with her dog Max. "
              "One day, they found a big red ball under a tree, and Lily laughed as Max ran after it. ";
  }
  const std::string dump = tmp.path("story.safetensors"), db = tmp.path("runs.sqlite"), out = tmp.path("report");
  REQUIRE(sh(bin + " dump --model " + model + " --text " + tmp.path("story.txt") + " --tokens 256 --out " + dump +
             " 2> " + tmp.path("dump.log")) == 0);
  const std::vector<std::string> presets = {"uniform-2", "uniform-4", "kivi-2", "kivi-4"};
  for (const auto& p : presets) {
    INFO(p);
    REQUIRE(sh(bin + " quantize --dump " + dump + " --preset " + p + " --attn-queries 64 --db " + db + " > /dev/null 2> " +
               tmp.path("q.log")) == 0);
  }

  for (const std::string p : {"uniform-2", "kivi-2"}) {  // a passkey prompt past KIVI's 128-token fp16 window
    INFO(p);
    REQUIRE(sh(bin + " replay --model " + model + " --workload passkey:len=256,depth=0.5,n=1 --max-tokens 8 --preset " +
               p + " --db " + db + " > /dev/null 2> " + tmp.path("r.log")) == 0);
  }

  // No DISPLAY: the command re-runs itself under xvfb-run.
  int rc = sh("env -u DISPLAY -u WAYLAND_DISPLAY " + bin + " report --db " + db + " --out " + out + " > " +
              tmp.path("report.log") + " 2>&1");
  INFO(slurp(tmp.path("report.log")));
  REQUIRE(rc == 0);
  const std::string md = slurp(out + "/report.md");
  REQUIRE(!md.empty());
  for (const auto& p : presets) CHECK_THAT(md, Contains("| " + p + " |"));  // a summary row per run
  for (const char* method : {"| uniform |", "| kivi |"}) CHECK_THAT(md, Contains(method));
  CHECK_THAT(md, Contains("Why this run:"));

  // Every embedded figure exists, has the fixed size and a drawing; every PNG is embedded.
  std::regex embed(R"(!\[[^\]]*\]\(([^)]+\.png)\))");
  std::set<std::string> embedded;
  for (auto it = std::sregex_iterator(md.begin(), md.end(), embed); it != std::sregex_iterator(); ++it)
    embedded.insert((*it)[1]);
  std::set<std::string> written;
  for (const auto& e : std::filesystem::directory_iterator(out))
    if (e.path().extension() == ".png") written.insert(e.path().filename().string());
  CHECK(embedded == written);
  CHECK(embedded.size() == 6);  // 2 RD curves, the heatmaps, 2 per-layer plots, 1 replay slice
  for (const auto& f : embedded) {
    INFO(f);
    Image img = load_png(out + "/" + f);
    CHECK(img.w == 960);
    CHECK(img.h == 600);
    CHECK(distinct_colors(img) > 40);
    CHECK(drawn_pixels(img) > img.w * img.h / 50);
  }
  // The RD curves: two families -> Okabe-Ito series 0 (kivi) and 1 (uniform) are drawn, and the
  // Pareto front rings (255, 80, 80).
  Image rd = load_png(out + "/rd-1-attn_cos_mean.png");
  CHECK(count_color(rd, kvscope::views::series_color(0), 20) > 50);
  CHECK(count_color(rd, kvscope::views::series_color(1), 20) > 50);
  CHECK(count_color(rd, {255, 80, 80}, 30) > 20);
  // The replay figure: kivi (series 0) and uniform (series 1), both with KL > 0 on this prompt.
  Image kl = load_png(out + "/replay-1-kl.png");
  CHECK(count_color(kl, kvscope::views::series_color(0), 20) > 20);
  CHECK(count_color(kl, kvscope::views::series_color(1), 20) > 20);
  CHECK_THAT(md, Contains("## Replay") && Contains("| passkey_len256_depth0.5 |"));
  // The heatmaps use viridis: many distinct colours in the cells.
  for (const auto& f : embedded)
    if (f.rfind("heads-run-", 0) == 0) CHECK(distinct_colors(load_png(out + "/" + f)) > 60);
  // No temporary files left behind.
  for (const auto& e : std::filesystem::directory_iterator(out)) CHECK(e.path().string().find(".tmp") == std::string::npos);

  SECTION("--size and --theme: a paper's figures") {
    const std::string light = tmp.path("light");
    rc = sh("env -u DISPLAY -u WAYLAND_DISPLAY " + bin + " report --db " + db + " --out " + light +
            " --size 640x400 --theme light > " + tmp.path("light.log") + " 2>&1");
    INFO(slurp(tmp.path("light.log")));
    REQUIRE(rc == 0);
    Image img = load_png(light + "/rd-1-attn_cos_mean.png");
    CHECK(img.w == 640);
    CHECK(img.h == 400);
    const kvscope::views::Rgb corner = img.at(0, 0);  // the window background
    CHECK(corner.r > 200);
    CHECK(corner.g > 200);
    CHECK(corner.b > 200);
    CHECK(load_png(out + "/rd-1-attn_cos_mean.png").at(0, 0).r < 80);  // the default is dark
  }

  SECTION("bad input: one clear line, exit 1") {
    auto run = [&](const std::string& args, const std::string& expect, const std::string& env = "") {
      int code = sh(env + bin + " report " + args + " > " + tmp.path("bad.log") + " 2>&1");
      std::string log = slurp(tmp.path("bad.log"));
      INFO(log);
      CHECK(code == 1);
      CHECK_THAT(log, Contains(expect));
      CHECK(std::count(log.begin(), log.end(), '\n') == 1);
    };
    run("--db " + tmp.path("missing.sqlite") + " --out " + tmp.path("o1"), "no such run store");
    { kvscope::RunStore empty(tmp.path("empty.sqlite")); }
    run("--db " + tmp.path("empty.sqlite") + " --out " + tmp.path("o2"), "no finished runs");
    run("--db " + db + " --out " + tmp.path("o3") + " --run 999", "--run 999: there is no run 999");
    run("--db " + db + " --out " + tmp.path("o4") + " --metric cosine", "unknown metric \"cosine\"");
    run("--db " + db + " --out " + tmp.path("o6") + " --size 100x100", "\"100x100\" is not a figure size");
    run("--db " + db + " --out " + tmp.path("o7") + " --size 800", "\"800\" is not a figure size");
    CHECK(!std::filesystem::exists(tmp.path("o3")));  // nothing written for bad input
    // No display and no xvfb-run on PATH: says how to run it.
    run("--db " + db + " --out " + tmp.path("o5"), "xvfb-run is not installed",
        "env -u DISPLAY -u WAYLAND_DISPLAY PATH=" + tmp.path("nobin") + " ");
  }
}
