// `kvscope report` without a window: runs stored with known numbers, then the grouping, the RD
// curves, the run choice, the similar-rate overlay, the per-layer attention statistics and the
// tables are checked against values worked out by hand in the comments.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>

#include "app/gui/report_doc.h"
#include "core/util/error.h"
#include "storage/run_store.h"
#include "test_util.h"
#include "views/plot_model.h"
#include "views/report_model.h"

using namespace kvscope;
using namespace kvscope::views;
using Catch::Contains;

namespace {

// A 2-layer x 2-KV-head run. Attention: cos_mean/min per (layer, head) given by `cos`, `cmin`
// (row-major); K head NMSE = k_nmse[layer*2+head] with energy 100 per head, V twice the K error.
QuantizeReport run(const std::string& policy, const std::string& method, double bits, double attn_cos,
                   const std::string& dump = "/nowhere/a.safetensors", std::vector<double> cos = {},
                   std::vector<double> cmin = {}, std::vector<double> k_nmse = {}) {
  QuantizeReport r;
  r.method = method;
  r.policy_name = policy;
  r.policy_json = "{\"name\":\"" + policy + "\"}";
  r.dump_path = dump;
  r.model_id = "toy-model";
  r.shape = {2, 2, 4, 8, 16};
  r.bits_per_element = bits;
  r.k_bits_per_element = r.v_bits_per_element = bits;
  r.k_nmse = 0.5 / bits;
  r.v_nmse = 0.25 / bits;
  r.attn_cos_mean = attn_cos;
  r.attn_cos_min = attn_cos - 0.1;
  r.attn_kl_mean = 0.01;
  r.attn_nmse = 0.02;
  r.attn_queries = 8;
  r.wall_seconds = 1.25;
  if (cos.empty()) cos = {attn_cos, attn_cos, attn_cos, attn_cos};
  if (cmin.empty()) cmin = {attn_cos - 0.1, attn_cos - 0.1, attn_cos - 0.1, attn_cos - 0.1};
  if (k_nmse.empty()) k_nmse = {0.01, 0.02, 0.03, 0.04};
  for (int l = 0; l < 2; ++l)
    for (int h = 0; h < 2; ++h) {
      for (char kind : {'k', 'v'}) {
        HeadMetrics m;
        m.layer = l;
        m.head = h;
        m.kind = kind;
        m.nmse = k_nmse[l * 2 + h] * (kind == 'v' ? 2 : 1);
        m.elements = 100;
        m.mse = m.nmse * 100 / 100.0;  // energy sum x^2 = 100 per head: mse = nmse * 100 / elements
        m.cos = 1 - m.nmse / 2;
        m.bits = static_cast<uint64_t>(bits * 100);
        r.per_head.push_back(m);
      }
      AttentionMetrics a;
      a.layer = l;
      a.head = h;
      a.out_cos_mean = cos[l * 2 + h];
      a.out_cos_min = cmin[l * 2 + h];
      r.attention.push_back(a);
    }
  return r;
}

int64_t add(RunStore& s, const QuantizeReport& r, std::vector<std::string> tags = {}) {
  RunContext ctx;
  ctx.tags = std::move(tags);
  return s.add_quantize_run(r, ctx);
}

const Series* find_series(const PlotData& d, const std::string& name) {
  for (const auto& s : d.series)
    if (s.name == name) return &s;
  return nullptr;
}

}  // namespace

TEST_CASE("report: method families from policy names", "[report]") {
  CHECK(method_family("uniform-4@3b", "uniform") == "uniform");
  CHECK(method_family("uniform-8", "uniform") == "uniform");
  CHECK(method_family("kvsmooth-4", "uniform") == "kvsmooth");  // a preset family, not its method
  CHECK(method_family("watersic-2@2.5r", "watersic") == "watersic");
  CHECK(method_family("kivi-2", "kivi") == "kivi");
  CHECK(method_family("fp16", "fp16") == "fp16");
  CHECK(method_family("my_policy", "kivi") == "kivi");       // a policy file's name: its method
  CHECK(method_family("uniform-4-ch", "uniform") == "uniform");
  CHECK(method_family("4-2", "skvq") == "skvq");
  CHECK(method_family("-4", "kvmix") == "kvmix");
}

