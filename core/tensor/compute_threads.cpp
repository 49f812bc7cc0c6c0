#include "core/tensor/compute_threads.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <mutex>

#include "core/util/parallel.h"

namespace kvscope {

void configure_compute_threads() {
  static std::once_flag once;
  std::call_once(once, [] {
    at::set_num_threads(1);
    // Debian's libtorch links the BLAS alternative (OpenBLAS pthread here); find its setter at run time.
    using SetThreads = void (*)(int);
    if (auto fn = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) fn(worker_threads());
  });
}

}  // namespace kvscope
