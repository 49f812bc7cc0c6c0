// `kvscope smooth --model M (--text F | --prompt S) [--tokens N] [--factor F] [--include P]...
//  [--exclude P]... --out DIR`: KVSmooth calibrated on the text and folded into a copy of the
// checkpoint (core/model/kvsmooth_fold.h). The new folder is a model like any other.
#include <fmt/format.h>

#include <algorithm>

#include "app/cli.h"
#include "core/model/discovery.h"
#include "core/model/kvsmooth_fold.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "core/util/file.h"

namespace kvscope::cli {

void register_smooth(CLI::App& app) {
  struct Args {
    std::string model, text, prompt, out;
    int tokens = 512;
    SmoothOptions smooth;
    std::vector<std::string> include, exclude;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("smooth", "KVSmooth: calibrate key smoothing scales and fold them into a copy of a model");
  cmd->add_option("--model", a->model, "Model folder or Hugging Face id")->required();
  auto* t = cmd->add_option("--text", a->text, "Calibration text file");
  auto* p = cmd->add_option("--prompt", a->prompt, "Calibration text");
  t->excludes(p);
  cmd->add_option("--tokens", a->tokens, "Calibration tokens (from the start of the text)")->capture_default_str();
  cmd->add_option("--factor", a->smooth.factor, "smooth_factor (> 0; larger is more aggressive)")->capture_default_str();
  cmd->add_option("--include", a->include, "Attention modules to smooth (glob, default *)");
  cmd->add_option("--exclude", a->exclude, "Attention modules to leave alone (glob; wins over --include)");
  cmd->add_option("--out", a->out, "Output model folder")->required();
  cmd->callback([a] {
    if (a->text.empty() == a->prompt.empty()) fail("smooth", "give exactly one of --text FILE or --prompt TEXT");
    if (!(a->smooth.factor > 0)) fail("--factor", "must be > 0, got {}", a->smooth.factor);
    if (!a->include.empty()) a->smooth.include = a->include;
    a->smooth.exclude = a->exclude;
    std::string text = a->prompt;
    if (!a->text.empty()) text = read_text_file(a->text, "text file");
    const std::string dir = resolve_model(a->model);
    auto tok = load_tokenizer(dir);
    auto model = Model::load(dir);
    std::vector<int32_t> ids = tok->encode(text, /*add_bos=*/true);
    if (a->tokens > 0 && static_cast<int>(ids.size()) > a->tokens) ids.resize(a->tokens);
    KvSmoothFold fold = kvsmooth_calibrate(*model, ids, a->smooth);
    kvsmooth_write_checkpoint(dir, model->config(), fold, a->out);
    fmt::print("kvsmooth ({}) on {} calibration tokens, factor {}:\n", fold.norm_fusion ? "state-rope-norm" : "state-rope-linear",
               ids.size(), a->smooth.factor);
    fmt::print("{:>5} {:>12} {:>12} {:>10}\n", "layer", "max |K|", "median |K|", "smoothed");
    for (size_t l = 0; l < fold.max_k.size(); ++l) {
      std::vector<float> m = fold.max_k[l];
      std::nth_element(m.begin(), m.begin() + m.size() / 2, m.end());
      fmt::print("{:>5} {:>12.4f} {:>12.4f} {:>10}\n", l, *std::max_element(m.begin(), m.end()), m[m.size() / 2],
                 fold.scales[l].empty() ? "no" : "yes");
    }
    fmt::print("wrote {}\n", a->out);
  });
}

}  // namespace kvscope::cli