TEST_CASE("report: metric names and values", "[report]") {
  CHECK(parse_report_metric("k_nmse") == ReportMetric::KNmse);
  CHECK(parse_report_metric("attn_kl_mean") == ReportMetric::AttnKl);
  CHECK_THROWS_WITH(parse_report_metric("cos"), Contains("unknown metric \"cos\"") && Contains("attn_cos_mean"));
  QuantizeReport r = run("kivi-2", "kivi", 2.5, 0.75);
  CHECK(report_metric_value(r, ReportMetric::AttnCosMean) == Approx(0.25));
  CHECK(report_metric_value(r, ReportMetric::AttnCosMin) == Approx(0.35));  // 1 - (0.75 - 0.1)
  CHECK(report_metric_value(r, ReportMetric::KNmse) == Approx(0.2));        // 0.5 / 2.5
  r.attn_queries = 0;  // not measured: NaN, not "perfect"
  CHECK(std::isnan(report_metric_value(r, ReportMetric::AttnCosMean)));
  CHECK(report_metric_value(r, ReportMetric::VNmse) == Approx(0.1));
}

TEST_CASE("report: integer ticks for layer axes", "[report]") {
  auto values = [](const std::vector<Tick>& t) {
    std::vector<double> v;
    for (const auto& x : t) v.push_back(x.value);
    return v;
  };
  // 2 layers: the 1-2-5 step would be 0.2; whole numbers only.
  CHECK(values(integer_ticks(-0.06, 1.06)) == std::vector<double>{0, 1});
  CHECK(integer_ticks(-0.06, 1.06)[1].label == "1");
  // 8 layers: every layer (the 1-2-5 step would be 2).
  CHECK(values(integer_ticks(-0.4, 7.4)) == std::vector<double>{0, 1, 2, 3, 4, 5, 6, 7});
  // 24 layers: 1-2-5 steps (5).
  CHECK(values(integer_ticks(-1.4, 24.4)) == std::vector<double>{0, 5, 10, 15, 20});
  // Two decades on a log axis: 0.1, 0.2, 0.5, 1 labelled, the other minors not.
  std::vector<std::string> labels;
  for (const auto& t : log_ticks(0.09, 1.3))
    if (!t.label.empty()) labels.push_back(t.label);
  CHECK(labels == std::vector<std::string>{"0.1", "0.2", "0.5", "1"});
  // A log range too narrow for two 1..9 x 10^k values (a heatmap of near-equal NMSEs): 1-2-5
  // ticks, labelled. (0.1437 .. 0.1681: step 0.01 -> 0.15, 0.16.)
  auto narrow = log_ticks(0.1437, 0.1681);
  REQUIRE(values(narrow).size() == 2);
  CHECK(narrow[0].value == Approx(0.15));
  CHECK(narrow[1].label == "0.16");
}

