"""The A2LS auxiliary-loss space: :class:`AuxLossSpec`, its text form, flags and presets.

A loss is a horizon ``H``, a set of input elements, a set of target elements and an operator
(A2LS, He et al. 2022, arXiv 2210.06041, §4.1). Elements come from a window of ``H`` transitions starting at step ``t``:
``("s", i)`` is the state ``s[t+i]`` for ``i`` in ``0..H`` (``i = H`` is the official ``s_`` bit),
``("a", i)`` and ``("r", i)`` the action and reward at ``t+i`` for ``i`` in ``0..H-1``.

Text form (one YAML or command-line value), written by ``str(spec)`` and read by
:meth:`AuxLossSpec.parse`::

    h=<H> <inputs> -> <targets> <operator>[ +neg]
    h=9 s0,s2,s8,a0-a5,a7,a8,r3,r4,r8 -> s1,s3,s6,s9,a4 mse

Elements are ``<kind><offset>``, comma-separated; runs of three or more are written ``a0-a5``. Validation rules (each a one-line ``ValueError`` naming the field and the allowed values):
horizon an integer ≥ 1; a known operator; every mask ``H`` characters of ``0``/``1`` (``s_``
one character); non-empty input and target sets; at least one input state (otherwise no gradient
reaches the encoder and the loss trains only its own predictor); and no *pure copy*.

Pure-copy rule. A target set wholly contained in the inputs is rejected **if any target is an action or a
reward**: it goes in raw and comes out raw, so an identity predictor reproduces it and the encoder learns nothing. A
copy made of states only is allowed: the copied state enters through the online encoder and is compared with the
EMA encoder's features of it (on pixels, of another random crop), as in CURL (``{s_t}→{s_t}``, bilinear, negatives)
and state reconstruction (``{s_t}→{s_t}``, mse), a pattern of the paper's statistics.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from a2ls_lightning.modules.aux_presets import PRESET_TEXTS
from a2ls_lightning.validation import did_you_mean

__all__ = ["PRESET_TEXTS", "AuxLossSpec", "Element", "format_spec_table", "required_window"]


#: Operator names, in the order the documentation lists them.
OPERATORS: tuple[str, ...] = ("mse", "nmse", "inner", "bilinear", "cosine")

#: The official code's ``--similarity_metric`` names, accepted as aliases.
OPERATOR_ALIASES: dict[str, str] = {
    "inner_product": "inner",
    "bilinear_inner_product": "bilinear",
    "cos_sim": "cosine",
}


def canonical_operator(operator: object) -> str:
    """Return the canonical operator name for ``operator`` (an official alias is translated).

    Raises:
        ValueError: naming the field ``operator`` and the allowed values when it is unknown.
    """
    name = operator.strip().lower() if isinstance(operator, str) else operator
    name = OPERATOR_ALIASES.get(name, name) if isinstance(name, str) else name
    if name not in OPERATORS:
        raise ValueError(f"operator: unknown operator {operator!r}; allowed: {', '.join(OPERATORS)}")
    return name

#: An element of the space: ``(kind, offset)`` with kind ``"s"``, ``"a"`` or ``"r"``.
Element = tuple[str, int]

KINDS: tuple[str, ...] = ("s", "a", "r")
_KIND_RANK = {kind: rank for rank, kind in enumerate(KINDS)}
_ELEMENT_RE = re.compile(r"^([sar])(\d+)(?:-([sar])?(\d+))?$")
_NEGATIVES_TOKENS = ("+neg", "+negatives")


def _check_horizon(horizon: object) -> int:
    # bool is an int subclass; True as a horizon is a mistake, not 1.
    if isinstance(horizon, str) and horizon.strip().isdigit():
        horizon = int(horizon)
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"horizon: must be an integer >= 1, got {horizon!r}")
    return horizon


def _normalise_elements(field: str, elements: object, horizon: int) -> tuple[Element, ...]:
    """Validate ``elements`` and return them deduplicated in canonical order (s, a, r; by offset)."""
    if isinstance(elements, str) or not isinstance(elements, Iterable):
        raise ValueError(f"{field}: expected a collection of (kind, offset) pairs, got {elements!r}")
    result = set()
    for element in elements:
        pair = tuple(element) if isinstance(element, Iterable) and not isinstance(element, str) else ()
        if len(pair) != 2:
            raise ValueError(f"{field}: expected (kind, offset) pairs, got {element!r}")
        kind, offset = pair
        if kind not in _KIND_RANK:
            raise ValueError(f"{field}: unknown kind {kind!r} in {pair!r}; allowed: s, a, r")
        last = horizon if kind == "s" else horizon - 1
        if not isinstance(offset, bool) and hasattr(offset, "__index__"):
            offset = offset.__index__()  # numpy integers from a search are fine
        if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= last:
            raise ValueError(
                f"{field}: offset of {pair!r} out of range; with horizon {horizon} states take "
                f"0..{horizon}, actions and rewards 0..{horizon - 1}"
            )
        result.add((kind, offset))
    return tuple(sorted(result, key=lambda item: (_KIND_RANK[item[0]], item[1])))


def _format_elements(elements: Iterable[Element]) -> str:
    """``(("a",0),("a",1),("a",2),("a",5))`` → ``"a0-a2,a5"`` (runs of three or more compressed)."""
    pieces: list[str] = []
    run: list[Element] = []

    def flush() -> None:
        if len(run) >= 3:
            pieces.append(f"{run[0][0]}{run[0][1]}-{run[-1][0]}{run[-1][1]}")
        else:
            pieces.extend(f"{kind}{offset}" for kind, offset in run)
        run.clear()

    for element in elements:
        if run and (element[0] != run[-1][0] or element[1] != run[-1][1] + 1):
            flush()
        run.append(element)
    flush()
    return ",".join(pieces)


def _parse_elements(text: str, whole: str) -> list[Element]:
    elements: list[Element] = []
    for token in filter(None, re.split(r"[,\s]+", text)):
        match = _ELEMENT_RE.match(token)
        if match is None or (match.group(3) not in (None, match.group(1))):
            raise ValueError(f"text: bad element {token!r} in {whole!r}; expected e.g. s0, a1-a3, r2")
        kind, first = match.group(1), int(match.group(2))
        last = int(match.group(4)) if match.group(4) is not None else first
        if last < first:
            raise ValueError(f"text: empty range {token!r} in {whole!r}")
        elements.extend((kind, offset) for offset in range(first, last + 1))
    return elements


def _decode_mask(field: str, mask: object, length: int) -> list[int]:
    """Offsets selected by an official bit string; ``length`` is H (or 1 for an ``s_`` bit)."""
    if length == 1 and not isinstance(mask, bool) and mask in (0, 1):
        mask = str(mask)
    if not isinstance(mask, str):
        # YAML reads 1000 as an int and 0111 as octal: the leading zeros are already lost.
        raise ValueError(f"{field}: expected a string of {length} characters '0'/'1' (quote it in YAML), got {mask!r}")
    if len(mask) != length:
        expected = "1 (the s_ bit)" if length == 1 else f"{length} (the horizon)"
        raise ValueError(f"{field}: {mask!r} has {len(mask)} characters; expected {expected}, each '0' or '1'")
    if set(mask) - {"0", "1"}:
        raise ValueError(f"{field}: {mask!r} has a character other than '0'/'1'; allowed: 0, 1")
    return [offset for offset, bit in enumerate(mask) if bit == "1"]


@dataclass(frozen=True, repr=False)
class AuxLossSpec:
    """One auxiliary loss of the A2LS space: an immutable, hashable value compared by content.

    Construction normalises (deduplicates and orders states, actions, rewards, each by offset;
    translates official operator aliases) and validates; see the module docstring for the rules.

    Args:
        horizon: window length ``H`` in transitions (≥ 1); the window holds ``H + 1`` states.
        inputs: ``(kind, offset)`` elements fed to the predictor (states through the online encoder).
        targets: ``(kind, offset)`` elements to predict (states through the EMA target encoder).
        operator: one of ``mse``, ``nmse``, ``inner``, ``bilinear``, ``cosine``.
        negatives: contrast against the other samples of the batch.

    Examples:
        >>> spec = AuxLossSpec.preset("a2_winner")
        >>> str(spec)
        'h=4 s0,a0-a3,r0,r1,r3 -> s1-s4 mse'
        >>> spec.input_state_offsets, spec.target_state_offsets
        ((0,), (1, 2, 3, 4))
        >>> AuxLossSpec.parse(str(spec)) == spec
        True
    """

    horizon: int
    inputs: tuple[Element, ...]
    targets: tuple[Element, ...]
    operator: str = "mse"
    negatives: bool = False

    def __post_init__(self) -> None:
        horizon = _check_horizon(self.horizon)
        operator = canonical_operator(self.operator)
        if self.negatives not in (True, False):
            raise ValueError(f"negatives: must be a boolean, got {self.negatives!r}")
        inputs = _normalise_elements("inputs", self.inputs, horizon)
        targets = _normalise_elements("targets", self.targets, horizon)
        if not inputs:
            raise ValueError("inputs: the input set is empty; select at least one element (input_s/a/r/s_ all zero)")
        if not targets:
            raise ValueError("targets: the target set is empty; select at least one element (target_s/a/r/s_ all zero)")
        if not any(kind == "s" for kind, _ in inputs):
            raise ValueError(
                f"inputs: needs at least one state (s0..s{horizon}); without one no gradient reaches the encoder"
            )
        raw_targets = [f"{kind}{offset}" for kind, offset in targets if kind != "s"]
        if set(targets) <= set(inputs) and raw_targets:
            raise ValueError(
                f"targets: every target is also an input (a pure copy) and {','.join(raw_targets)} would be "
                "copied raw by an identity predictor; add a target not in the inputs (state-only copies are allowed)"
            )
        # Frozen dataclass: normalised values are written through object.__setattr__.
        object.__setattr__(self, "horizon", horizon)
        object.__setattr__(self, "operator", operator)
        object.__setattr__(self, "negatives", bool(self.negatives))
        object.__setattr__(self, "inputs", inputs)
        object.__setattr__(self, "targets", targets)

    # ----------------------------------------------------------------------------- offsets
    def _offsets(self, elements: tuple[Element, ...], kind: str) -> tuple[int, ...]:
        return tuple(offset for element_kind, offset in elements if element_kind == kind)

    @property
    def input_state_offsets(self) -> tuple[int, ...]:
        """Offsets of the input states, in the order of ``AuxLoss``'s ``input_states`` argument."""
        return self._offsets(self.inputs, "s")

    @property
    def target_state_offsets(self) -> tuple[int, ...]:
        """Offsets of the target states, in the order of ``AuxLoss``'s ``target_states`` argument."""
        return self._offsets(self.targets, "s")

    @property
    def input_action_offsets(self) -> tuple[int, ...]:
        """Offsets of the input actions (each in ``0..H-1``)."""
        return self._offsets(self.inputs, "a")

    @property
    def input_reward_offsets(self) -> tuple[int, ...]:
        """Offsets of the input rewards (each in ``0..H-1``)."""
        return self._offsets(self.inputs, "r")

    @property
    def target_action_offsets(self) -> tuple[int, ...]:
        """Offsets of the target actions (each in ``0..H-1``)."""
        return self._offsets(self.targets, "a")

    @property
    def target_reward_offsets(self) -> tuple[int, ...]:
        """Offsets of the target rewards (each in ``0..H-1``)."""
        return self._offsets(self.targets, "r")

    # ----------------------------------------------------------------------------- flags
    @classmethod
    def from_flags(
        cls,
        horizon: int,
        input_s: str,
        input_a: str,
        input_r: str,
        input_s_: str | int,
        target_s: str,
        target_a: str,
        target_r: str,
        target_s_: str | int,
        operator: str = "mse",
        negatives: bool = False,
    ) -> AuxLossSpec:
        """Build a spec from the official A2LS flags (``--auxi_pred_*``; ``output`` is ``target`` here).

        Args:
            horizon: ``--auxi_pred_horizon``.
            input_s: bit string of length ``H``; bit ``i`` selects ``s[t+i]``. Likewise for the others.
            input_a: input actions bit string.
            input_r: input rewards bit string.
            input_s_: ``"0"``/``"1"`` (or 0/1): whether ``s[t+H]`` is an input.
            target_s: target states bit string.
            target_a: target actions bit string.
            target_r: target rewards bit string.
            target_s_: whether ``s[t+H]`` is a target.
            operator: ``--similarity_metric`` (official names such as ``cos_sim`` accepted).
            negatives: ``--penalize_negative``.

        Examples:
            >>> AuxLossSpec.from_flags(4, "1000", "1111", "1101", "0", "0111", "0000", "0000", "1")
            AuxLossSpec('h=4 s0,a0-a3,r0,r1,r3 -> s1-s4 mse')
        """
        horizon = _check_horizon(horizon)

        def elements(prefix: str, s: object, a: object, r: object, s_: object) -> list[Element]:
            chosen = [("s", i) for i in _decode_mask(f"{prefix}_s", s, horizon)]
            chosen += [("a", i) for i in _decode_mask(f"{prefix}_a", a, horizon)]
            chosen += [("r", i) for i in _decode_mask(f"{prefix}_r", r, horizon)]
            return chosen + [("s", horizon)] * len(_decode_mask(f"{prefix}_s_", s_, 1))

        return cls(
            horizon=horizon,
            inputs=tuple(elements("input", input_s, input_a, input_r, input_s_)),
            targets=tuple(elements("target", target_s, target_a, target_r, target_s_)),
            operator=operator,
            negatives=negatives,
        )

    def to_flags(self) -> dict[str, object]:
        """The official flags of this spec; ``AuxLossSpec.from_flags(**spec.to_flags()) == spec``."""
        flags: dict[str, object] = {"horizon": self.horizon}
        for prefix, elements in (("input", set(self.inputs)), ("target", set(self.targets))):
            for kind in KINDS:
                flags[f"{prefix}_{kind}"] = "".join("1" if (kind, i) in elements else "0" for i in range(self.horizon))
            flags[f"{prefix}_s_"] = "1" if ("s", self.horizon) in elements else "0"
        flags.update(operator=self.operator, negatives=self.negatives)
        return flags

    # ----------------------------------------------------------------------------- text
    @property
    def window(self) -> int:
        """Consecutive states a replay window must hold for this loss: ``horizon + 1`` (what
        :mod:`a2ls_lightning.modules.aux_registry` asks of every recipe)."""
        return self.horizon + 1

    def __str__(self) -> str:
        negatives = " +neg" if self.negatives else ""
        loss = f"{_format_elements(self.inputs)} -> {_format_elements(self.targets)}"
        return f"h={self.horizon} {loss} {self.operator}{negatives}"

    def __repr__(self) -> str:
        return f"AuxLossSpec({str(self)!r})"

    @classmethod
    def parse(cls, text: str) -> AuxLossSpec:
        """Read the text form written by ``str(spec)``.

        Lenient where it costs nothing: ``→`` for ``->``, spaces after commas, ``a0-5`` for
        ``a0-a5``, the operator may be left out (``mse``), ``+negatives`` for ``+neg``.

        Examples:
            >>> AuxLossSpec.parse("h=1 s0, a0 -> s1")
            AuxLossSpec('h=1 s0,a0 -> s1 mse')
        """
        if not isinstance(text, str):
            raise ValueError(f"text: expected a string like 'h=1 s0,a0 -> s1 mse', got {text!r}")
        sides = text.replace("→", "->").split("->")
        if len(sides) != 2:
            raise ValueError(f"text: expected exactly one '->' between inputs and targets in {text!r}")
        left, right = sides[0].split(), sides[1].split()
        if not left or not re.fullmatch(r"h=-?\d+", left[0]):
            raise ValueError(f"text: must start with h=<horizon>, e.g. 'h=1 s0,a0 -> s1 mse'; got {text!r}")
        negatives = bool(right) and right[-1] in _NEGATIVES_TOKENS
        right = right[:-1] if negatives else right
        operator = "mse"
        if right and not _ELEMENT_RE.match(right[-1].strip(",")):
            operator = right.pop()
        return cls(
            horizon=int(left[0][2:]),
            inputs=tuple(_parse_elements(" ".join(left[1:]), text)),
            targets=tuple(_parse_elements(" ".join(right), text)),
            operator=operator,
            negatives=negatives,
        )

    @classmethod
    def coerce(cls, value: AuxLossSpec | str | Mapping[str, object]) -> AuxLossSpec:
        """Accept a spec, a preset name, the text form, or a mapping of official flags."""
        if isinstance(value, AuxLossSpec):
            return value
        if isinstance(value, str):
            presets = cls.presets()
            name = value.strip()
            if name in presets:
                return presets[name]
            if "->" not in name and "→" not in name:  # a name, not the text form: say which names exist
                raise ValueError(f"unknown preset {name!r}; presets: {', '.join(presets)} (see `a2ls losses`), "
                                 f"or the text form, e.g. 'h=1 s0,a0 -> s1 mse'{did_you_mean(name, presets)}")
            return cls.parse(value)
        if isinstance(value, Mapping):
            return cls.from_flags(**value)
        raise ValueError(
            f"aux_loss: expected an AuxLossSpec, a preset name ({', '.join(PRESET_TEXTS)}), "
            f"a text like 'h=1 s0,a0 -> s1 mse' or a mapping of flags; got {value!r}"
        )

    # ----------------------------------------------------------------------------- presets
    @classmethod
    def presets(cls) -> dict[str, AuxLossSpec]:
        """All presets, name → spec (a fresh dict; mutating it changes nothing)."""
        return {name: cls.parse(text) for name, text in PRESET_TEXTS.items()}

    @classmethod
    def preset(cls, name: str) -> AuxLossSpec:
        """The preset called ``name``; see :data:`PRESET_TEXTS` for their definitions."""
        if name not in PRESET_TEXTS:
            raise ValueError(f"preset: unknown preset {name!r}; allowed: {', '.join(PRESET_TEXTS)}"
                             f"{did_you_mean(name, PRESET_TEXTS)}")
        return cls.parse(PRESET_TEXTS[name])


