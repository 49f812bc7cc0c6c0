// kvscope: desktop lab for KV-cache quantization. `kvscope` alone opens the GUI on the built-in demo.
#include <malloc.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "app/cli.h"
#include "core/model/memory_plan.h"
#include "core/util/error.h"
#include "core/util/interrupt.h"

namespace {
// An error exit, after the one line: everything of ours is unwound by then, so the libraries' exit
// handlers are skipped. Under a tight address-space cap (prlimit --as of ~0.2 GB) OpenBLAS's worker
// threads never get their buffers and its exit handler would wait for them forever.
int error_exit(int code) {
  std::fflush(nullptr);
  std::_Exit(code);
}

// The quantizers' outputs (codes, scales: 0.1-1 MB a slice) and per-layer buffers are allocated and
// freed thousands of times a run. With glibc's defaults such blocks are mmapped and trimmed back
// to the kernel on every free, so each one costs fresh page faults and zeroing (a third of
// `quantize` on the 8B-shaped 8k dump). Keeping freed memory up to these sizes for reuse made that
// run 1.3x faster for +8 MB peak RSS (GLIBC_TUNABLES A/B, README). Blocks above 64 MB still map.
void keep_freed_memory() {
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
}
}  // namespace

int main(int argc, char** argv) {
  keep_freed_memory();
  CLI::App app{"kvscope " KVSCOPE_VERSION " - a lab for KV-cache quantization of LLMs"};
  app.set_version_flag("--version", std::string("kvscope ") + KVSCOPE_VERSION);
  app.require_subcommand(0, 1);
  kvscope::cli::register_all(app);
  kvscope::install_interrupt_handlers();  // SIGINT/SIGTERM: one clear line, no half-written file
  try {
    app.parse(argc, argv);
    if (app.get_subcommands().empty()) {
      return kvscope::cli::run_gui_demo();  // no subcommand: the GUI on its built-in demo
    }
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const kvscope::Error& e) {
    std::fprintf(stderr, "kvscope: error: %s\n", e.what());
    return error_exit(1);
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "kvscope: error: %s\n", kvscope::out_of_memory_message().c_str());
    return error_exit(1);
  } catch (const std::exception& e) {
    // An exception text may carry more lines (a stack trace): the user gets the first line only.
    const std::string what = e.what();
    if (what.find("can't allocate memory") != std::string::npos || what.find("not enough memory") != std::string::npos) {
      std::fprintf(stderr, "kvscope: error: %s\n", kvscope::out_of_memory_message().c_str());
      return error_exit(1);
    }
    std::fprintf(stderr, "kvscope: internal error: %s\n", what.substr(0, what.find('\n')).c_str());
    return error_exit(2);
  }
  return 0;
}