TEST_CASE("report: grouping, RD curves, run choice and overlay from a store", "[report]") {
  TempDir tmp;
  RunStore store(tmp.path("runs.sqlite"));
  // Dump A. (bits, 1 - attention cos):
  //   kivi-2 (2.3, 0.03)  uniform-2 (2.5, 0.10)  watersic-2@3r (3.0, 0.002)  uniform-4@3b (3.5, 0.05)
  //   kivi-4 (4.3, 0.005) uniform-4 (4.5, 0.01)  fp16 (16, 0)
  // Pareto front over the quantized runs, by bits: kivi-2 (first), uniform-2 no (0.10 > 0.03),
  // watersic (0.002 < 0.03), then nothing beats 0.002. kivi 1 point, watersic 1 point: tie, kivi's
  // front point is cheaper (2.3 < 3.0) -> kivi is best; its lowest-rate run is kivi-2.
  int64_t u2 = add(store, run("uniform-2", "uniform", 2.5, 0.90));
  int64_t u4 = add(store, run("uniform-4", "uniform", 4.5, 0.99));
  int64_t u3 = add(store, run("uniform-4@3b", "uniform", 3.5, 0.95), {"variant"});
  int64_t k2 = add(store, run("kivi-2", "kivi", 2.3, 0.97, "/nowhere/a.safetensors", {0.9, 0.8, 0.99, 0.97},
                              {0.5, 0.7, 0.95, 0.9}));
  int64_t k4 = add(store, run("kivi-4", "kivi", 4.3, 0.995));
  int64_t w3 = add(store, run("watersic-2@3r", "watersic", 3.0, 0.998));
  QuantizeReport fp = run("fp16", "fp16", 16, 1.0);
  fp.k_nmse = fp.v_nmse = 0;
  int64_t f16 = add(store, fp);
  // Dump B: one run.
  int64_t b2 = add(store, run("kivi-2", "kivi", 2.3, 0.96, "/nowhere/b.safetensors"));

  gui::ReportOptions o;
  o.db = store.path();
  std::vector<ReportRun> runs = gui::load_report_runs(store, o);
  REQUIRE(runs.size() == 8);
  CHECK(runs.front().id == u2);  // oldest first
  auto idx = [&](int64_t id) {
    for (int i = 0; i < static_cast<int>(runs.size()); ++i)
      if (runs[i].id == id) return i;
    FAIL("no run " << id);
    return -1;
  };

  std::vector<DumpGroup> groups = group_by_dump(runs);
  REQUIRE(groups.size() == 2);
  CHECK(groups[0].dump == "/nowhere/a.safetensors");  // the larger group first
  CHECK(groups[0].runs == std::vector<int>{idx(k2), idx(u2), idx(w3), idx(u3), idx(k4), idx(u4), idx(f16)});
  CHECK(groups[1].runs == std::vector<int>{idx(b2)});
  CHECK(groups[0].tokens == 16);

  SECTION("RD curves: one series per family, sorted by bits, fp16 (error 0) left out") {
    PlotData d = rd_curves(runs, groups[0], ReportMetric::AttnCosMean);
    CHECK(d.x_scale == ScaleKind::Log);
    CHECK(d.y_scale == ScaleKind::Log);
    REQUIRE(d.series.size() == 3);
    CHECK(d.series[0].name == "kivi");
    CHECK(d.series[1].name == "uniform");
    CHECK(d.series[2].name == "watersic");
    const Series* u = find_series(d, "uniform");
    CHECK(u->x == std::vector<double>{2.5, 3.5, 4.5});
    REQUIRE(u->y.size() == 3);
    CHECK(u->y[0] == Approx(0.10));
    CHECK(u->y[1] == Approx(0.05));
    CHECK(u->y[2] == Approx(0.01));
    CHECK(u->ids == std::vector<int64_t>{u2, u3, u4});
    CHECK(u->annotations == std::vector<std::string>{"uniform-2", "uniform-4@3b", "uniform-4"});
    auto front = pareto_front(all_points(d), true);
    REQUIRE(front.size() == 2);
    CHECK(d.series[front[0].ref.series].ids[front[0].ref.index] == k2);
    CHECK(d.series[front[1].ref.series].ids[front[1].ref.index] == w3);
    // K NMSE = 0.5 / bits: fp16 (0) is left out too.
    PlotData kd = rd_curves(runs, groups[0], ReportMetric::KNmse);
    CHECK(find_series(kd, "fp16") == nullptr);
    CHECK(find_series(kd, "kivi")->y[1] == Approx(0.5 / 4.3));
  }

  SECTION("the chosen run is the lowest-rate run of the family with most front points") {
    RunChoice c = choose_run(runs, groups, ReportMetric::AttnCosMean);
    REQUIRE(c.index == idx(k2));
    CHECK(c.family == "kivi");
    CHECK_THAT(c.reason, Contains("run " + std::to_string(k2)) && Contains("kivi-2") && Contains("Pareto front"));
    // Under K NMSE = 0.5/bits every run is on the front in bits order: uniform has 3 points,
    // kivi 2, watersic 1 -> uniform, whose cheapest run is uniform-2.
    RunChoice ck = choose_run(runs, groups, ReportMetric::KNmse);
    CHECK(ck.index == idx(u2));
    CHECK(ck.family == "uniform");
  }

  SECTION("overlay: the other families' runs nearest in rate, within 1.5x") {
    // kivi-2 at 2.3 b: uniform-2 (2.5, ratio 1.09) beats uniform-4@3b (3.5, ratio 1.52 > 1.5);
    // watersic at 3.0 (1.30) is in; fp16 (16) is not; kivi-4 is kivi's own family.
    CHECK(similar_rate_runs(runs, groups[0], idx(k2)) == std::vector<int>{idx(k2), idx(u2), idx(w3)});
    CHECK(similar_rate_runs(runs, groups[0], idx(k2), 1.2) == std::vector<int>{idx(k2), idx(u2)});
  }

  SECTION("per-layer attention: mean and worst over KV heads") {
    // kivi-2: layer 0 cos (0.9, 0.8), min (0.5, 0.7); layer 1 cos (0.99, 0.97), min (0.95, 0.9).
    // mean: 1 - 0.85 = 0.15, 1 - 0.98 = 0.02; worst head: 1 - 0.8 = 0.2, 1 - 0.97 = 0.03
    // (the per-query minima 0.5 .. 0.95 are the table's attn_cos_min, not this plot).
    PlotData mean = attention_layers(runs, {idx(k2), idx(u2)}, false);
    REQUIRE(mean.series.size() == 2);
    CHECK(mean.series[0].name == "kivi-2 (2.3 b)");
    CHECK(mean.series[0].x == std::vector<double>{0, 1});
    CHECK(mean.series[0].y[0] == Approx(0.15));
    CHECK(mean.series[0].y[1] == Approx(0.02));
    CHECK(mean.series[1].y[0] == Approx(0.10));  // uniform-2: cos 0.9 everywhere
    CHECK(mean.integer_x);
    PlotData worst = attention_layers(runs, {idx(k2)}, true);
    CHECK(worst.series[0].y[0] == Approx(0.2));
    CHECK(worst.series[0].y[1] == Approx(0.03));
    CHECK(worst.y_scale == ScaleKind::Log);
  }

  SECTION("the plan: figures, the chosen run and the Markdown") {
    gui::ReportPlan p = gui::plan_report(runs, o);
    CHECK(runs[p.chosen].id == k2);
    std::vector<std::string> files;
    for (const auto& f : p.figures) files.push_back(f.file);
    CHECK(files == std::vector<std::string>{"rd-1-attn_cos_mean.png", "rd-1-k_nmse.png", "rd-2-attn_cos_mean.png",
                                            "rd-2-k_nmse.png", "heads-run-" + std::to_string(k2) + ".png",
                                            "attn-layers-mean-run-" + std::to_string(k2) + ".png",
                                            "attn-layers-worst-run-" + std::to_string(k2) + ".png"});
    for (const auto& f : files) CHECK_THAT(p.markdown, Contains("](" + f + ")"));
    // The heatmap figure: K NMSE per (layer, head) = 0.01, 0.02 / 0.03, 0.04; V twice that.
    const gui::ReportFigure& h = p.figures[4];
    REQUIRE(h.kind == gui::ReportFigure::Kind::HeadHeatmaps);
    CHECK(h.k.at(1, 0) == Approx(0.03));
    CHECK(h.v.at(1, 1) == Approx(0.08));
    CHECK(h.scale.kind == ScaleKind::Log);
    CHECK(h.scale.lo <= 0.01);
    CHECK(h.scale.hi >= 0.08);
    CHECK_THAT(p.markdown, Contains("Worst K head: layer 1 head 1") && Contains("Worst V head: layer 1 head 1"));
    CHECK_THAT(p.markdown, Contains("Pareto front of 1 - attention output cosine (mean): `kivi-2` (2.3 b") &&
                               Contains("`watersic-2@3r` (3 b"));
    CHECK_THAT(p.markdown, Contains("Not on the attn_cos_mean plot") && Contains("`fp16`"));
    CHECK_THAT(p.markdown, Contains("Overlaid") && Contains("`uniform-2`") && Contains("`watersic-2@3r`"));
    // --run picks the run (and its dump group) explicitly.
    gui::ReportOptions named = o;
    named.run = b2;
    gui::ReportPlan pb = gui::plan_report(runs, named);
    CHECK(runs[pb.chosen].id == b2);
    CHECK(pb.overlay == std::vector<int>{idx(b2)});  // alone on dump B
    CHECK_THAT(pb.markdown, Contains("named with --run") && Contains("shown alone"));
  }

  SECTION("tables") {
    Table s = gui::report_summary_table(runs, groups[0].runs);
    CHECK(s.header == std::vector<std::string>{"run", "model", "method", "policy", "bits_per_element", "k_nmse", "v_nmse",
                                               "attn_cos_mean", "attn_cos_min", "attn_kl_mean", "wall_seconds"});
    REQUIRE(s.rows.size() == 7);
    CHECK(s.rows[0][0].integer == k2);
    CHECK(s.rows[0][3].text == "kivi-2");
    CHECK(s.rows[0][4].real == Approx(2.3));
    CHECK(s.rows[0][5].real == Approx(0.5 / 2.3));
    CHECK(s.rows[0][8].real == Approx(0.87));
    // Per layer of kivi-2: K NMSE of layer 0 = (0.01*100 + 0.02*100) / (100 + 100) = 0.015;
    // attention cos mean (0.9 + 0.8) / 2 = 0.85, min 0.5.
    Table l = gui::report_layer_table(runs[idx(k2)]);
    REQUIRE(l.rows.size() == 2);
    CHECK(l.header[3] == "k_nmse");
    CHECK(l.rows[0][3].real == Approx(0.015));
    CHECK(l.rows[1][4].real == Approx(0.07));  // V layer 1: (0.06 + 0.08) / 2
    CHECK(l.rows[0][6].real == Approx(0.85));
    CHECK(l.rows[0][7].real == Approx(0.5));
  }
}

