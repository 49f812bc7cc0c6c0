#include "core/tensor/compute_threads.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <mutex>

#include "core/util/parallel.h"

namespace kvscope {

namespace {

// Debian's libtorch links the BLAS alternative (OpenBLAS pthread here); find its setter at run time.
void set_blas_threads(int n) {
  using SetThreads = void (*)(int);
  static auto fn = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (fn) fn(n);
}

int blas_threads() {
  using GetThreads = int (*)();
  static auto fn = reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  return fn ? fn() : worker_threads();
}

}  // namespace

void configure_compute_threads() {
  static std::once_flag once;
  std::call_once(once, [] {
    at::set_num_threads(1);
    set_blas_threads(worker_threads());
  });
}

ScopedBlasThreads::ScopedBlasThreads(int n) {
  configure_compute_threads();
  previous_ = blas_threads();
  set_blas_threads(n);
}

ScopedBlasThreads::~ScopedBlasThreads() { set_blas_threads(previous_); }

}  // namespace kvscope
