#include "core/tensor/compute_threads.h"

#include <dlfcn.h>

#include <mutex>

#include "core/util/parallel.h"

namespace kvscope {

namespace {

// The BLAS alternative is OpenBLAS (pthread) where setup.sh installed it; its setter is found at run
// time so that another BLAS (no such function) still links and runs single-threaded by its own rules.
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
