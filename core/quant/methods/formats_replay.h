#pragma once
// Replay plans of the deployment-format records (core/quant/methods/formats.cpp): one RowCodec per
// (layer, KV head, kind) built from the policy's options and, where a scale, channel set or codebook
// is data-dependent, from the replay calibration (text or online; docs/FORMATS.md "Replay").
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/policy/policy.h"

namespace kvscope {

struct ModelConfig;
struct Calibration;
struct HeadQuantPlan;

// One per record; `options` is the record's option object (method_options parsed).
std::vector<HeadQuantPlan> ggml_replay_plans(const ModelConfig&, const Policy&, const Calibration*, const std::string& where);
std::vector<HeadQuantPlan> fp8_replay_plans(const ModelConfig&, const Policy&, const Calibration*, const std::string& where);
std::vector<HeadQuantPlan> nvfp4_replay_plans(const ModelConfig&, const Policy&, const Calibration*, const std::string& where);
std::vector<HeadQuantPlan> turboquant_replay_plans(const ModelConfig&, const Policy&, const Calibration*, const std::string& where);
std::vector<HeadQuantPlan> qjl_replay_plans(const ModelConfig&, const Policy&, const Calibration*, const std::string& where);
std::vector<HeadQuantPlan> kvquant_replay_plans(const ModelConfig&, const Policy&, const Calibration*, const std::string& where);

// Whether replay needs a calibration for these options (FP8 amax scales, the NVFP4 tensor scale,
// TurboQuant's outlier channels at 2.5/3.5 bits, KVQuant's codebooks and ranges).
bool fp8_needs_calibration(const Policy&);
bool turboquant_needs_calibration(const Policy&);

}  // namespace kvscope
