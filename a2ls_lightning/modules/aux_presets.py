"""The named losses of the A2LS space (presets), in the spec's text form (:mod:`a2ls_lightning.modules.aux_spec`
parses them; ``a2ls losses`` lists them). Plain data: adding a preset is one line here and its test."""

from __future__ import annotations

__all__ = ["PRESET_TEXTS"]

#: Named losses in text form. Decoded from the A2LS paper's official flags and its Table 1:
#: - a2_winner / a2_winner_v: the official flags of the discovered losses (see the tests for the flags).
#: - curl: two random crops of s_t, bilinear with in-batch negatives.
#: - spr: SPR's self-predictive loss with its K = 5 steps (an MLP predictor here, not SPR's
#:   recurrent transition model).
#: - forward_dynamics {s_t, a_t} → {s_t+1}; inverse_dynamics {s_t, s_t+1} → {a_t};
#:   reward_prediction {s_t, a_t} → {r_t}; state_reconstruction {s_t} → {s_t} (two-view, mse);
#:   action_inference {s_t} → {a_t}: infer the action taken from the state alone (inverse dynamics
#:   without the next state), the "action in the target" pattern of the paper's Table 5.
PRESET_TEXTS: dict[str, str] = {
    "a2_winner": "h=4 s0,a0-a3,r0,r1,r3 -> s1-s4 mse",
    "a2_winner_v": "h=9 s0,s2,s8,a0-a5,a7,a8,r3,r4,r8 -> s1,s3,s6,s9,a4 mse",
    "curl": "h=1 s0 -> s0 bilinear +neg",
    "spr": "h=5 s0,a0-a4 -> s1-s5 nmse",
    "forward_dynamics": "h=1 s0,a0 -> s1 mse",
    "inverse_dynamics": "h=1 s0,s1 -> a0 mse",
    "reward_prediction": "h=1 s0,a0 -> r0 mse",
    "state_reconstruction": "h=1 s0 -> s0 mse",
    "action_inference": "h=1 s0 -> a0 mse",
}
