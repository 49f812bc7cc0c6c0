#include "core/util/file.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/util/error.h"
#include "core/util/interrupt.h"

namespace kvscope {

std::string read_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open the {}: {}", what, std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail(path, "cannot read the {}", what);
  return ss.str();
}

void strip_utf8_bom(std::string& text) {
  if (text.size() >= 3 && text.compare(0, 3, "\xEF\xBB\xBF") == 0) text.erase(0, 3);
}

std::string read_text_file(const std::string& path, const char* what, size_t max_bytes) {
  std::string s;
  if (max_bytes == std::string::npos) {
    s = read_file(path, what);
  } else {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(path, "cannot open the {}: {}", what, std::strerror(errno));
    s.resize(max_bytes);
    in.read(s.data(), static_cast<std::streamsize>(max_bytes));
    if (in.bad()) fail(path, "cannot read the {}", what);
    s.resize(static_cast<size_t>(in.gcount()));
  }
  strip_utf8_bom(s);
  return s;
}

namespace {

// Closes the descriptor and removes the temporary file unless released (the rename happened).
struct TempFile {
  std::string path;
  int fd = -1;
  bool keep = false;
  ~TempFile() {
    if (fd >= 0) ::close(fd);
    if (!keep) std::remove(path.c_str());
  }
};

}  // namespace

void write_file_atomic(const std::string& path, std::string_view bytes) {
  write_file_atomic(path, std::vector<std::string_view>{bytes});
}

void write_file_atomic(const std::string& path, std::initializer_list<std::string_view> parts) {
  write_file_atomic(path, std::vector<std::string_view>(parts));
}

void write_file_atomic(const std::string& path, const std::vector<std::string_view>& parts) {
  namespace fs = std::filesystem;
  if (path.empty()) throw Error("write: empty file name");
  static std::atomic<unsigned> counter{0};
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  TempFile tmp;
  // Appended piecewise: GCC 12 reports a false -Wrestrict for "literal" + std::string&&.
  std::string name = ".";
  name += target.filename().string();
  name += ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
  tmp.path = (dir / name).string();
  TempFileGuard interrupted_cleanup(tmp.path);  // removed if SIGINT/SIGTERM arrives mid-write
  tmp.keep = true;  // not ours until open succeeds
  tmp.fd = ::open(tmp.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (tmp.fd < 0) fail(path, "cannot create the file: {}", std::strerror(errno));
  tmp.keep = false;
  for (std::string_view bytes : parts)
    for (size_t done = 0; done < bytes.size();) {
      const ssize_t n = ::write(tmp.fd, bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) fail(path, "write failed: {}", std::strerror(n < 0 ? errno : EIO));
      done += static_cast<size_t>(n);
    }
  if (::fsync(tmp.fd) != 0) fail(path, "write failed (fsync): {}", std::strerror(errno));
  const int fd = tmp.fd;
  tmp.fd = -1;
  if (::close(fd) != 0) fail(path, "write failed (close): {}", std::strerror(errno));
  if (::rename(tmp.path.c_str(), path.c_str()) != 0) fail(path, "cannot move the file into place: {}", std::strerror(errno));
  tmp.keep = true;
}

}  // namespace kvscope
