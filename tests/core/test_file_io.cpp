// core/util/file: the one atomic writer (temp file beside the target, removed on failure) and
// the one text reader (a UTF-8 byte-order mark removed).
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "core/util/error.h"
#include "core/util/file.h"
#include "test_util.h"

using namespace kvscope;
namespace fs = std::filesystem;

namespace {
std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}
}  // namespace

TEST_CASE("write_file_atomic writes or replaces the whole file and leaves no temporary file") {
  TempDir tmp;
  const std::string path = tmp.path("out.json");
  write_file_atomic(path, "first");
  CHECK(read_file(path) == "first");
  write_file_atomic(path, {"se", "", "cond"});  // pieces, in order
  CHECK(read_file(path) == "second");
  write_file_atomic(path, "");
  CHECK(read_file(path).empty());
  CHECK(names_in(tmp.dir) == std::vector<std::string>{"out.json"});
}

TEST_CASE("write_file_atomic fails with one Error naming the file, the old file untouched") {
  TempDir tmp;
  const std::string blocker = tmp.path("file");
  write_file_atomic(blocker, "old");
  // A directory that is a regular file: the temporary file cannot be created.
  CHECK_THROWS_WITH(write_file_atomic(blocker + "/out.txt", "x"), Catch::StartsWith(blocker + "/out.txt: cannot create the file"));
  CHECK_THROWS_WITH(write_file_atomic(tmp.path("missing/out.txt"), "x"), Catch::StartsWith(tmp.path("missing/out.txt") + ": "));
  // Renaming over a directory fails after the write: the temporary file is removed again.
  fs::create_directories(tmp.path("dir/inside"));
  CHECK_THROWS_WITH(write_file_atomic(tmp.path("dir"), "x"), Catch::StartsWith(tmp.path("dir") + ": cannot move the file into place"));
  CHECK(names_in(tmp.dir) == std::vector<std::string>{"dir", "file"});
  CHECK(read_file(blocker) == "old");
  CHECK_THROWS_AS(write_file_atomic("", "x"), Error);
}

TEST_CASE("read_text_file removes a UTF-8 byte-order mark, and only at the start") {
  TempDir tmp;
  std::ofstream(tmp.path("bom.txt"), std::ios::binary) << "\xEF\xBB\xBFOnce upon a time.";
  std::ofstream(tmp.path("plain.txt"), std::ios::binary) << "Once upon a time.";
  std::ofstream(tmp.path("middle.txt"), std::ios::binary) << "a\xEF\xBB\xBF";
  std::ofstream(tmp.path("short.txt"), std::ios::binary) << "\xEF\xBB";
  CHECK(read_text_file(tmp.path("bom.txt")) == "Once upon a time.");
  CHECK(read_text_file(tmp.path("bom.txt")) == read_text_file(tmp.path("plain.txt")));
  CHECK(read_text_file(tmp.path("middle.txt")) == "a\xEF\xBB\xBF");
  CHECK(read_text_file(tmp.path("short.txt")) == "\xEF\xBB");
  CHECK(read_text_file(tmp.path("bom.txt"), "text", 7) == "Once");  // a prefix of 7 bytes, mark removed
  CHECK(read_file(tmp.path("bom.txt")).size() == 20);                // the raw reader keeps the bytes
  CHECK_THROWS_WITH(read_text_file(tmp.path("none.txt"), "calibration text"),
                    Catch::StartsWith(tmp.path("none.txt") + ": cannot open the calibration text"));
}
