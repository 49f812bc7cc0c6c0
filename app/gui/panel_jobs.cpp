// The bottom of the window: the jobs panel (progress, cancel) and the status bar.
#include <imgui.h>

#include <cstdio>

#include "app/gui/shell.h"

namespace kvscope::gui {

void jobs_panel(Shell& s, ImVec2 size) {
  JobRunner& runner = s.ws.jobs();
  ImGui::BeginChild("jobs", size, true);
  views::JobsIntent in = views::draw_jobs(runner.rows());
  for (uint64_t id : in.cancel) runner.cancel(id);
  if (in.clear_finished) runner.clear_finished();
  ImGui::EndChild();
}

void status_bar(Shell& s) {
  std::string line;
  char buf[256];
  if (const auto& dump = s.ws.dump()) {
    const DumpShape& d = dump->shape();
    std::snprintf(buf, sizeof buf, "%d x %d x %d tokens", d.layers, d.kv_heads, d.tokens);
    line += buf;
  }
  if (const auto& report = s.ws.report()) {
    double ratio = report->bytes_per_token > 0 ? report->fp16_bytes_per_token / report->bytes_per_token : 0;
    std::snprintf(buf, sizeof buf, "  |  %s  %.3f bits/elem  %.0f B/token (%.1fx smaller)  K NMSE %.3g",
                  report->policy_name.c_str(), report->bits_per_element, report->bytes_per_token, ratio, report->k_nmse);
    line += buf;
    if (report->attn_queries > 0) std::snprintf(buf, sizeof buf, "  attn cos %.4f", report->attn_cos_mean);
    else std::snprintf(buf, sizeof buf, "  attn cos ...");
    line += buf;
  }
  if (s.perf.last_latency_ms() >= 0) {
    std::snprintf(buf, sizeof buf, "  |  last refresh %.0f ms", s.perf.last_latency_ms());
    line += buf;
  }
  std::snprintf(buf, sizeof buf, "  |  %.0f fps%s", s.fps, s.ws.jobs().busy() ? "  |  working..." : "");
  line += buf;
  ImGui::TextUnformatted(line.c_str());
}

}  // namespace kvscope::gui
