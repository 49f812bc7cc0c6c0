// Export formats against hand-written expected text, and the tables built from runs.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>

#include <nlohmann/json.hpp>

#include "core/util/error.h"
#include "storage/export.h"

using namespace kvscope;

namespace {

const double kNaN = std::numeric_limits<double>::quiet_NaN();

// Text that every format must escape: separators, quotes, newlines, TeX specials, a pipe.
Table awkward_table() {
  Table t{"demo", {"name", "value_x", "n", "d"}, {}};
  t.rows.push_back({Cell::str("a,b"), Cell::number(0.5), Cell::whole(3), Cell::delta(0.125)});
  t.rows.push_back({Cell::str("say \"hi\"\nbye"), Cell::number(-1.25e-05), Cell::whole(-2), Cell::delta(-0.5)});
  t.rows.push_back({Cell::str("50% & #1_x|y"), Cell::empty(), Cell::whole(0), Cell::delta(kNaN)});
  return t;
}

HeadMetrics head(int layer, int h, char kind, double mse, double nmse, uint64_t bits, double max_abs) {
  HeadMetrics m;
  m.layer = layer;
  m.head = h;
  m.kind = kind;
  m.mse = mse;
  m.nmse = nmse;
  m.cos = 1 - nmse / 2;
  m.bits = bits;
  m.elements = 100;
  m.max_abs = max_abs;
  return m;
}

AttentionMetrics attention(int layer, int h, double cos_mean, double cos_min, double kl) {
  AttentionMetrics a;
  a.layer = layer;
  a.head = h;
  a.out_cos_mean = cos_mean;
  a.out_cos_min = cos_min;
  a.kl_mean = kl;
  return a;
}

// One layer, two KV heads, numbers chosen so the layer aggregates are easy to work out by hand.
StoredRun two_head_run() {
  StoredRun run;
  run.id = 1;
  run.report.method = "uniform";
  run.report.per_head = {head(0, 0, 'k', 0.5, 0.25, 300, 2), head(0, 0, 'v', 0.1, 0.1, 500, 1),
                         head(0, 1, 'k', 0.1, 0.1, 100, 0.5), head(0, 1, 'v', 0.3, 0.3, 300, 3)};
  run.report.per_head[2].full_precision = true;
  run.report.attention = {attention(0, 0, 0.99, 0.9, 0.01), attention(0, 1, 0.97, 0.8, 0.03)};
  run.report.attn_queries = 8;
  return run;
}

}  // namespace

TEST_CASE("CSV follows RFC 4180", "[storage][export]") {
  CHECK(to_csv(awkward_table()) ==
        "name,value_x,n,d\r\n"
        "\"a,b\",0.5,3,0.125\r\n"
        "\"say \"\"hi\"\"\nbye\",-1.25e-05,-2,-0.5\r\n"
        "50% & #1_x|y,,0,\r\n");
}

TEST_CASE("Markdown is a GitHub table with numbers right-aligned", "[storage][export]") {
  CHECK(to_markdown(awkward_table()) ==
        "| name | value_x | n | d |\n"
        "| --- | ---: | ---: | ---: |\n"
        "| a,b | 0.5 | 3 | +0.125 |\n"
        "| say \"hi\"<br>bye | -1.25e-05 | -2 | -0.5 |\n"
        "| 50% & #1_x\\|y |  | 0 | n/a |\n");
}

TEST_CASE("LaTeX uses booktabs and escapes TeX specials", "[storage][export]") {
  CHECK(to_latex(awkward_table()) ==
        "% kvscope demo table; needs \\usepackage{booktabs}\n"
        "\\begin{tabular}{lrrr}\n"
        "\\toprule\n"
        "name & value\\_x & n & d \\\\\n"
        "\\midrule\n"
        "a,b & 0.5 & 3 & +0.125 \\\\\n"
        "say \"hi\" bye & $-$1.25e-05 & $-$2 & $-$0.5 \\\\\n"
        "50\\% \\& \\#1\\_x\\textbar{}y &  & 0 & n/a \\\\\n"
        "\\bottomrule\n"
        "\\end{tabular}\n");
}

TEST_CASE("JSON has typed cells and null for missing values", "[storage][export]") {
  const auto got = nlohmann::json::parse(to_json(awkward_table()));
  const auto want = nlohmann::json::parse(R"({
    "table": "demo",
    "columns": ["name", "value_x", "n", "d"],
    "rows": [
      {"name": "a,b", "value_x": 0.5, "n": 3, "d": 0.125},
      {"name": "say \"hi\"\nbye", "value_x": -1.25e-05, "n": -2, "d": -0.5},
      {"name": "50% & #1_x|y", "value_x": null, "n": 0, "d": null}
    ]})");
  CHECK(got == want);
  CHECK(nlohmann::ordered_json::parse(to_json(awkward_table()))["rows"][0].begin().key() == "name");  // column order kept
}

TEST_CASE("terminal text aligns columns", "[storage][export]") {
  Table t{"t", {"id", "method"}, {{Cell::whole(7), Cell::str("kivi")}, {Cell::whole(12), Cell::str("uniform")}}};
  CHECK(to_text(t) ==
        "id  method\n"
        "--  -------\n"
        " 7  kivi\n"
        "12  uniform\n");
}

