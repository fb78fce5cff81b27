"""AuxLossSpec: decoding of the official flags, validation, text form, presets, hashing."""

from __future__ import annotations

import dataclasses
import random

import pytest

from a2ls_lightning.modules.auxiliary import (
    OPERATORS,
    AuxLossSpec,
    required_window,
)

A2_WINNER_FLAGS = dict(
    horizon=4,
    input_s="1000", input_a="1111", input_r="1101", input_s_="0",
    target_s="0111", target_a="0000", target_r="0000", target_s_="1",
    operator="mse",
)  # fmt: skip
A2_WINNER_V_FLAGS = dict(
    horizon=9,
    input_s="101000001", input_a="111111011", input_r="000110001", input_s_="0",
    target_s="010100100", target_a="000010000", target_r="000000000", target_s_="1",
    operator="mse",
)  # fmt: skip
REQUIRED_PRESETS = (
    "a2_winner", "a2_winner_v", "curl", "forward_dynamics", "inverse_dynamics",
    "reward_prediction", "state_reconstruction", "action_inference",
)  # fmt: skip


def flags(**changes: object) -> dict[str, object]:
    """A2-winner's flags with some changed."""
    return {**A2_WINNER_FLAGS, **changes}


def random_spec(rng: random.Random) -> AuxLossSpec | None:
    """A random spec of the space, or None when the draw is invalid (empty set, pure copy...)."""
    horizon = rng.randint(1, 10)
    density = rng.uniform(0.05, 0.6)
    pick = [(kind, offset) for kind in "sar" for offset in range(horizon + (kind == "s")) if rng.random() < density]
    inputs = [element for element in pick if rng.random() < 0.5]
    targets = [element for element in pick if element not in inputs or rng.random() < 0.2]
    try:
        return AuxLossSpec(horizon, tuple(inputs), tuple(targets), rng.choice(OPERATORS), rng.random() < 0.5)
    except ValueError:
        return None


# --------------------------------------------------------------------------- flags decoding
def test_from_flags_decodes_a2_winner_exactly() -> None:
    spec = AuxLossSpec.from_flags(**A2_WINNER_FLAGS)
    # REFERENCES §1: {s_t, a_t..a_t+3, r_t, r_t+1, r_t+3} -> {s_t+1..s_t+4}
    assert spec.horizon == 4
    assert spec.inputs == (("s", 0), ("a", 0), ("a", 1), ("a", 2), ("a", 3), ("r", 0), ("r", 1), ("r", 3))
    assert spec.targets == (("s", 1), ("s", 2), ("s", 3), ("s", 4))
    assert (spec.operator, spec.negatives) == ("mse", False)
    assert spec.input_state_offsets == (0,)
    assert spec.target_state_offsets == (1, 2, 3, 4)
    assert spec == AuxLossSpec.preset("a2_winner")


def test_from_flags_decodes_a2_winner_v_exactly() -> None:
    spec = AuxLossSpec.from_flags(**A2_WINNER_V_FLAGS)
    # REFERENCES §1: {s_t, s_t+2, s_t+8, a_t..a_t+5, a_t+7, a_t+8, r_t+3, r_t+4, r_t+8}
    #   -> {s_t+1, s_t+3, s_t+6, s_t+9, a_t+4}
    assert spec.horizon == 9
    assert spec.inputs == (
        ("s", 0), ("s", 2), ("s", 8),
        ("a", 0), ("a", 1), ("a", 2), ("a", 3), ("a", 4), ("a", 5), ("a", 7), ("a", 8),
        ("r", 3), ("r", 4), ("r", 8),
    )  # fmt: skip
    assert spec.targets == (("s", 1), ("s", 3), ("s", 6), ("s", 9), ("a", 4))
    assert spec.input_state_offsets == (0, 2, 8)
    assert spec.target_state_offsets == (1, 3, 6, 9)
    assert (spec.input_action_offsets, spec.input_reward_offsets) == ((0, 1, 2, 3, 4, 5, 7, 8), (3, 4, 8))
    assert (spec.target_action_offsets, spec.target_reward_offsets) == ((4,), ())
    assert spec == AuxLossSpec.preset("a2_winner_v")


