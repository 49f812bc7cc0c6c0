// The GUI's run list: session runs without a store, store runs listed and loaded on demand,
// tags/notes, and exports through storage/export.h.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>

#include "app/gui/run_list.h"
#include "core/quant/quantize_dump.h"
#include "core/synth/synth.h"
#include "core/util/error.h"
#include "test_util.h"

using namespace kvscope;
using namespace kvscope::gui;

namespace {
QuantizeReport small_report(const std::string& preset) {
  SynthOptions so;
  so.layers = 2;
  so.tokens = 64;
  so.planted = {{1, 0, 50.0f}};
  static const KvDump dump = make_synthetic_dump(so);
  QuantizeOptions qo;
  qo.attn_queries = 8;
  return quantize_dump(dump, load_preset(preset), qo);
}
}  // namespace

TEST_CASE("without a store, runs live for the session with negative ids") {
  RunList runs;
  QuantizeReport r = small_report("kivi-2");
  int64_t a = runs.add(r, {"mine"}, "first");
  int64_t b = runs.add(small_report("uniform-4"));
  CHECK(a == -1);
  CHECK(b == -2);
  REQUIRE(runs.rows().size() == 2);
  CHECK(runs.rows()[0].policy == "kivi-2");
  CHECK(runs.rows()[0].tag == "mine");
  CHECK(runs.rows()[0].bits_per_element == r.bits_per_element);
  CHECK(method_name(runs.policy(a).method) == "kivi");
  runs.set_tags_and_note(a, "x, y", "changed");
  CHECK(runs.rows()[0].tag == "x,y");
  CHECK(runs.rows()[0].note == "changed");
  std::string csv = runs.export_text({a, b}, "csv", false);
  CHECK(csv.find("kivi-2") != std::string::npos);
  CHECK(csv.find("uniform-4") != std::string::npos);
  CHECK_THROWS_AS(runs.export_text({}, "csv", false), Error);
}

TEST_CASE("with a store, saved runs persist and reopen with their report and policy") {
  TempDir tmp;
  std::string db = tmp.path("runs.sqlite");
  int64_t id = 0;
  QuantizeReport r = small_report("uniform-2");
  {
    RunList runs;
    runs.open_store(db);
    CHECK(runs.rows().empty());
    id = runs.add(r, {"gui"});
    CHECK(id > 0);
    REQUIRE(runs.rows().size() == 1);
  }
  RunList again;
  again.open_store(db);
  REQUIRE(again.rows().size() == 1);
  const views::RunRow& row = again.rows()[0];
  CHECK(row.id == id);
  CHECK(row.policy == "uniform-2");
  CHECK(row.tag == "gui");
  CHECK(row.k_nmse == Approx(r.k_nmse));
  auto rep = again.report(id);
  REQUIRE(rep);
  CHECK(rep->per_head.size() == r.per_head.size());
  CHECK(again.policy(id).k.bits == 2);
  again.set_tags_and_note(id, "paper", "table 2");
  CHECK(again.rows()[0].tag == "paper");
  CHECK(again.rows()[0].note == "table 2");
  std::string md = again.export_text({id}, "md", false);
  CHECK(md.find("| ") != std::string::npos);
  CHECK(again.report(id + 100) == nullptr);
}

TEST_CASE("opening a database that is not one names the file") {
  TempDir tmp;
  std::string bad = tmp.path("not.sqlite");
  std::ofstream(bad) << "this is not a database, just text that is long enough to fill a header page";
  RunList runs;
  try {
    runs.open_store(bad);
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find(bad) != std::string::npos);
  }
  CHECK(!runs.has_store());
}

TEST_CASE("deleting runs: from the store with all their rows, or from the session") {
  TempDir tmp;
  RunList runs;
  int64_t s = runs.add(small_report("kivi-2"));
  runs.remove(s);
  CHECK(runs.rows().empty());
  CHECK_THROWS_AS(runs.remove(s), Error);
  runs.open_store(tmp.path("runs.sqlite"));
  int64_t a = runs.add(small_report("kivi-2"));
  int64_t b = runs.add(small_report("uniform-4"));
  REQUIRE(runs.rows().size() == 2);
  runs.remove(a);
  REQUIRE(runs.rows().size() == 1);
  CHECK(runs.rows()[0].id == b);
  RunStore store(tmp.path("runs.sqlite"));  // a second connection sees the deletion
  auto listed = store.list_runs({});
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].id == b);
  CHECK_THROWS_AS(store.load_run(a), Error);
}