def required_window(specs: AuxLossSpec | Iterable[AuxLossSpec]) -> int:
    """Consecutive states a batch window must hold to serve every spec: ``max horizon + 1``.

    Args:
        specs: one spec or several (a spec with horizon ``H`` reads states ``t..t+H``).

    Returns:
        ``max(spec.horizon) + 1``, or 0 when ``specs`` is empty (no auxiliary window needed).

    Examples:
        >>> required_window([AuxLossSpec.preset("a2_winner"), AuxLossSpec.preset("curl")])
        5
    """
    if isinstance(specs, AuxLossSpec):
        specs = (specs,)
    horizons = [AuxLossSpec.coerce(spec).horizon for spec in specs]
    return max(horizons) + 1 if horizons else 0


def format_spec_table() -> str:
    """A plain-text table of the presets: name, horizon, inputs -> targets, operator (``a2ls losses`` adds the
    registered losses: :func:`a2ls_lightning.modules.aux_registry.format_losses_table`)."""
    header = ("name", "horizon", "inputs -> targets", "operator")
    rows = [header]
    for name, spec in AuxLossSpec.presets().items():
        loss = f"{_format_elements(spec.inputs)} -> {_format_elements(spec.targets)}"
        rows.append((name, str(spec.horizon), loss, spec.operator + (" +neg" if spec.negatives else "")))
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)

