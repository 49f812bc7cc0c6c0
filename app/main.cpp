// kvscope: desktop lab for KV-cache quantization. `kvscope` alone opens the GUI on the built-in demo.
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
}  // namespace

int main(int argc, char** argv) {
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
