#pragma once
// Whole-file reads for the small inputs kvscope takes (texts, configs, policies), and the one
// atomic writer every output file goes through.
#include <cstddef>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

namespace kvscope {

// The bytes of `path`; Error("<path>: cannot open the <what>") when it cannot be read.
std::string read_file(const std::string& path, const char* what = "file");

// A text input (dump --text, replay text:/jsonl:/file: workloads, calibration text, GUI capture
// text): the bytes of `path`, at most `max_bytes` of them, with a leading UTF-8 byte-order mark
// removed, so every reader tokenizes the same text from the same file.
std::string read_text_file(const std::string& path, const char* what = "text file",
                           size_t max_bytes = std::string::npos);
// Removes a leading UTF-8 byte-order mark (EF BB BF) in place.
void strip_utf8_bom(std::string& text);

// Writes `bytes` to `path` atomically: a temporary file in the same directory is written, fsync'ed
// and renamed over `path`, so a reader sees the old file or the whole new one, never a part.
// On any failure the temporary file is removed and Error("<path>: ...") is thrown.
// An interrupt (SIGINT/SIGTERM, core/util/interrupt.h) mid-write removes the temporary file too.
void write_file_atomic(const std::string& path, std::string_view bytes);
// The same for a file made of several pieces written in order (a header, then large tensors),
// without joining them in memory first.
void write_file_atomic(const std::string& path, std::initializer_list<std::string_view> parts);
void write_file_atomic(const std::string& path, const std::vector<std::string_view>& parts);

}  // namespace kvscope
