# Seed 002's AdaptiveQuantPolicy in its own style: bits from per-layer key statistics, a residual
# window per layer, an average budget of 3 bits per KV entry.
import numpy as np

BASE = "kivi-2"
BUDGET = {"max_avg_bits": 3, "bit_range": [2, 4]}


class AdaptiveQuantPolicy:
    def choose_bits(self, layer_id, kv_kind, head_group, token_stats, budget_state):
        if kv_kind == "v":
            return 2
        # A key head with outlier channels (largest channel absmax far above the median channel)
        # gets 4 bits, the others 3.
        absmax = token_stats["absmax"][0]
        ratio = float(absmax.max() / np.median(absmax))
        return 4 if ratio > 8.0 else 3

    def choose_axis(self, layer_id, kv_kind):
        return "channel" if kv_kind == "k" else "token"

    def residual_length(self, layer_id, request_meta):
        return 128 if layer_id == 0 else 32

    def calibration_mode(self, workload_meta, budget_state):
        return "none"
