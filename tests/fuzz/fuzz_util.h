#pragma once
// Shared by the libFuzzer targets. Most parsers take a path, so each input is written to a
// per-process scratch file (in /dev/shm when present: no disk I/O per execution).
// Contract checked by every target: bad input may only throw kvscope::Error. Any other exception
// escapes LLVMFuzzerTestOneInput and libFuzzer reports it as a crash ("deadly signal" on abort).
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace kvscope::fuzz {

inline const std::string& scratch_dir() {
  // Never destroyed: the atexit cleanup runs after static destructors.
  static const std::string* dir = [] {
    const char* base = std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : "/tmp";
    auto* d = new std::string(std::string(base) + "/kvscope-fuzz-" + std::to_string(getpid()));
    std::filesystem::create_directories(*d);
    std::atexit([] { std::error_code ec; std::filesystem::remove_all(scratch_dir(), ec); });
    return d;
  }();
  return *dir;
}

// Writes the input to scratch_dir()/name and returns the path.
inline std::string write_scratch(const uint8_t* data, size_t size, const std::string& name) {
  const std::string path = scratch_dir() + "/" + name;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  return path;
}

// Keeps computed values alive so the optimizer cannot drop the reads that produce them.
template <typename T>
inline void consume(const T& v) {
  asm volatile("" : : "r"(&v) : "memory");
}

}  // namespace kvscope::fuzz
