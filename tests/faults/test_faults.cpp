// Fault injection: disk full, read-only output folder, a file truncated while another process has
// it mapped, a missing shard, SIGINT/SIGTERM mid-write. Each must end in one clear message and
// leave no output that looks complete. Faults that would hurt the test process itself (file size
// limits, dropped privileges, signals) run in a fork()ed child; the parent checks the aftermath.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include "core/dump/kv_dump.h"
#include "core/model/checkpoint.h"
#include "core/tensor/safetensors.h"
#include "core/util/error.h"
#include "core/util/interrupt.h"
#include "storage/run_store.h"
#include "tests/test_util.h"

using namespace kvscope;
namespace fs = std::filesystem;

namespace {

struct ChildResult {
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;
  std::string err;     // everything the child wrote to stderr
};

// Runs `body` in a child process; its return value is the exit code. stderr is captured.
ChildResult in_child(const std::function<int()>& body) {
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    dup2(fds[1], STDERR_FILENO);
    int code = 99;
    try {
      code = body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "uncaught: %s\n", e.what());
    }
    std::fflush(stderr);
    _exit(code);
  }
  close(fds[1]);
  ChildResult r;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0) r.err.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  return r;
}

// The child prints the Error message and exits 0 when `f` throws kvscope::Error, 1 when it does not.
int expect_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 0;
  }
  return 1;
}

KvDump make_dump(int layers, int kv_heads, int tokens, int head_dim) {
  KvDump d;
  d.shape = {layers, kv_heads, 0, head_dim, tokens};
  d.meta.model_id = "faults/test";
  d.layers.resize(layers);
  float x = 0.5f;
  for (auto& l : d.layers)
    for (auto* t : {&l.k, &l.v}) {
      t->resize(static_cast<size_t>(kv_heads) * tokens * head_dim);
      for (auto& v : *t) v = (x = x * -0.97f + 0.25f);
    }
  return d;
}

std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

QuantizeReport make_report(int layers, int heads) {
  QuantizeReport r;
  r.method = "uniform";
  r.policy_name = "uniform-4";
  r.policy_json = R"({"method":"uniform","name":"uniform-4"})";
  r.dump_path = "/nonexistent/dump.safetensors";
  r.shape = {layers, heads, heads, 64, 128};
  r.model_id = "faults/test";
  for (int l = 0; l < layers; ++l)
    for (int h = 0; h < heads; ++h)
      for (char kind : {'k', 'v'}) {
        HeadMetrics m;
        m.layer = l;
        m.head = h;
        m.kind = kind;
        m.nmse = 0.001 * (l + 1) + h * 1e-6;
        m.bits = 4096;
        m.elements = 1024;
        r.per_head.push_back(m);
      }
  return r;
}

// Drops root's override of file permissions (as root, chmod 0555 would not stop a write).
void become_unprivileged() {
  if (geteuid() != 0) return;
  const passwd* nobody = getpwnam("nobody");
  const uid_t uid = nobody ? nobody->pw_uid : 65534;
  const gid_t gid = nobody ? nobody->pw_gid : 65534;
  if (setgid(gid) != 0 || setuid(uid) != 0) _exit(98);
}

}  // namespace

TEST_CASE("disk full while writing a dump: clear error, no output, old file kept", "[faults]") {
  TempDir tmp;
  const std::string path = tmp.path("dump.safetensors");
  save_dump(path, make_dump(1, 1, 4, 8));  // an older complete dump at the same path
  const auto before = fs::file_size(path);
  ChildResult r = in_child([&] {
    signal(SIGXFSZ, SIG_IGN);  // write() then fails with EFBIG, as on a full disk (ENOSPC)
    rlimit lim{64 << 10, 64 << 10};
    setrlimit(RLIMIT_FSIZE, &lim);
    return expect_error([&] { save_dump(path, make_dump(4, 4, 256, 64), DType::F32); });  // 1 MiB
  });
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.err, Catch::Contains(path) && Catch::Contains("write failed"));
  CHECK(files_in(tmp.dir.string()) == std::vector<std::string>{"dump.safetensors"});  // no temp file left
  CHECK(fs::file_size(path) == before);
  CHECK(load_dump(path).shape.tokens == 4);  // still the old, complete dump
}

TEST_CASE("disk full while storing a run: clear error, earlier runs intact, no partial run", "[faults]") {
  TempDir tmp;
  const std::string db = tmp.path("runs.sqlite");
  { RunStore(db).add_quantize_run(make_report(1, 1), {}); }
  ChildResult r = in_child([&] {
    signal(SIGXFSZ, SIG_IGN);
    return expect_error([&] {
      RunStore store(db);
      // Room for a little more than the file holds now, not for 64k per-head rows.
      const rlim_t cap = static_cast<rlim_t>(fs::file_size(db)) + (32 << 10);
      rlimit lim{cap, cap};
      setrlimit(RLIMIT_FSIZE, &lim);
      store.add_quantize_run(make_report(256, 128), {});
    });
  });
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.err, Catch::Contains(db));
  RunStore store(db);
  CHECK(store.integrity_check() == "ok");
  auto runs = store.list_runs();
  REQUIRE(runs.size() == 1);
  CHECK(store.load_run(runs[0].id).report.per_head.size() == 2);
}

