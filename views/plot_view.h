#pragma once
// Line/scatter plot widget over a PlotData value (rate-distortion curves, per-layer attention
// cosine): axes with ticks, one coloured curve per series, optional Pareto front, legend, hover
// tooltip. Reports the hovered and clicked point. Keeps no state.
#include <imgui.h>

#include "views/plot_model.h"

namespace kvscope::views {

struct PlotIntent {
  PointRef hovered, clicked;
  PlotFrame frame;  // data -> screen mapping used this frame
  Rect area;        // the plotting area (screen pixels)
};

PlotIntent draw_plot(const char* id, const PlotData& d, ImVec2 size);

}  // namespace kvscope::views