TEST_CASE("report: replay runs get a table, filters and bad --run", "[report]") {
  TempDir tmp;
  RunStore store(tmp.path("runs.sqlite"));
  int64_t q = add(store, run("kivi-2", "kivi", 2.3, 0.97), {"study"});
  add(store, run("uniform-2", "uniform", 2.5, 0.9));
  RunContext ctx;
  ctx.workload = "passkey:len=256";
  ctx.replay_metrics = {{"", "greedy_match_ratio", 0.75}, {"passkey_len256", "greedy_match_ratio", 0.5},
                        {"passkey_len256", "passkey_accuracy", 1.0}};
  int64_t rp = store.add_replay_run(run("kivi-2", "kivi", 2.3, 0.97), ctx);

  gui::ReportOptions o;
  o.db = store.path();
  auto runs = gui::load_report_runs(store, o);
  REQUIRE(runs.size() == 3);
  Table t = gui::report_replay_table(runs);
  CHECK(t.header == std::vector<std::string>{"run", "model", "method", "policy", "workload", "slice",
                                             "greedy_match_ratio", "passkey_accuracy"});
  REQUIRE(t.rows.size() == 2);
  CHECK(t.rows[0][0].integer == rp);
  CHECK(t.rows[0][5].text == "(all)");
  CHECK(t.rows[0][6].real == 0.75);
  CHECK(t.rows[0][7].kind == Cell::Kind::Empty);
  CHECK(t.rows[1][5].text == "passkey_len256");
  CHECK(t.rows[1][7].real == 1.0);
  gui::ReportPlan p = gui::plan_report(runs, o);
  CHECK_THAT(p.markdown, Contains("## Replay") && Contains("| passkey_len256 |"));

  o.tag = "study";
  auto tagged = gui::load_report_runs(store, o);
  REQUIRE(tagged.size() == 1);
  CHECK(tagged[0].id == q);
  o.tag = "";
  o.model = "no-such-model";
  CHECK_THROWS_WITH(gui::load_report_runs(store, o), Contains("no finished runs match --model no-such-model"));
  o.model = "";
  o.run = 99;
  CHECK_THROWS_WITH(gui::load_report_runs(store, o), Contains("--run 99: there is no run 99"));
  o.run = rp;
  CHECK_THROWS_WITH(gui::load_report_runs(store, o), Contains("a replay run has no per-head metrics"));
  // Only replay runs: the replay section alone. This run stored no KL: its slices are listed as
  // not on the plot, and the table still has them.
  o.run.reset();
  std::vector<ReportRun> only_replay;
  for (auto& r : runs)
    if (r.kind == "replay") only_replay.push_back(r);
  gui::ReportPlan pr = gui::plan_report(only_replay, o);
  CHECK(pr.chosen == -1);
  CHECK(pr.groups.empty());
  REQUIRE(pr.figures.size() == 2);  // slices "" and passkey_len256
  CHECK(pr.figures[0].plot.series.empty());
  CHECK_THAT(pr.markdown, Contains(": 1 replay run.") && !Contains("Distortion metric") && !Contains("## Rate-distortion") &&
                              Contains("Not on the plot (KL 0") && Contains("| passkey_len256 |"));
}

