#include "core/tensor/safetensors.h"
#include "core/tensor/safetensors_writer.h"

#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>

#include "core/util/error.h"
#include "core/util/file.h"
#include "core/util/interrupt.h"

namespace kvscope {

using json = nlohmann::json;

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ && map_size_) munmap(map_, map_size_);
  if (fd_ >= 0) ::close(fd_);
}

namespace {

// A mapped file truncated by another process raises SIGBUS on the first access past its new end.
// The size is re-checked before every read; this guard covers the race between that check and
// the copy: the handler jumps back to the read, which then reports an Error.
thread_local sigjmp_buf* t_sigbus_jump = nullptr;
struct sigaction g_previous_sigbus {};

void on_sigbus(int sig, siginfo_t* info, void* context) {
  if (t_sigbus_jump) siglongjmp(*t_sigbus_jump, 1);
  // Not a guarded copy: behave as if we were not here.
  if (g_previous_sigbus.sa_flags & SA_SIGINFO) {
    if (g_previous_sigbus.sa_sigaction) return g_previous_sigbus.sa_sigaction(sig, info, context);
  } else if (g_previous_sigbus.sa_handler != SIG_DFL && g_previous_sigbus.sa_handler != SIG_IGN) {
    return g_previous_sigbus.sa_handler(sig);
  }
  signal(SIGBUS, SIG_DFL);
  raise(SIGBUS);
}

}  // namespace

