# Per-block bits in replay: choose_bits sees each block's token statistics and the budget spent so
# far; blocks with a wide channel spread get 4 bits while the 3-bit average budget allows it.
import numpy as np

BASE = "kivi-2"
BUDGET = {"max_avg_bits": 3, "bit_range": [2, 4]}


class AdaptiveQuantPolicy:
    def choose_bits(self, layer_id, kv_kind, head_group, token_stats, budget_state):
        absmax = token_stats["absmax"]
        want = 4 if float(absmax.max() / np.median(absmax)) > 4.0 else 2
        if budget_state["bits_left"] is not None and want * budget_state["block_entries"] > budget_state["bits_left"]:
            want = 2
        return want

    def residual_length(self, layer_id, request_meta):
        return 32