namespace {

ReportRun replay_run(int64_t id, const std::string& policy, const std::string& method, const std::string& model,
                     std::vector<ReportReplayMetric> metrics) {
  ReportRun r;
  r.id = id;
  r.kind = "replay";
  r.workload = "text:a.txt";
  r.report.policy_name = policy;
  r.report.method = method;
  r.report.model_id = model;
  r.replay = std::move(metrics);
  return r;
}

}  // namespace

TEST_CASE("report: replay runs by model and slice, KL against bits per KV entry", "[report]") {
  // Two models; m1 has runs of two families at two rates plus fp16 (KL 0); one kivi run stored a
  // second slice. Bits and KL are set by hand: the front is every point not beaten by a cheaper one.
  std::vector<ReportRun> runs = {
      replay_run(1, "fp16", "fp16", "m1", {{"s", "avg_bits_per_kv_token", 16}, {"s", "next_token_kl", 0}}),
      replay_run(2, "uniform-4", "uniform", "m1", {{"s", "avg_bits_per_kv_token", 5}, {"s", "next_token_kl", 0.001}}),
      replay_run(3, "uniform-2", "uniform", "m1", {{"s", "avg_bits_per_kv_token", 3}, {"s", "next_token_kl", 0.05}}),
      replay_run(4, "kivi-2", "kivi", "m1",
                 {{"s", "avg_bits_per_kv_token", 3.5}, {"s", "next_token_kl", 0.004}, {"t", "next_token_kl", 0.2}}),
      replay_run(5, "kivi-2", "kivi", "m2", {{"s", "avg_bits_per_kv_token", 3.5}, {"s", "next_token_kl", 0.01}}),
  };
  runs.push_back(runs[1]);
  runs.back().kind = "quantize";  // quantize runs belong to no replay group
  auto groups = group_replays(runs);
  REQUIRE(groups.size() == 3);
  CHECK(groups[0].model == "m1");
  CHECK(groups[0].slice == "s");
  CHECK(groups[0].workload == "text:a.txt");
  CHECK(groups[0].runs == std::vector<int>{2, 3, 1, 0});  // by bits: 3, 3.5, 5, 16
  CHECK(groups[1].model == "m1");  // one run each: first appearance order
  CHECK(groups[1].slice == "t");
  CHECK(groups[1].runs == std::vector<int>{3});
  CHECK(groups[2].model == "m2");
  CHECK(std::isnan(replay_value(runs[3], "t", "avg_bits_per_kv_token")));
  CHECK(replay_value(runs[3], "t", "next_token_kl") == 0.2);

  PlotData d = replay_curves(runs, groups[0]);
  REQUIRE(d.series.size() == 2);  // fp16 (KL 0) is left out
  CHECK(d.series[0].name == "kivi");
  CHECK(d.series[0].x == std::vector<double>{3.5});
  CHECK(d.series[1].name == "uniform");
  CHECK(d.series[1].x == std::vector<double>{3, 5});
  CHECK(d.series[1].y == std::vector<double>{0.05, 0.001});
  CHECK(d.series[1].ids == std::vector<int64_t>{3, 2});
  CHECK(d.x_scale == ScaleKind::Log);
  CHECK(d.lower_y_is_better);
  // Front: uniform-2 (3 b, 0.05), kivi-2 (3.5 b, 0.004), uniform-4 (5 b, 0.001).
  auto front = pareto_front(all_points(d), true);
  REQUIRE(front.size() == 3);
  CHECK(front[0].x == 3);
  CHECK(front[1].x == 3.5);
  CHECK(front[2].x == 5);
  // The replay table leads with the columns compared first, then the rest in order of appearance.
  std::vector<ReportRun> order_runs = {replay_run(7, "kivi-2", "kivi", "m1",
                                                  {{"s", "steps", 8}, {"s", "passkey_accuracy", 1},
                                                   {"s", "next_token_kl", 0.1}, {"s", "avg_bits_per_kv_token", 3}})};
  CHECK(gui::report_replay_table(order_runs).header ==
        std::vector<std::string>{"run", "model", "method", "policy", "workload", "slice", "avg_bits_per_kv_token",
                                 "next_token_kl", "steps", "passkey_accuracy"});
  // Slice t has no bits: nothing to plot.
  CHECK(replay_curves(runs, groups[1]).series.empty());

  gui::ReportOptions o;
  o.db = "runs.sqlite";
  gui::ReportPlan p = gui::plan_report(runs, o);
  // The quantize run (a copy of uniform-4) has a dump group; three replay figures follow its.
  int replay_figures = 0;
  for (const auto& f : p.figures) replay_figures += f.file.rfind("replay-", 0) == 0;
  CHECK(replay_figures == 3);
  CHECK_THAT(p.markdown, Contains("### m1 · `text:a.txt` · s (4 runs)") &&
                             Contains("Pareto front of next-token KL: `uniform-2` (3 b, 0.05), `kivi-2` (3.5 b, 0.004), "
                                      "`uniform-4` (5 b, 0.001).") &&
                             Contains("Not on the plot (KL 0: decodes exactly as the fp16 cache, e.g. fp16, or KIVI "
                                      "while the prompt fits its fp16 window; or not measured): `fp16`.") &&
                             Contains(": 1 quantize run on 1 dump, 5 replay runs."));
}
