# Fixed choices, written out again as fixed.json: the two must quantize identically.
BASE = "kivi-2"


class AdaptiveQuantPolicy:
    def choose_bits(self, layer_id, kv_kind, head_group, token_stats, budget_state):
        return 4 if (layer_id == 0 and kv_kind == "k") else 2

    def residual_length(self, layer_id, request_meta):
        return [128, 64, 32, 32][layer_id]
