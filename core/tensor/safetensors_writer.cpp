#include "core/tensor/safetensors_writer.h"

#include <unistd.h>

#include <cerrno>
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
    bytes_.push_back(nb);
    offset += nb;
  }
  std::string h = header.dump();
  while ((h.size() + 8) % 8 != 0) h.push_back(' ');  // keep the data block 8-byte aligned

  tmp_ = path + ".tmp-" + std::to_string(getpid());
  guard_ = std::make_unique<TempFileGuard>(tmp_);  // deleted if SIGINT/SIGTERM arrives mid-write
  fp_ = std::fopen(tmp_.c_str(), "wb");
  if (!fp_) fail(path, "cannot create '{}': {}", tmp_, std::strerror(errno));
  unsigned char len[8];
  const uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);
  if (std::fwrite(len, 1, 8, fp_) != 8 || std::fwrite(h.data(), 1, h.size(), fp_) != h.size()) failed("write failed");
}

SafetensorsWriter::~SafetensorsWriter() {
  if (fp_) {  // not finished: leave nothing behind
    std::fclose(fp_);
    std::remove(tmp_.c_str());
  }
}

void SafetensorsWriter::failed(const std::string& what) {
  const int saved = errno;
  if (fp_) std::fclose(fp_);
  fp_ = nullptr;
  std::remove(tmp_.c_str());
  fail(path_, "{}: {}", what, std::strerror(saved));
}

void SafetensorsWriter::write(const std::string& name, const void* data) {
  if (!fp_) fail(path_, "tensor '{}' written after the file was finished or failed", name);
  if (next_ >= tensors_.size() || tensors_[next_].name != name)
    fail(path_, "tensor '{}' written out of the declared order", name);
  const size_t nb = static_cast<size_t>(bytes_[next_++]);
  if (nb != 0 && std::fwrite(data, 1, nb, fp_) != nb) failed("write failed");
}

void SafetensorsWriter::finish() {
  if (!fp_) fail(path_, "finished twice or after a failure");
  if (next_ != tensors_.size()) fail(path_, "only {} of {} tensors were written", next_, tensors_.size());
  if (std::fflush(fp_) != 0 || fsync(fileno(fp_)) != 0) failed("write failed");
  std::fclose(fp_);
  fp_ = nullptr;
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int saved = errno;
    std::remove(tmp_.c_str());
    fail(path_, "cannot rename temporary file into place: {}", std::strerror(saved));
  }
}

}  // namespace kvscope