TEST_CASE("read-only output folder: clear error naming the file, nothing written", "[faults]") {
  TempDir tmp;
  const std::string dir = tmp.path("ro");
  fs::create_directories(dir);
  fs::permissions(dir, fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read |
                           fs::perms::group_exec | fs::perms::others_read | fs::perms::others_exec);
  fs::permissions(tmp.dir, fs::perms::others_exec | fs::perms::others_read, fs::perm_options::add);
  ChildResult dump = in_child([&] {
    become_unprivileged();
    return expect_error([&] { save_dump(dir + "/d.safetensors", make_dump(1, 1, 4, 8)); });
  });
  INFO(dump.err);
  CHECK(dump.exit_code == 0);
  CHECK_THAT(dump.err, Catch::Contains(dir + "/d.safetensors") && Catch::Contains("cannot create"));
  ChildResult db = in_child([&] {
    become_unprivileged();
    return expect_error([&] { RunStore(dir + "/runs.sqlite").add_quantize_run(make_report(1, 1), {}); });
  });
  INFO(db.err);
  CHECK(db.exit_code == 0);
  CHECK_THAT(db.err, Catch::Contains(dir + "/runs.sqlite"));
  CHECK(files_in(dir).empty());
}

TEST_CASE("a dump truncated by another process while mapped: Error, not SIGBUS", "[faults]") {
  TempDir tmp;
  const std::string path = tmp.path("dump.safetensors");
  save_dump(path, make_dump(2, 2, 512, 64), DType::F32);  // ~1 MiB: spans many pages
  auto f = SafetensorsFile::open(path);
  const TensorInfo& last = f->get("layers.1.v");
  // Another process cuts the file to one page while we hold the mapping.
  ChildResult cut = in_child([&] { return truncate(path.c_str(), 4096) == 0 ? 0 : 1; });
  REQUIRE(cut.exit_code == 0);
  CHECK_THROWS_WITH(f->read_f32("layers.1.v"), Catch::Contains(path) && Catch::Contains("shrank to 4096 bytes"));
  std::vector<float> dst(static_cast<size_t>(last.numel()));
  CHECK_THROWS_WITH(f->read_f32_into(last, dst.data()), Catch::Contains("truncated by another process"));
  CHECK_THROWS_WITH(load_dump(path), Catch::Contains(path));  // reopened: an ordinary truncated file

  // The race the size check cannot close (truncation between check and copy) is caught by the
  // SIGBUS guard: touch a mapped page past the new end directly.
  const std::string raw = tmp.path("raw.bin");
  { std::ofstream(raw, std::ios::binary) << std::string(3 * 4096, 'x'); }
  int fd = open(raw.c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  void* m = mmap(nullptr, 3 * 4096, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  REQUIRE(m != MAP_FAILED);
  REQUIRE(truncate(raw.c_str(), 100) == 0);
  char byte = 0;
  const auto* p = static_cast<const volatile char*>(m);
  CHECK(run_sigbus_guarded([&] { byte = p[0]; }));  // inside the file: fine
  CHECK(byte == 'x');
  CHECK_FALSE(run_sigbus_guarded([&] { byte = p[2 * 4096]; }));  // past the end: SIGBUS, caught
  CHECK(run_sigbus_guarded([&] { byte = p[1]; }));  // and the guard still works afterwards
  munmap(m, 3 * 4096);
}

TEST_CASE("a model folder with a missing shard: Error naming the shard and the index", "[faults]") {
  TempDir tmp;
  const std::vector<float> w(16, 1.0f);
  write_safetensors(tmp.path("model-00001-of-00002.safetensors"), {{"a.weight", DType::F32, {4, 4}, w.data()}});
  std::ofstream(tmp.path("model.safetensors.index.json"))
      << R"({"weight_map": {"a.weight": "model-00001-of-00002.safetensors",
                            "b.weight": "model-00002-of-00002.safetensors"}})";
  CHECK_THROWS_WITH(Checkpoint::open(tmp.dir.string()),
                    Catch::Contains("model-00002-of-00002.safetensors") && Catch::Contains("missing shard") &&
                        Catch::Contains("model.safetensors.index.json"));
}

TEST_CASE("SIGTERM and SIGINT mid-write: one clear line, exit 128+sig, temporary file removed", "[faults]") {
  TempDir tmp;
  for (int sig : {SIGTERM, SIGINT}) {
    const std::string tmp_file = tmp.path("out.safetensors.tmp-1234");
    ChildResult r = in_child([&] {
      install_interrupt_handlers();
      TempFileGuard guard(tmp_file);
      std::ofstream(tmp_file) << "half of a dump";
      kill(getpid(), sig);  // arrives while the write is in progress
      return 0;             // not reached
    });
    INFO(r.err);
    CHECK(r.exit_code == 128 + sig);
    CHECK_THAT(r.err, Catch::Contains(sig == SIGTERM ? "interrupted by SIGTERM" : "interrupted by SIGINT") &&
                          Catch::Contains("no output written"));
    CHECK_FALSE(fs::exists(tmp_file));
  }
  // A finished write is not touched by a later signal.
  const std::string done = tmp.path("done.safetensors");
  ChildResult r = in_child([&] {
    install_interrupt_handlers();
    save_dump(done, make_dump(1, 1, 4, 8));
    kill(getpid(), SIGTERM);
    return 0;
  });
  CHECK(r.exit_code == 128 + SIGTERM);
  CHECK(load_dump(done).shape.tokens == 4);
  CHECK(files_in(tmp.dir.string()) == std::vector<std::string>{"done.safetensors"});
}
