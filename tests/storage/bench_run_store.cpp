// Timings for the note, not part of the normal suite (hidden tag):
//   build/tests/test_storage "[.bench]" -s
// Prints the time to store one run with full per-head metrics (24 layers x 2 KV heads x {k, v}),
// against a naive store that commits every row on its own, and the time to list 10,000 runs,
// against a bare scan of the run ids (the floor any listing pays).
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Statement.h>

#include "storage/run_store.h"
#include "test_util.h"
#include "tests/storage/store_fixtures.h"

using namespace kvscope;

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

TEST_CASE("bench: store one run, list 10000 runs", "[.bench]") {
  TempDir tmp;
  const QuantizeReport report = test::make_report(24, 2, 0);
  {
    RunStore store(tmp.path("store.sqlite"));
    std::vector<double> t;
    for (int i = 0; i < 40; ++i) {
      const auto t0 = Clock::now();
      store.add_quantize_run(report, {});
      t.push_back(ms_since(t0));
    }
    // Naive reference: the same rows, each INSERT its own autocommit transaction (one fsync each).
    SQLite::Database raw(tmp.path("store.sqlite"), SQLite::OPEN_READWRITE);
    raw.exec("PRAGMA synchronous = FULL");
    std::vector<double> naive;
    for (int i = 0; i < 5; ++i) {
      const auto t0 = Clock::now();
      raw.exec("INSERT INTO runs(created_at, kvscope_version, kind, status, method, uuid) VALUES"
               " ('x', 'x', 'quantize', 'done', 'naive', lower(hex(randomblob(16))))");
      const int64_t id = raw.getLastInsertRowid();
      SQLite::Statement h(raw, "INSERT INTO head_metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
      for (const HeadMetrics& m : report.per_head) {
        h.bind(1, id), h.bind(2, m.layer), h.bind(3, m.head), h.bind(4, std::string(1, m.kind));
        h.bind(5, m.nmse), h.bind(6, m.cos), h.bind(7, m.mse), h.bind(8, m.max_abs);
        h.bind(9, int64_t(m.bits)), h.bind(10, int64_t(m.elements)), h.bind(11, 0);
        h.exec();
        h.reset();
      }
      naive.push_back(ms_since(t0));
    }
    std::printf("store one run (%zu head rows + %zu attention rows), median of %zu: %.2f ms; "
                "naive row-by-row commits: %.2f ms (%.1fx slower)\n",
                report.per_head.size(), report.attention.size(), t.size(), median(t), median(naive),
                median(naive) / median(t));
  }
  {
    const std::string path = tmp.path("big.sqlite");
    RunStore store(path);
    const auto t0 = Clock::now();
    store.in_transaction([&] {
      for (int i = 0; i < 10000; ++i) {
        RunContext ctx;
        if (i % 10 == 0) ctx.tags = {"every10"};
        store.add_quantize_run(test::make_report(24, 2, i, i % 2 ? "kivi" : "uniform"), ctx);
      }
    });
    std::printf("fill 10000 runs in one transaction: %.0f ms\n", ms_since(t0));
    std::vector<double> list, scan, filtered;
    size_t n = 0;
    for (int i = 0; i < 5; ++i) {
      auto t1 = Clock::now();
      n = store.list_runs().size();
      list.push_back(ms_since(t1));
      t1 = Clock::now();
      store.list_runs({.tag = "every10"});
      filtered.push_back(ms_since(t1));
      SQLite::Database raw(path, SQLite::OPEN_READONLY);
      t1 = Clock::now();
      SQLite::Statement q(raw, "SELECT id FROM runs ORDER BY id DESC");
      while (q.executeStep()) {
      }
      scan.push_back(ms_since(t1));
    }
    REQUIRE(n == 10000);
    // What a user waits for: process start, open, list, format as text.
    const std::string cmd = "'" KVSCOPE_BIN "' runs list --db '" + path + "' > /dev/null";
    const std::string start_only = "'" KVSCOPE_BIN "' --version > /dev/null";
    std::vector<double> cli, start;
    for (int i = 0; i < 3; ++i) {
      auto t1 = Clock::now();
      REQUIRE(std::system(cmd.c_str()) == 0);
      cli.push_back(ms_since(t1));
      t1 = Clock::now();
      REQUIRE(std::system(start_only.c_str()) == 0);
      start.push_back(ms_since(t1));
    }
    std::printf("kvscope runs list (10000 runs, text output): %.0f ms, of which process start (kvscope --version): %.0f ms\n",
                median(cli), median(start));
    std::printf("list %zu runs: %.1f ms (bare id scan %.2f ms, %.0fx); with --tag filter (1000 hits): %.1f ms\n", n,
                median(list), median(scan), median(list) / median(scan), median(filtered));
  }
}
