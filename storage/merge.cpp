#include "storage/merge.h"

#include <filesystem>
#include <optional>
#include <random>

#include <SQLiteCpp/Database.h>

#include "core/util/error.h"
#include "storage/run_store.h"
#include "storage/schema.h"
#include "storage/sql.h"

namespace fs = std::filesystem;

namespace kvscope {
namespace {

bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec;
  return fs::exists(a, ec) && fs::exists(b, ec) && fs::equivalent(a, b, ec);
}

// A temporary file removed when it goes away (with its WAL side files).
struct TempCopy {
  std::string path;
  ~TempCopy() {
    if (path.empty()) return;
    std::error_code ec;
    for (const char* suffix : {"", "-wal", "-shm"}) fs::remove(path + suffix, ec);
  }
};

int source_version(const std::string& src) {
  try {
    SQLite::Database db(src, SQLite::OPEN_READONLY);
    return checked_schema_version(db, src);
  } catch (const SQLite::Exception& e) {
    sql::rethrow(src, e, "");
  }
}

}  // namespace

MergeStats merge_run_stores(const std::vector<std::string>& sources, const std::string& into) {
  if (sources.empty()) throw Error("merge: no source databases given");
  for (const auto& src : sources) {
    if (!fs::is_regular_file(src)) fail(src, "no such database");
    if (src == into || same_file(src, into)) fail(src, "is also the --into database");
  }
  RunStore target(into);
  MergeStats stats;
  target.in_transaction([&] {
    for (const auto& src : sources) {
      // An older source is upgraded in a private copy; the user's file stays as it was.
      TempCopy copy;
      std::string readable = src;
      if (source_version(src) < kSchemaVersion) {
        std::random_device rd;
        copy.path = (fs::temp_directory_path() / ("kvscope-merge-" + std::to_string(rd()) + ".sqlite")).string();
        try {
          SQLite::Database(src, SQLite::OPEN_READONLY).backup(copy.path.c_str(), SQLite::Database::Save);
        } catch (const SQLite::Exception& e) {
          sql::rethrow(src, e, "backup to a temporary copy");
        }
        RunStore upgrade(copy.path);
        readable = copy.path;
      }
      RunStore source(readable, RunStoreOptions{.read_only = true});
      const std::string origin_db = fs::absolute(src).lexically_normal().string();
      auto listing = source.list_runs();
      for (auto it = listing.rbegin(); it != listing.rend(); ++it) {  // oldest first: ids keep their order
        const StoredRun run = source.load_run(it->id);
        ++stats.runs_seen;
        if (target.import_run(run, origin_db + "#" + std::to_string(run.id))) {
          ++stats.runs_added;
        } else {
          ++stats.runs_skipped;
        }
      }
    }
  });
  return stats;
}

}  // namespace kvscope