bool run_sigbus_guarded(const std::function<void()>& copy) {
  static std::once_flag installed;
  std::call_once(installed, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &g_previous_sigbus);
  });
  sigjmp_buf jump;
  sigjmp_buf* const outer = t_sigbus_jump;
  if (sigsetjmp(jump, 1) != 0) {
    t_sigbus_jump = outer;
    return false;
  }
  t_sigbus_jump = &jump;
  copy();
  t_sigbus_jump = outer;
  return true;
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, "cannot open: {}", std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, "not a regular file");
  }
  uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    fail(path, "truncated safetensors file: {} bytes, the 8-byte header length is missing", file_size);
  }
  void* m = mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (m == MAP_FAILED) {
    const int err = errno;
    ::close(fd);
    fail(path, "cannot memory-map: {}", std::strerror(err));
  }
  // Transparent huge pages for the mapping: a file read into the page cache through it lands in
  // 2 MB folios mapped by single entries (ext4, xfs), so streaming weights misses the TLB 512x
  // less: 0.5B-shaped decode 45 -> 55 tok/s here. A file already cached in 4 KB pages keeps them.
  (void)madvise(m, file_size, MADV_HUGEPAGE);
  f->fd_ = fd;
  f->map_ = m;
  f->map_size_ = file_size;
  const auto* base = static_cast<const unsigned char*>(m);

  // The header is copied out of the map under the SIGBUS guard (the file may shrink meanwhile).
  unsigned char len_bytes[8];
  if (!run_sigbus_guarded([&] { std::memcpy(len_bytes, base, 8); }))
    fail(path, "file shrank while being opened (truncated by another process?)");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len_bytes[i];
  if (n > kMaxHeaderBytes) fail(path, "header length {} exceeds the {} byte limit (corrupt file?)", n, kMaxHeaderBytes);
  if (n > file_size - 8) fail(path, "truncated: header length {} but only {} bytes follow", n, file_size - 8);
  uint64_t data_size = file_size - 8 - n;
  f->data_ = base + 8 + n;
  std::string header_text(static_cast<size_t>(n), '\0');
  if (!run_sigbus_guarded([&] { std::memcpy(header_text.data(), base + 8, header_text.size()); }))
    fail(path, "file shrank while being opened (truncated by another process?)");

  json header;
  try {
    header = json::parse(header_text);
  } catch (const json::exception& e) {  // parse_error, or out_of_range for 1e309
    fail(path, "header is not valid JSON ({})", e.what());
  }
  if (!header.is_object()) fail(path, "header is not a JSON object");

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail(path, "__metadata__ is not an object");
      for (auto m2 = v.begin(); m2 != v.end(); ++m2) {
        if (!m2.value().is_string()) fail(path, "__metadata__.{} is not a string", m2.key());
        f->metadata_[m2.key()] = m2.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object()) fail(path, "tensor '{}': entry is not an object", name);
    TensorInfo t;
    t.name = name;
    if (!v.contains("dtype") || !v["dtype"].is_string()) fail(path, "tensor '{}': missing dtype", name);
    std::string dt = v["dtype"].get<std::string>();
    if (!parse_dtype(dt, &t.dtype)) fail(path, "tensor '{}': unsupported dtype '{}'", name, dt);
    if (!v.contains("shape") || !v["shape"].is_array()) fail(path, "tensor '{}': missing shape", name);
    uint64_t numel = 1;
    for (const auto& d : v["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) fail(path, "tensor '{}': shape has a non-integer or negative entry", name);
      uint64_t du = d.get<uint64_t>();
      if (du != 0 && numel > (uint64_t(1) << 62) / du) fail(path, "tensor '{}': shape overflows", name);
      numel *= du;
      t.shape.push_back(static_cast<int64_t>(du));
    }
    const json* off = v.contains("data_offsets") ? &v["data_offsets"] : nullptr;
    if (!off || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned())
      fail(path, "tensor '{}': data_offsets must be two non-negative integers", name);
    uint64_t b = (*off)[0].get<uint64_t>(), e = (*off)[1].get<uint64_t>();
    if (b > e) fail(path, "tensor '{}': data_offsets [{}, {}] are reversed", name, b, e);
    if (e > data_size) fail(path, "tensor '{}': data_offsets [{}, {}] run past the end of the file (data block is {} bytes; truncated?)", name, b, e, data_size);
    t.begin = b;
    t.nbytes = e - b;
    if (numel * dtype_size(t.dtype) != t.nbytes)
      fail(path, "tensor '{}': shape {} x {} needs {} bytes but data_offsets span {}", name, shape_str(t.shape),
           dtype_name(t.dtype), numel * dtype_size(t.dtype), t.nbytes);
    f->index_[name] = f->tensors_.size();
    f->tensors_.push_back(std::move(t));
  }
  // Byte ranges must not overlap (a crafted file could alias two tensors).
  std::vector<const TensorInfo*> by_begin;
  for (auto& t : f->tensors_) by_begin.push_back(&t);
  std::sort(by_begin.begin(), by_begin.end(), [](auto* a, auto* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_begin.size(); ++i) {
    auto* a = by_begin[i - 1];
    auto* b = by_begin[i];
    if (a->begin + a->nbytes > b->begin)
      fail(path, "tensors '{}' and '{}' overlap in the data block", a->name, b->name);
  }
  return f;
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& SafetensorsFile::get(const std::string& name) const {
  const TensorInfo* t = find(name);
  if (!t) fail(path_, "tensor '{}' is missing", name);
  return *t;
}

std::vector<float> SafetensorsFile::read_f32(const std::string& name, const std::vector<int64_t>& expect_shape) const {
  const TensorInfo& t = get(name);
  if (!expect_shape.empty() && expect_shape != t.shape)
    fail(path_, "tensor '{}' has shape {}, expected {}", name, shape_str(t.shape), shape_str(expect_shape));
  std::vector<float> out(static_cast<size_t>(t.numel()));
  read_f32_into(t, out.data());
  return out;
}

void SafetensorsFile::check_intact(const TensorInfo& t) const {
  const uint64_t end = static_cast<uint64_t>(data_ - static_cast<const unsigned char*>(map_)) + t.begin + t.nbytes;
  struct stat st {};
  if (fstat(fd_, &st) != 0) fail(path_, "cannot stat the open file: {}", std::strerror(errno));
  if (static_cast<uint64_t>(st.st_size) < end)
    fail(path_, "file shrank to {} bytes while open (truncated by another process?); tensor '{}' ends at byte {}",
         static_cast<uint64_t>(st.st_size), t.name, end);
}

void SafetensorsFile::release(const TensorInfo& t) const {
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(data(t)), end = begin + t.nbytes;
  const uintptr_t first = (begin + page - 1) / page * page, last = end / page * page;
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

void SafetensorsFile::read_bytes(uint64_t offset, size_t n, void* dst) const {
  auto* out = static_cast<unsigned char*>(dst);
  while (n > 0) {
    const ssize_t got = ::pread(fd_, out, n, static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) fail(path_, "cannot read {} bytes at offset {}: {}", n, offset, std::strerror(errno));
    if (got == 0) {
      struct stat st {};
      fstat(fd_, &st);
      fail(path_, "file shrank to {} bytes while open (truncated by another process?); byte {} is gone",
           static_cast<uint64_t>(st.st_size), offset);
    }
    out += got, offset += static_cast<uint64_t>(got), n -= static_cast<size_t>(got);
  }
}

void SafetensorsFile::read_f32_into(const TensorInfo& t, float* dst) const {
  // Large tensors (a dump's layers) with pread: no page faults, nothing left mapped. Small ones
  // (norms, biases between a checkpoint's weights) through the mapping, which reads their 2 MB
  // neighbourhood into the page cache as one huge folio the weights' mapping then uses whole.
  constexpr size_t kChunkBytes = size_t(1) << 20;  // a multiple of every element size; stays in L2
  if ((t.dtype == DType::F16 || t.dtype == DType::BF16 || t.dtype == DType::F32) && t.nbytes >= kChunkBytes) {
    thread_local std::vector<unsigned char> chunk;
    chunk.resize(std::min<uint64_t>(kChunkBytes, t.nbytes));
    const size_t es = dtype_size(t.dtype);
    for (uint64_t done = 0; done < t.nbytes;) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(kChunkBytes, t.nbytes - done));
      read_bytes(file_offset(t) + done, n, chunk.data());
      stored_to_f32(t.dtype, chunk.data(), n / es, dst + done / es);
      done += n;
    }
    return;
  }
  const uint64_t end = file_offset(t) + t.nbytes;
  struct stat st {};
  const auto truncated = [&](uint64_t now) {
    fail(path_, "file shrank to {} bytes while open (truncated by another process?); tensor '{}' ends at byte {}",
         now, t.name, end);
  };
  check_intact(t);
  const unsigned char* src = data(t);
  const size_t n = static_cast<size_t>(t.numel());
  if (!run_sigbus_guarded([&] { convert_to_f32(t.dtype, src, n, dst); })) {
    fstat(fd_, &st);
    truncated(static_cast<uint64_t>(st.st_size));
  }
}

void write_safetensors(const std::string& path, const std::vector<TensorView>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<TensorDecl> decl;
  for (const auto& t : tensors) decl.push_back({t.name, t.dtype, t.shape});
  SafetensorsWriter w(path, decl, metadata);  // temp file, fsync, rename; removed on failure or interrupt
  for (const auto& t : tensors) w.write(t.name, t.data);
  w.finish();
}

}  // namespace kvscope
