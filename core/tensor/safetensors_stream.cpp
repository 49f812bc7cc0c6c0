#include "core/tensor/safetensors_stream.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/util/error.h"
#include "core/util/interrupt.h"

namespace kvscope {

SafetensorsStreamWriter::SafetensorsStreamWriter(const std::string& path, const std::vector<TensorSpec>& tensors,
                                                 const std::map<std::string, std::string>& metadata)
    : path_(path), tmp_(path + ".tmp-" + std::to_string(getpid())) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    uint64_t numel = 1;
    for (auto d : t.shape) {
      if (d < 0) fail(path, "tensor '{}': negative dimension", t.name);
      numel *= static_cast<uint64_t>(d);
    }
    const uint64_t nb = numel * dtype_size(t.dtype);
    if (header.contains(t.name)) fail(path, "tensor '{}' written twice", t.name);
    header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))}, {"shape", t.shape}, {"data_offsets", {offset, offset + nb}}};
    begin_.push_back(offset);
    size_.push_back(nb);
    offset += nb;
  }
  std::string h = header.dump();
  while ((h.size() + 8) % 8 != 0) h.push_back(' ');  // keep the data block 8-byte aligned
  data_start_ = 8 + h.size();
  data_bytes_ = offset;

  guard_ = std::make_unique<TempFileGuard>(tmp_);
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail(path, "cannot create '{}': {}", tmp_, std::strerror(errno));
  unsigned char len[8];
  const uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);
  std::string head(reinterpret_cast<const char*>(len), 8);
  head += h;
  if (::pwrite(fd_, head.data(), head.size(), 0) != static_cast<ssize_t>(head.size()) ||
      ::ftruncate(fd_, static_cast<off_t>(data_start_ + data_bytes_)) != 0) {
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    std::remove(tmp_.c_str());
    fail(path, "write failed: {}", std::strerror(err));
  }
}

SafetensorsStreamWriter::~SafetensorsStreamWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) std::remove(tmp_.c_str());
}

void SafetensorsStreamWriter::write(size_t index, uint64_t offset, const void* data, uint64_t bytes) {
  if (index >= begin_.size() || offset > size_[index] || bytes > size_[index] - offset)
    fail(path_, "internal: write of {} bytes at {} outside tensor {}", bytes, offset, index);
  const auto* p = static_cast<const char*>(data);
  uint64_t pos = data_start_ + begin_[index] + offset;
  while (bytes > 0) {
    const ssize_t w = ::pwrite(fd_, p, bytes, static_cast<off_t>(pos));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail(path_, "write failed: {}", std::strerror(w < 0 ? errno : ENOSPC));
    p += w;
    pos += static_cast<uint64_t>(w);
    bytes -= static_cast<uint64_t>(w);
  }
}

void SafetensorsStreamWriter::commit() {
  if (::fsync(fd_) != 0) fail(path_, "write failed: {}", std::strerror(errno));
  ::close(fd_);
  fd_ = -1;
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) fail(path_, "cannot rename temporary file into place: {}", std::strerror(errno));
  committed_ = true;
}

}  // namespace kvscope
