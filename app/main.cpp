// kvscope: desktop lab for KV-cache quantization. `kvscope` alone opens the GUI on the built-in demo.
#include <cstdio>
#include <cstring>
#include <new>
#include <string>

#include "app/cli.h"
#include "core/model/memory_plan.h"
#include "core/util/error.h"
#include "core/util/interrupt.h"

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
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "kvscope: error: %s\n", kvscope::out_of_memory_message().c_str());
    return 1;
  } catch (const std::exception& e) {
    // c10::Error carries a C++ stack trace after its first line: the user gets the first line only.
    const std::string what = e.what();
    if (what.find("can't allocate memory") != std::string::npos || what.find("not enough memory") != std::string::npos) {
      std::fprintf(stderr, "kvscope: error: %s\n", kvscope::out_of_memory_message().c_str());
      return 1;
    }
    std::fprintf(stderr, "kvscope: internal error: %s\n", what.substr(0, what.find('\n')).c_str());
    return 2;
  }
  return 0;
}
