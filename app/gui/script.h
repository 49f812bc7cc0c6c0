#pragma once
// GUI scripts for headless runs (tests, docs screenshots): one action per line, '#' comments.
//   view heatmap|rd|attention|runs      metric nmse|mse|cos|attn|bits     scale log|linear
//   colormap viridis|magma              theme dark|light              ui_scale 1.25
//   preset kivi-2                       set <field> <value>   (k.bits v.bits bits group_size
//                                        residual sink_tokens clip_ratio method outlier_ratio)
//   hover k|v <layer> <head>            click k|v <layer> <head>      rclick k|v <layer> <head>
//   sweep                               save_run                      wait_jobs
//   wait_frames <n>                     screenshot <out.png>          save_figure heatmap|rd|attention <out.png> <w> <h>
//   perf_begin                          perf_end <out.json>           open <dump.safetensors>
//   capture <model id> <tokens>         (a model from discover_models: captures a dump on the built-in passage)
//   replay <model id> <workload spec>   (replays the model with the editor's policy; TEST_METRICS on stdout,
//                                        the run stored in the open run store, else the default one)
//   rd_metric k_nmse|v_nmse|attn_cos|greedy|kl   (the RD view's y axis; greedy and kl plot replay runs)
//   quit
#include <string>
#include <vector>

namespace kvscope::gui {

struct ScriptAction {
  int line = 0;
  std::string verb;
  std::vector<std::string> args;
};

// Throws Error("<path>:<line>: ...") for an unknown verb or a wrong number of arguments.
std::vector<ScriptAction> parse_script_text(const std::string& text, const std::string& where);
std::vector<ScriptAction> load_script(const std::string& path);

}  // namespace kvscope::gui
