# The choices of same_choices.json, made by hooks: in quantize (planned), replay (per block) and
# sweeps the two must give identical results.
BASE = "kivi-2"


class AdaptiveQuantPolicy:
    def choose_bits(self, layer_id, kv_kind, head_group, token_stats, budget_state):
        return 4 if (layer_id == 0 and kv_kind == "k") else 2

    def residual_length(self, layer_id, request_meta):
        return 32
