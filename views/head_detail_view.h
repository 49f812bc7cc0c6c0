#pragma once
// Drill-down panel for one head: per-channel max |K| (after and before RoPE) as bars, the
// per-token error strip, and the outlier channels. Draws a HeadProfile value; keeps no state.
#include <imgui.h>

#include "core/metrics/head_profile.h"
#include "views/colormap.h"

namespace kvscope::views {

struct HeadDetailIntent {
  bool close = false;
  bool toggle_fp16 = false;  // keep this head in fp16 / undo
};

HeadDetailIntent draw_head_detail(const HeadProfile& p, bool kept_fp16, Colormap cmap, float width);

}  // namespace kvscope::views