def test_from_flags_accepts_int_s_bits_and_official_operator_names() -> None:
    spec = AuxLossSpec.from_flags(**flags(input_s_=1, target_s_=1, operator="bilinear_inner_product", negatives=True))
    assert ("s", 4) in spec.inputs and ("s", 4) in spec.targets
    assert (spec.operator, spec.negatives) == ("bilinear", True)
    assert AuxLossSpec.from_flags(**flags(operator="cos_sim")).operator == "cosine"
    assert AuxLossSpec.from_flags(**flags(operator="inner_product")).operator == "inner"


@pytest.mark.parametrize("name", REQUIRED_PRESETS + ("spr",))
def test_to_flags_round_trips(name: str) -> None:
    spec = AuxLossSpec.preset(name)
    assert AuxLossSpec.from_flags(**spec.to_flags()) == spec
    assert AuxLossSpec.preset("a2_winner_v").to_flags() == {**A2_WINNER_V_FLAGS, "negatives": False}


# --------------------------------------------------------------------------- value semantics
def test_construction_normalises_order_and_duplicates() -> None:
    shuffled = AuxLossSpec(4, (("r", 3), ("a", 1), ("s", 0), ("a", 0), ("a", 0)), [["s", 4], ("s", 1)], "MSE")
    assert shuffled.inputs == (("s", 0), ("a", 0), ("a", 1), ("r", 3))
    assert shuffled.targets == (("s", 1), ("s", 4))
    assert shuffled.operator == "mse"
    assert shuffled == AuxLossSpec(4, (("s", 0), ("a", 0), ("a", 1), ("r", 3)), (("s", 1), ("s", 4)))


def test_specs_are_hashable_and_equal_by_content() -> None:
    first = AuxLossSpec.from_flags(**A2_WINNER_FLAGS)
    second = AuxLossSpec.parse("h=4 s0,a0,a1,a2,a3,r0,r1,r3 -> s1,s2,s3,s4 mse")
    assert first == second and hash(first) == hash(second) and first is not second
    table = {first: "winner"}
    assert table[second] == "winner"
    assert len({first, second, AuxLossSpec.preset("curl")}) == 2
    assert first != dataclasses.replace(first, negatives=True)
    assert first != dataclasses.replace(first, operator="nmse")


def test_specs_are_immutable() -> None:
    spec = AuxLossSpec.preset("curl")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.horizon = 2  # type: ignore[misc]


# --------------------------------------------------------------------------- text form
def test_str_is_compact_and_readable() -> None:
    assert str(AuxLossSpec.preset("a2_winner_v")) == "h=9 s0,s2,s8,a0-a5,a7,a8,r3,r4,r8 -> s1,s3,s6,s9,a4 mse"
    assert str(AuxLossSpec.preset("curl")) == "h=1 s0 -> s0 bilinear +neg"
    assert repr(AuxLossSpec.preset("curl")) == "AuxLossSpec('h=1 s0 -> s0 bilinear +neg')"


@pytest.mark.parametrize("name", sorted(AuxLossSpec.presets()))
def test_parse_round_trips_presets(name: str) -> None:
    spec = AuxLossSpec.preset(name)
    assert AuxLossSpec.parse(str(spec)) == spec


def test_parse_round_trips_many_random_specs() -> None:
    rng = random.Random(0)
    specs = [spec for spec in (random_spec(rng) for _ in range(3000)) if spec is not None]
    assert len(specs) > 1000  # the generator mostly draws valid specs
    assert any(spec.negatives for spec in specs) and {spec.operator for spec in specs} == set(OPERATORS)
    for spec in specs:
        text = str(spec)
        assert "\n" not in text
        assert AuxLossSpec.parse(text) == spec, text


def test_parse_is_lenient_about_spacing_arrows_ranges_and_default_operator() -> None:
    assert AuxLossSpec.parse("  h=1  s0, a0 → s1 ") == AuxLossSpec.preset("forward_dynamics")
    assert AuxLossSpec.parse("h=4 s0,a0-3,r0,r1,r3->s1-s4") == AuxLossSpec.preset("a2_winner")
    assert AuxLossSpec.parse("h=1 s0 -> s0 bilinear +negatives") == AuxLossSpec.preset("curl")


