// kvscope synth: writes the synthetic demo dump (core/synth/synth.h explains its structure).
#include <cstdio>

#include "app/cli.h"
#include "core/synth/synth.h"
#include "core/util/error.h"

namespace kvscope::cli {

void register_synth(CLI::App& app) {
  auto* cmd = app.add_subcommand("synth", "Write a synthetic KV dump (Qwen2.5-0.5B shape with planted outlier heads)");
  struct Args {
    SynthOptions o;
    std::string out;
    std::string dtype = "f16";
    bool no_queries = false;
  };
  auto args = std::make_shared<Args>();
  cmd->add_option("--out,-o", args->out, "Output .safetensors file")->required();
  cmd->add_option("--layers", args->o.layers, "Layers")->capture_default_str();
  cmd->add_option("--kv-heads", args->o.kv_heads, "KV heads")->capture_default_str();
  cmd->add_option("--q-heads", args->o.q_heads, "Query heads")->capture_default_str();
  cmd->add_option("--head-dim", args->o.head_dim, "Head dimension")->capture_default_str();
  cmd->add_option("--tokens", args->o.tokens, "Tokens")->capture_default_str();
  cmd->add_option("--seed", args->o.seed, "Random seed")->capture_default_str();
  cmd->add_option("--dtype", args->dtype, "Storage dtype: f16, bf16 or f32")->capture_default_str();
  cmd->add_flag("--no-queries", args->no_queries, "Do not write queries");
  cmd->add_flag("--q-pre-rope", args->o.q_pre_rope, "Also write pre-RoPE queries");
  cmd->callback([args] {
    args->o.queries = !args->no_queries;
    DType dt = args->dtype == "f32" ? DType::F32 : args->dtype == "bf16" ? DType::BF16 : DType::F16;
    if (args->dtype != "f16" && args->dtype != "bf16" && args->dtype != "f32")
      throw Error("--dtype: '" + args->dtype + "' is not f16, bf16 or f32");
    write_synthetic_dump(args->out, args->o, dt);  // one layer in memory at a time
    const SynthOptions& o = args->o;
    std::fprintf(stderr, "wrote %s: %d layers x %d KV heads (%d query heads) x %d tokens x head_dim %d\n",
                 args->out.c_str(), o.layers, o.kv_heads, o.queries ? o.q_heads : 0, o.tokens, o.head_dim);
  });
}

}  // namespace kvscope::cli
