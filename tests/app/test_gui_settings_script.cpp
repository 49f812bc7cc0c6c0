// GUI settings persistence and the script parser.
#include <catch2/catch.hpp>

#include <fstream>

#include "app/gui/script.h"
#include "app/gui/settings.h"
#include "core/util/error.h"
#include "test_util.h"

using namespace kvscope;
using namespace kvscope::gui;

TEST_CASE("settings round-trip through the file; a missing file is a first run") {
  TempDir tmp;
  std::string path = tmp.path("cfg/kvscope/settings.json");
  Settings fresh = load_settings(path);
  CHECK(fresh.first_run);
  Settings s;
  s.dark = false;
  s.ui_scale = 1.5f;
  s.view = "rd";
  s.metric = "mse";
  s.sidebar_w = 420;
  s.recent_dumps = {"/a.safetensors", "/b.safetensors"};
  save_settings(path, s);
  Settings back = load_settings(path);
  CHECK(!back.first_run);
  CHECK(!back.dark);
  CHECK(back.ui_scale == 1.5f);
  CHECK(back.view == "rd");
  CHECK(back.metric == "mse");
  CHECK(back.sidebar_w == 420);
  CHECK(back.recent_dumps == s.recent_dumps);
}

TEST_CASE("corrupt or hostile settings fall back to defaults per key") {
  TempDir tmp;
  std::string path = tmp.path("settings.json");
  std::ofstream(path) << "{ not json";
  CHECK(load_settings(path).first_run);  // unreadable: defaults
  std::ofstream(path, std::ios::trunc) << R"({"dark": "yes", "ui_scale": 40, "view": "runs"})";
  Settings s = load_settings(path);
  CHECK(s.dark);             // wrong type: default kept
  CHECK(s.ui_scale == 3.0f); // clamped
  CHECK(s.view == "runs");
}

TEST_CASE("recent lists: most recent first, no duplicates, bounded") {
  std::vector<std::string> l{"a", "b", "c"};
  remember_recent(l, "b");
  CHECK(l == std::vector<std::string>{"b", "a", "c"});
  remember_recent(l, "d", 3);
  CHECK(l == std::vector<std::string>{"d", "b", "a"});
}

TEST_CASE("scripts parse actions and name the line of a mistake") {
  auto s = parse_script_text("# demo\nview heatmap\n\nhover k 8 0  # the hottest head\nwait_jobs\n", "t.txt");
  REQUIRE(s.size() == 3);
  CHECK(s[1].verb == "hover");
  CHECK(s[1].args == std::vector<std::string>{"k", "8", "0"});
  CHECK(s[1].line == 4);
  CHECK_THROWS_WITH(parse_script_text("view heatmap\nfly away\n", "t.txt"), "t.txt:2: unknown script action 'fly'");
  CHECK_THROWS_WITH(parse_script_text("hover k 8\n", "t.txt"), "t.txt:1: 'hover' takes 3 argument(s), got 2");
  CHECK_THROWS_AS(load_script("/nonexistent/script.txt"), Error);
}
