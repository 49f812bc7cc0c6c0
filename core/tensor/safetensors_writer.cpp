#include "core/tensor/safetensors_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/util/error.h"
#include "core/util/interrupt.h"

namespace kvscope {

SafetensorsWriter::SafetensorsWriter(const std::string& path, const std::vector<TensorDecl>& tensors,
                                     const std::map<std::string, std::string>& metadata)
    : path_(path), tensors_(tensors) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& t : tensors_) {
    uint64_t numel = 1;
    for (auto d : t.shape) {
      if (d < 0) fail(path, "tensor '{}': negative dimension", t.name);
      numel *= static_cast<uint64_t>(d);
    }
    const uint64_t nb = numel * dtype_size(t.dtype);
    if (header.contains(t.name)) fail(path, "tensor '{}' written twice", t.name);
    header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))}, {"shape", t.shape}, {"data_offsets", {offset, offset + nb}}};
    begin_.push_back(offset);
    bytes_.push_back(nb);
    offset += nb;
  }
  written_.assign(bytes_.size(), 0);
  std::string h = header.dump();
  while ((h.size() + 8) % 8 != 0) h.push_back(' ');  // keep the data block 8-byte aligned
  data_start_ = 8 + h.size();
  data_bytes_ = offset;

  tmp_ = path + ".tmp-" + std::to_string(getpid());
  guard_ = std::make_unique<TempFileGuard>(tmp_);  // deleted if SIGINT/SIGTERM arrives mid-write
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail(path, "cannot create '{}': {}", tmp_, std::strerror(errno));
  std::string head(8, '\0');
  for (int i = 0; i < 8; ++i) head[i] = static_cast<char>((h.size() >> (8 * i)) & 0xff);
  head += h;
  put(0, head.data(), head.size());
}

SafetensorsWriter::~SafetensorsWriter() {
  if (fd_ >= 0) {  // not finished: leave nothing behind
    ::close(fd_);
    std::remove(tmp_.c_str());
  }
}

void SafetensorsWriter::failed(const std::string& what) {
  const int saved = errno;
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  std::remove(tmp_.c_str());
  fail(path_, "{}: {}", what, std::strerror(saved));
}

void SafetensorsWriter::put(uint64_t pos, const void* data, uint64_t bytes) {
  const auto* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t w = ::pwrite(fd_, p, bytes, static_cast<off_t>(pos));
    if (w < 0 && errno == EINTR) continue;
    if (w == 0) errno = ENOSPC;
    if (w <= 0) failed("write failed");
    p += w;
    pos += static_cast<uint64_t>(w);
    bytes -= static_cast<uint64_t>(w);
  }
}

void SafetensorsWriter::write(const std::string& name, const void* data) {
  if (fd_ < 0) fail(path_, "tensor '{}' written after the file was finished or failed", name);
  if (next_ >= tensors_.size() || tensors_[next_].name != name)
    fail(path_, "tensor '{}' written out of the declared order", name);
  const size_t i = next_++;
  put(data_start_ + begin_[i], data, bytes_[i]);
  written_[i] = bytes_[i];
}

void SafetensorsWriter::write_at(size_t index, uint64_t offset, const void* data, uint64_t bytes) {
  if (fd_ < 0) fail(path_, "tensor {} written after the file was finished or failed", index);
  if (index >= bytes_.size() || offset > bytes_[index] || bytes > bytes_[index] - offset)
    fail(path_, "internal: write of {} bytes at {} outside tensor {}", bytes, offset, index);
  put(data_start_ + begin_[index] + offset, data, bytes);
  written_[index] += bytes;
}

void SafetensorsWriter::finish() {
  if (fd_ < 0) fail(path_, "finished twice or after a failure");
  for (size_t i = 0; i < tensors_.size(); ++i)
    if (written_[i] != bytes_[i])
      fail(path_, "tensor '{}': {} of {} bytes written", tensors_[i].name, written_[i], bytes_[i]);
  if (::fsync(fd_) != 0) failed("write failed");
  ::close(fd_);
  fd_ = -1;
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int saved = errno;
    std::remove(tmp_.c_str());
    fail(path_, "cannot rename temporary file into place: {}", std::strerror(saved));
  }
}

}  // namespace kvscope
