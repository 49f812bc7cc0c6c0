// The run store across processes: a writer killed with SIGKILL mid-stream, and a reader working
// while another process writes. Both use fork() so the processes are real and independent.
#include <catch2/catch.hpp>

#include <csignal>
#include <random>
#include <set>
#include <thread>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Statement.h>

#include "core/util/error.h"
#include "storage/run_store.h"
#include "test_util.h"
#include "tests/storage/store_fixtures.h"

using namespace kvscope;

namespace {

constexpr int kLayers = 24, kHeads = 2;
constexpr int64_t kHeadRows = kLayers * kHeads * 2, kAttnRows = kLayers * kHeads;

// Runs `body` in a child process that never returns into Catch; exit code 0 = body returned.
pid_t spawn(const std::function<void()>& body) {
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int code = 0;
    try {
      body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child: %s\n", e.what());
      code = 1;
    }
    _exit(code);
  }
  return pid;
}

// Owns a child process: kills (SIGKILL) and reaps it when the test leaves the scope by any path,
// so a failed check never leaves a writer storing runs forever. release() once it was reaped.
class ChildGuard {
 public:
  explicit ChildGuard(pid_t pid) : pid_(pid) {}
  ~ChildGuard() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  ChildGuard(const ChildGuard&) = delete;
  ChildGuard& operator=(const ChildGuard&) = delete;
  pid_t pid() const { return pid_; }
  void release() { pid_ = -1; }

 private:
  pid_t pid_;
};

// Every run in the file, each with the counts of its rows.
struct RunRows {
  std::string status;
  int64_t heads = 0, attention = 0, summaries = 0, tags = 0;
};
std::map<int64_t, RunRows> all_runs(const std::string& path) {
  SQLite::Database db(path, SQLite::OPEN_READONLY);
  SQLite::Statement q(db,
                      "SELECT r.id, r.status,"
                      " (SELECT count(*) FROM head_metrics h WHERE h.run_id = r.id),"
                      " (SELECT count(*) FROM attention_metrics a WHERE a.run_id = r.id),"
                      " (SELECT count(*) FROM run_summaries s WHERE s.run_id = r.id),"
                      " (SELECT count(*) FROM run_tags t WHERE t.run_id = r.id) FROM runs r");
  std::map<int64_t, RunRows> out;
  while (q.executeStep()) {
    out[q.getColumn(0).getInt64()] = {q.getColumn(1).getString(), q.getColumn(2).getInt64(),
                                      q.getColumn(3).getInt64(), q.getColumn(4).getInt64(), q.getColumn(5).getInt64()};
  }
  return out;
}

}  // namespace

TEST_CASE("kill -9 while storing runs leaves only whole, committed runs", "[storage][process]") {
  TempDir tmp;
  const std::string path = tmp.path("runs.sqlite");
  { RunStore create(path); }
  std::set<int64_t> committed;  // ids the child reported after add_quantize_run returned
  std::mt19937 rng(12345);
  for (int round = 0; round < 5; ++round) {
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    ChildGuard guard(spawn([&] {
      close(fds[0]);
      RunStore store(path);
      for (int i = 0;; ++i) {
        RunContext ctx;
        ctx.tags = {"round" + std::to_string(round), "seq" + std::to_string(i)};
        const int64_t id = store.add_quantize_run(test::make_report(kLayers, kHeads, i), ctx);
        if (write(fds[1], &id, sizeof id) != sizeof id) _exit(3);
      }
    }));
    const pid_t child = guard.pid();
    close(fds[1]);
    int64_t id = 0;
    int reported = 0;
    while (reported < 8 && read(fds[0], &id, sizeof id) == sizeof id) {
      committed.insert(id);
      ++reported;
    }
    REQUIRE(reported == 8);
    // Land the kill at an arbitrary point of a later run: inside a transaction most of the time.
    std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(0, 4000)(rng)));
    REQUIRE(kill(child, SIGKILL) == 0);
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    guard.release();
    REQUIRE(WIFSIGNALED(status));
    REQUIRE(WTERMSIG(status) == SIGKILL);
    while (read(fds[0], &id, sizeof id) == sizeof id) committed.insert(id);  // reported before the kill
    close(fds[0]);
  }

  RunStore store(path);  // recovers the WAL of the killed writer
  CHECK(store.integrity_check() == "ok");
  const auto runs = all_runs(path);
  for (int64_t id : committed) {
    INFO("run " << id);
    REQUIRE(runs.count(id) == 1);
  }
  CHECK(runs.size() >= committed.size());  // a run may commit just before the kill, unreported
  for (const auto& [id, rows] : runs) {
    INFO("run " << id);
    CHECK(rows.status == "done");
    CHECK(rows.heads == kHeadRows);
    CHECK(rows.attention == kAttnRows);
    CHECK(rows.summaries == 1);
    CHECK(rows.tags == 2);
  }
  CHECK(store.list_runs({.status = "done"}).size() == runs.size());
  CHECK(store.load_run(*committed.begin()).report.per_head.size() == size_t(kHeadRows));
}

TEST_CASE("a reader and a writer in two processes never see 'database is locked'", "[storage][process]") {
  TempDir tmp;
  const std::string path = tmp.path("shared.sqlite");  // not created yet: both processes race to create it
  int stop[2];
  REQUIRE(pipe(stop) == 0);
  // The writer stores runs until the reader has seen enough of them arrive.
  ChildGuard guard(spawn([&] {
    close(stop[1]);
    fcntl(stop[0], F_SETFL, O_NONBLOCK);
    RunStore store(path);
    char c;
    for (int i = 0; read(stop[0], &c, 1) != 1; ++i) store.add_quantize_run(test::make_report(kLayers, kHeads, i), {});
  }));
  const pid_t writer = guard.pid();
  close(stop[0]);

  RunStore reader(path);  // what the GUI does
  int reads = 0, growths = 0;
  size_t seen = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  // Every read must succeed (an Error would fail the test) and see only whole runs.
  while (growths < 20 || reads < 100) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    int early = 0;  // a writer that died (e.g. an error opening the store) ends the test with its status
    if (waitpid(writer, &early, WNOHANG) == writer) {
      guard.release();  // already reaped
      FAIL("the writer exited early, status " << early);
    }
    const auto listing = reader.list_runs();
    ++reads;
    REQUIRE(listing.size() >= seen);  // runs never disappear
    growths += listing.size() > seen;
    seen = listing.size();
    for (const auto& l : listing) REQUIRE(l.status == "done");
    if (!listing.empty()) {
      // The newest run is complete the moment it is visible.
      const StoredRun run = reader.load_run(listing.front().id);
      REQUIRE(run.report.per_head.size() == size_t(kHeadRows));
      REQUIRE(run.report.attention.size() == size_t(kAttnRows));
    }
  }
  REQUIRE(write(stop[1], "x", 1) == 1);
  close(stop[1]);
  int status = 0;
  REQUIRE(waitpid(writer, &status, 0) == writer);
  guard.release();
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);  // the writer never failed either
  const size_t total = reader.list_runs().size();
  CHECK(total >= seen);
  for (const auto& [id, rows] : all_runs(path)) {
    INFO("run " << id);
    CHECK(rows.heads == kHeadRows);
  }
  INFO("reads: " << reads << ", runs stored: " << total);
  CHECK(growths >= 20);
}
