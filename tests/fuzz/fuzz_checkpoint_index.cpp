// model.safetensors.index.json of a sharded checkpoint. The folder holds two small valid shards
// (written once at start-up); the fuzzed index decides which shard is said to hold which tensor.
#include <filesystem>
#include <vector>

#include "core/model/checkpoint.h"
#include "core/tensor/safetensors.h"
#include "core/util/error.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

std::string model_dir() {
  static const std::string dir = [] {
    std::string d = kvscope::fuzz::scratch_dir() + "/model";
    std::filesystem::create_directories(d);
    static const std::vector<float> w(16, 0.5f);
    static const std::vector<uint16_t> h(8, 0x3c00);
    kvscope::write_safetensors(d + "/model-00001-of-00002.safetensors",
                               {{"model.embed_tokens.weight", kvscope::DType::F32, {4, 4}, w.data()},
                                {"model.norm.weight", kvscope::DType::F16, {8}, h.data()}});
    kvscope::write_safetensors(d + "/model-00002-of-00002.safetensors",
                               {{"lm_head.weight", kvscope::DType::F32, {4, 4}, w.data()}});
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string dir = model_dir();
  // Opening the index must never escape the folder, whatever shard names it lists.
  kvscope::fuzz::write_scratch(data, size, "model/model.safetensors.index.json");
  try {
    kvscope::Checkpoint ck = kvscope::Checkpoint::open(dir);
    kvscope::fuzz::consume(ck.total_bytes());
    kvscope::fuzz::consume(ck.storage_dtype());
    for (const char* name : {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}) {
      if (!ck.has(name)) continue;
      std::vector<int64_t> shape = ck.shape(name);
      int64_t n = 1;
      for (auto d : shape) n *= d;
      std::vector<float> buf(static_cast<size_t>(n));
      ck.read_f32(name, buf.data());
      kvscope::fuzz::consume(buf);
    }
  } catch (const kvscope::Error&) {
  }
  return 0;
}