TEST_CASE("per-layer rows sum errors and energies over heads", "[storage][export]") {
  // K: err = 0.5*100 + 0.1*100 = 60, energy = 50/0.25 + 10/0.1 = 300 -> NMSE 0.2, MSE 60/200 = 0.3,
  //    bits (300 + 100) / 200 = 2.  V: err 10 + 30 = 40, energy 100 + 100 -> NMSE 0.2, MSE 0.2, 4 bits.
  // Attention: mean of head means (0.99 + 0.97) / 2, min of mins, mean KL (0.01 + 0.03) / 2.
  CHECK(to_markdown(per_layer_table({two_head_run()})) ==
        "| run | layer | k_bits_per_element | v_bits_per_element | k_nmse | v_nmse | k_mse | v_mse | k_max_abs | "
        "v_max_abs | fp16_heads | attn_cos_mean | attn_cos_min | attn_kl_mean |\n"
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
        "| 1 | 0 | 2 | 4 | 0.2 | 0.2 | 0.3 | 0.2 | 2 | 3 | 1 | 0.98 | 0.8 | 0.02 |\n");
}

TEST_CASE("per-head rows put K, V and attention of one head side by side", "[storage][export]") {
  CHECK(to_csv(per_head_table({two_head_run()})) ==
        "run,layer,head,k_bits_per_element,v_bits_per_element,k_nmse,v_nmse,k_cos,v_cos,k_max_abs,v_max_abs,"
        "k_fp16,v_fp16,attn_cos_mean,attn_cos_min,attn_nmse,attn_kl_mean\r\n"
        "1,0,0,3,5,0.25,0.1,0.875,0.95,2,1,no,no,0.99,0.9,0,0.01\r\n"
        "1,0,1,1,3,0.1,0.3,0.95,0.85,0.5,3,yes,no,0.97,0.8,0,0.03\r\n");
}

TEST_CASE("compare puts runs side by side with deltas against the first", "[storage][export]") {
  StoredRun a, b;
  a.id = 3;
  a.report.method = "uniform";
  a.report.bits_per_element = 4.25;
  a.report.k_nmse = 0.01;
  b.id = 9;
  b.report.method = "kivi";
  b.report.bits_per_element = 2.5;
  b.report.k_nmse = 0.04;
  b.report.attn_queries = 16;  // a has no attention metrics: n/a, and so is the delta
  b.report.attn_cos_mean = 0.98;
  const std::string csv = to_csv(compare_table({a, b}));
  CHECK(csv.rfind("metric,run_3,run_9,delta_9\r\n", 0) == 0);
  CHECK(csv.find("\r\nmethod,uniform,kivi,\r\n") != std::string::npos);
  CHECK(csv.find("\r\nbits_per_element,4.25,2.5,-1.75\r\n") != std::string::npos);
  CHECK(csv.find("\r\nk_nmse,0.01,0.04,0.03\r\n") != std::string::npos);
  CHECK(csv.find("\r\nattn_cos_mean,,0.98,\r\n") != std::string::npos);
  b.replay_metrics = {{"", "greedy_match_ratio", 0.75}};
  CHECK(to_csv(compare_table({a, b})).find("\r\ngreedy_match_ratio,,0.75,\r\n") != std::string::npos);
  const std::string md = to_markdown(compare_table({a, b}));
  CHECK(md.find("| bits_per_element | 4.25 | 2.5 | -1.75 |") != std::string::npos);
  CHECK(md.find("| k_nmse | 0.01 | 0.04 | +0.03 |") != std::string::npos);
}

TEST_CASE("summary has one row per run and the compression ratio", "[storage][export]") {
  StoredRun run = two_head_run();
  run.report.model_id = std::string("tiny-model");
  run.report.bytes_per_token = 1024;
  run.report.fp16_bytes_per_token = 4096;
  run.tags = {"a", "b"};
  const Table t = summary_table({run, run});
  REQUIRE(t.rows.size() == 2);
  const auto col = [&](const std::string& name) {
    return size_t(std::find(t.header.begin(), t.header.end(), name) - t.header.begin());
  };
  CHECK(t.rows[0][col("compression")].real == 4.0);
  CHECK(t.rows[0][col("tags")].text == "a b");
  CHECK(t.rows[0][col("model")].text == "tiny-model");
}

TEST_CASE("unknown table and format names are errors listing the choices", "[storage][export]") {
  CHECK_THROWS_WITH(make_table("pivot", {}), Catch::Contains("summary, per-layer, per-head, compare"));
  CHECK_THROWS_WITH(format_table(awkward_table(), "xlsx"), Catch::Contains("csv, md, tex, json"));
}

TEST_CASE("the runs listing shows replay runs' pooled metrics and leaves quantize runs' empty", "[storage][export]") {
  RunListing q, r;
  q.id = 1;
  q.kind = "quantize";
  q.bits_per_element = 4.5;
  q.kv_bits = q.greedy_match = q.next_token_kl = NAN;
  r.id = 2;
  r.kind = "replay";
  r.bits_per_element = NAN;
  r.kv_bits = 5;
  r.greedy_match = 0.8;
  r.next_token_kl = 0.02;
  Table t = listing_table({q, r});
  auto col = [&](const std::string& name) {
    return static_cast<size_t>(std::find(t.header.begin(), t.header.end(), name) - t.header.begin());
  };
  REQUIRE(col("next_token_kl") < t.header.size());
  CHECK(t.rows[0][col("bits_per_element")].real == 4.5);
  CHECK(t.rows[0][col("greedy_match")].kind == Cell::Kind::Empty);
  CHECK(t.rows[1][col("kv_bits")].real == 5);
  CHECK(t.rows[1][col("greedy_match")].real == 0.8);
  CHECK(t.rows[1][col("next_token_kl")].real == 0.02);
  CHECK(t.rows[1][col("bits_per_element")].kind == Cell::Kind::Empty);
}
