#include "core/util/content_hash.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include <fmt/format.h>

#include "core/util/error.h"

namespace kvscope {

uint64_t fnv1a64(std::string_view bytes, uint64_t state) {
  for (unsigned char c : bytes) {
    state ^= c;
    state *= 0x100000001b3ull;
  }
  return state;
}

static std::string format_hash(uint64_t h) { return fmt::format("fnv1a64:{:016x}", h); }

std::string hash_text(std::string_view bytes) { return format_hash(fnv1a64(bytes)); }

std::string hash_file(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) fail(path, "cannot open to hash it: {}", std::strerror(errno));
  std::vector<char> buf(1 << 20);
  uint64_t h = 0xcbf29ce484222325ull;
  for (;;) {
    const size_t n = std::fread(buf.data(), 1, buf.size(), f.get());
    h = fnv1a64(std::string_view(buf.data(), n), h);
    if (n < buf.size()) {
      if (std::ferror(f.get())) fail(path, "read error while hashing: {}", std::strerror(errno));
      break;
    }
  }
  return format_hash(h);
}

}  // namespace kvscope
