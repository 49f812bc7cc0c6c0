// config.json: parse_config plus everything derived from an accepted config (tensor shapes,
// parameter count), which is where unchecked sizes would overflow.
#include "core/model/checkpoint.h"
#include "core/model/config.h"
#include "core/util/error.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    kvscope::ModelConfig c = kvscope::parse_config(text, "config.json");
    kvscope::fuzz::consume(c.param_count());
    kvscope::fuzz::consume(c.group());
    for (bool lm : {false, true}) kvscope::fuzz::consume(kvscope::expected_tensors(c, lm));
  } catch (const kvscope::Error&) {
  }
  return 0;
}