@pytest.mark.parametrize(
    "text",
    ["s0 -> s1 mse", "h=1 s0 s1 mse", "h=1 s0 -> s1 -> s0", "h=x s0 -> s1", "h=2 s0,q1 -> s1", "h=3 s0,a2-a1 -> s1",
     "h=3 s0,a0-r2 -> s1"],
)  # fmt: skip
def test_parse_rejects_malformed_text_naming_the_field(text: str) -> None:
    with pytest.raises(ValueError, match=r"^text: ") as error:
        AuxLossSpec.parse(text)
    assert "\n" not in str(error.value)


def test_coerce_accepts_spec_preset_name_text_and_flags() -> None:
    winner = AuxLossSpec.preset("a2_winner")
    assert AuxLossSpec.coerce(winner) is winner
    assert AuxLossSpec.coerce("a2_winner") == winner
    assert AuxLossSpec.coerce(str(winner)) == winner
    assert AuxLossSpec.coerce(A2_WINNER_FLAGS) == winner
    with pytest.raises(ValueError, match="a2_winner"):
        AuxLossSpec.coerce(3)
    with pytest.raises(ValueError, match="^unknown preset 'no_such_preset'; presets: a2_winner, "):
        AuxLossSpec.coerce("no_such_preset")
    with pytest.raises(ValueError, match="^text: "):  # the text form, malformed
        AuxLossSpec.coerce("h=1 s0 -> -> s1 mse")


# --------------------------------------------------------------------------- presets
def test_presets_include_the_required_ones_and_are_valid_specs() -> None:
    presets = AuxLossSpec.presets()
    assert set(REQUIRED_PRESETS) <= set(presets)
    assert all(isinstance(spec, AuxLossSpec) for spec in presets.values())
    presets.clear()  # a fresh dict: clearing it changes nothing
    assert set(REQUIRED_PRESETS) <= set(AuxLossSpec.presets())


def test_classic_presets_follow_their_definitions() -> None:
    presets = AuxLossSpec.presets()
    assert presets["curl"] == AuxLossSpec(1, (("s", 0),), (("s", 0),), "bilinear", negatives=True)
    assert presets["forward_dynamics"] == AuxLossSpec(1, (("s", 0), ("a", 0)), (("s", 1),))
    assert presets["inverse_dynamics"] == AuxLossSpec(1, (("s", 0), ("s", 1)), (("a", 0),))
    assert presets["reward_prediction"] == AuxLossSpec(1, (("s", 0), ("a", 0)), (("r", 0),))
    assert presets["state_reconstruction"] == AuxLossSpec(1, (("s", 0),), (("s", 0),))
    assert presets["action_inference"] == AuxLossSpec(1, (("s", 0),), (("a", 0),))


def test_unknown_preset_names_the_field_and_lists_the_presets() -> None:
    with pytest.raises(ValueError, match=r"^preset: .*'nope'.*a2_winner, a2_winner_v, curl"):
        AuxLossSpec.preset("nope")


def test_the_losses_table_lists_every_preset() -> None:
    from a2ls_lightning.modules.aux_registry import format_losses_table

    table = format_losses_table()
    lines = table.splitlines()
    assert lines[0].split() == ["name", "horizon", "inputs", "->", "targets", "operator"]
    presets = lines[: lines.index("")]
    assert len(presets) == 2 + len(AuxLossSpec.presets())
    assert "known to HURT" in table and "adversarial" in table and "noise_target" in table  # listed apart
    assert any(line.split() == ["a2_winner", "4", "s0,a0-a3,r0,r1,r3", "->", "s1-s4", "mse"] for line in lines)
    assert any(line.split() == ["curl", "1", "s0", "->", "s0", "bilinear", "+neg"] for line in lines)


def test_required_window_is_max_horizon_plus_one() -> None:
    winner, winner_v, curl = (AuxLossSpec.preset(name) for name in ("a2_winner", "a2_winner_v", "curl"))
    assert required_window([winner, curl]) == 5
    assert required_window([curl, winner_v, winner]) == 10
    assert required_window(curl) == 2
    assert required_window(["a2_winner"]) == 5
    assert required_window([]) == 0


