// The GUI captures a real model's KV cache itself (a background job, like `kvscope dump`) and shows it:
// stories260K has 5 layers and 4 KV heads, so the heatmap must be a 5 x 4 grid.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>

#include "storage/run_store.h"
#include "test_util.h"

TEST_CASE("GUI: capture a dump from a discovered model and show its heatmap") {
  TempDir tmp;
  auto slurp = [](const std::string& p) {
    std::ifstream in(p);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  std::string env = "env KVSCOPE_MODEL_PATH=" + kvscope::test::models_dir() + " XDG_CONFIG_HOME=" + tmp.path("cfg") +
                    " XDG_DATA_HOME=" + tmp.path("data") + " ";
  std::string png = tmp.path("cap.png");
  std::ofstream(tmp.path("s.txt")) << "capture stories260K 64\nwait_jobs\nview heatmap\nwait_jobs\nscreenshot " << png << "\n";
  int rc = std::system((env + "xvfb-run -a -s '-screen 0 1600x1000x24' " KVSCOPE_BIN " gui --width 1600 --height 1000 --script " +
                        tmp.path("s.txt") + " > " + tmp.path("gui.log") + " 2>&1").c_str());
  INFO(slurp(tmp.path("gui.log")));
  REQUIRE(rc == 0);
  auto layout = nlohmann::json::parse(slurp(png + ".json"));
  CHECK(layout["heatmaps"]["k"]["rows"] == 5);
  CHECK(layout["heatmaps"]["k"]["cols"] == 4);
  // Replay from the GUI with the editor's policy (kivi-4 here): TEST_METRICS lines like the CLI's.
  std::ofstream(tmp.path("r.txt")) << "preset kivi-4\nreplay stories260K passkey:len=256,depth=0.5,n=1\nwait_jobs\nscreenshot "
                                   << tmp.path("r.png") << "\n";
  rc = std::system((env + "xvfb-run -a -s '-screen 0 1600x1000x24' " KVSCOPE_BIN " gui --width 800 --height 600 --script " +
                    tmp.path("r.txt") + " > " + tmp.path("r.log") + " 2>&1").c_str());
  INFO(slurp(tmp.path("r.log")));
  CHECK(rc == 0);
  CHECK_THAT(slurp(tmp.path("r.log")), Catch::Contains("TEST_METRICS: slice=passkey_len256_depth0.5") &&
                                           Catch::Contains("greedy_match_ratio="));
  // The sidebar shows one short line per slice (the full TEST_METRICS line goes to stdout).
  auto shown = nlohmann::json::parse(slurp(tmp.path("r.png") + ".json"));
  REQUIRE(shown["replay"].size() == 1);
  CHECK_THAT(shown["replay"][0].get<std::string>(),
             Catch::StartsWith("passkey_len256_depth0.5: ") && Catch::Contains(" b/KV, KL ") && Catch::Contains("greedy "));
  // The replay is kept as `kvscope replay` keeps it: no store was open, so in the default one.
  const std::string db = tmp.path("data") + "/kvscope/kvscope.sqlite";
  {
    kvscope::RunStore store(db, {.read_only = true});
    auto runs = store.list_runs();
    REQUIRE(runs.size() == 1);
    CHECK(runs[0].kind == "replay");
    CHECK(runs[0].policy_name == "kivi-4");
    CHECK(runs[0].model_id == "stories260K");
    CHECK(runs[0].greedy_match >= 0);
    CHECK(runs[0].kv_bits > 4);
    CHECK(store.load_run(runs[0].id).workload == "passkey:len=256,depth=0.5,n=1");
  }
  // ... and plotted in the RD view against its bits per KV entry when the y axis is a replay metric.
  std::ofstream(tmp.path("rd.txt")) << "view rd\nrd_metric kl\nwait_frames 2\nscreenshot " << tmp.path("rd.png") << "\n";
  rc = std::system((env + "xvfb-run -a -s '-screen 0 1600x1000x24' " KVSCOPE_BIN " gui --db " + db +
                    " --width 1200 --height 800 --script " + tmp.path("rd.txt") + " > " + tmp.path("rd.log") + " 2>&1")
                       .c_str());
  INFO(slurp(tmp.path("rd.log")));
  REQUIRE(rc == 0);
  auto rd = nlohmann::json::parse(slurp(tmp.path("rd.png") + ".json"));
  CHECK(rd["rd"]["metric"] == "kl");
  REQUIRE(rd["rd"]["series"].size() == 1);
  CHECK(rd["rd"]["series"][0]["name"] == "kivi");
  CHECK(rd["rd"]["series"][0]["points"] == 1);
  // An unknown model is a clear script error naming the line, and a non-zero exit.
  std::ofstream(tmp.path("bad.txt")) << "capture no-such-model 64\n";
  rc = std::system((env + "xvfb-run -a -s '-screen 0 1600x1000x24' " KVSCOPE_BIN " gui --width 800 --height 600 --script " +
                    tmp.path("bad.txt") + " > " + tmp.path("bad.log") + " 2>&1").c_str());
  CHECK(rc != 0);
  CHECK_THAT(slurp(tmp.path("bad.log")), Catch::Contains("no model 'no-such-model' found"));
}