# --------------------------------------------------------------------------- validation (one test per rule)
def assert_one_line_error(error: pytest.ExceptionInfo[ValueError], *fragments: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_mask_length_must_match_horizon() -> None:
    with pytest.raises(ValueError, match=r"^input_a: ") as error:
        AuxLossSpec.from_flags(**flags(input_a="111"))
    assert_one_line_error(error, "'111'", "expected 4 (the horizon)", "'0' or '1'")
    with pytest.raises(ValueError, match=r"^target_s_: ") as error:
        AuxLossSpec.from_flags(**flags(target_s_="10"))
    assert_one_line_error(error, "expected 1 (the s_ bit)")


def test_mask_characters_must_be_0_or_1() -> None:
    with pytest.raises(ValueError, match=r"^target_s: ") as error:
        AuxLossSpec.from_flags(**flags(target_s="01x1"))
    assert_one_line_error(error, "'01x1'", "allowed: 0, 1")


def test_unquoted_yaml_masks_are_refused_with_a_hint() -> None:
    with pytest.raises(ValueError, match=r"^input_s: ") as error:
        AuxLossSpec.from_flags(**flags(input_s=1000))
    assert_one_line_error(error, "quote it in YAML")


def test_input_set_must_not_be_empty() -> None:
    with pytest.raises(ValueError, match=r"^inputs: ") as error:
        AuxLossSpec.from_flags(**flags(input_s="0000", input_a="0000", input_r="0000"))
    assert_one_line_error(error, "empty", "input_s")


def test_target_set_must_not_be_empty() -> None:
    with pytest.raises(ValueError, match=r"^targets: ") as error:
        AuxLossSpec.from_flags(**flags(target_s="0000", target_s_="0"))
    assert_one_line_error(error, "empty", "target_s")


def test_inputs_must_contain_a_state() -> None:
    with pytest.raises(ValueError, match=r"^inputs: ") as error:
        AuxLossSpec.from_flags(**flags(input_s="0000"))
    assert_one_line_error(error, "at least one state", "s0..s4")


def test_operator_must_be_known() -> None:
    with pytest.raises(ValueError, match=r"^operator: ") as error:
        AuxLossSpec.from_flags(**flags(operator="l1"))
    assert_one_line_error(error, "'l1'", "mse, nmse, inner, bilinear, cosine")


def test_horizon_must_be_at_least_one() -> None:
    with pytest.raises(ValueError, match=r"^horizon: ") as error:
        AuxLossSpec.from_flags(**flags(horizon=0))
    assert_one_line_error(error, ">= 1", "0")
    with pytest.raises(ValueError, match=r"^horizon: "):
        AuxLossSpec.parse("h=-2 s0 -> s1")


def test_pure_copy_with_a_raw_target_is_rejected_even_with_negatives() -> None:
    for operator, negatives in (("mse", False), ("bilinear", True)):
        with pytest.raises(ValueError, match=r"^targets: ") as error:
            AuxLossSpec(1, (("s", 0), ("a", 0)), (("a", 0),), operator, negatives)
        assert_one_line_error(error, "pure copy", "a0")
    with pytest.raises(ValueError, match=r"^targets: .*pure copy.*r0"):
        AuxLossSpec.parse("h=1 s0,r0 -> s0,r0 mse")


def test_pure_copy_of_states_only_is_allowed_as_two_view_self_prediction() -> None:
    # The documented exception: a copied state is compared across encoders (online vs EMA) and crops.
    assert AuxLossSpec.preset("curl").targets == AuxLossSpec.preset("curl").inputs
    assert AuxLossSpec.preset("state_reconstruction").operator == "mse"
    AuxLossSpec.parse("h=2 s0,s1,a0 -> s0,s1 cosine")
    # A partial overlap is not a copy: A2-winner-v has a_t+4 in both sets.
    assert ("a", 4) in AuxLossSpec.preset("a2_winner_v").inputs


def test_elements_must_be_in_range_and_of_known_kind() -> None:
    with pytest.raises(ValueError, match=r"^inputs: ") as error:
        AuxLossSpec(2, (("s", 0), ("a", 2)), (("s", 1),))
    assert_one_line_error(error, "0..2", "0..1")
    with pytest.raises(ValueError, match=r"^targets: ") as error:
        AuxLossSpec(2, (("s", 0),), (("x", 1),))
    assert_one_line_error(error, "'x'", "s, a, r")


def test_negatives_must_be_boolean() -> None:
    with pytest.raises(ValueError, match=r"^negatives: "):
        AuxLossSpec(1, (("s", 0),), (("s", 1),), "mse", "yes")  # type: ignore[arg-type]
