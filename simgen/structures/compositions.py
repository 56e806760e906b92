"""Compositions: the chemistry of a particle, parsed from strings such as ``"L10:FePt"``.

Syntax (``parse_composition``): ``Pt`` (one element); ``Fe0.5Pt0.5`` or ``alloy:Fe=0.5,Pt=0.5``
(random substitutional alloy); ``L10:FePt`` / ``L12:Pt3Co`` (chemically ordered on the fcc
lattice); ``core-shell:Ni@Pt`` (optionally ``,shell=2ml`` or ``,shell=3.5A``); ``hea:Fe,Co,Ni,Cr``
(random high-entropy alloy, 3–5 elements, equal fractions unless given).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

__all__ = ["COMPOSITION_KINDS", "Composition", "parse_composition"]

COMPOSITION_KINDS: tuple[str, ...] = ("element", "alloy", "L10", "L12", "core-shell", "hea")

_MAX_HEA_ELEMENTS = 5


@dataclass(frozen=True)
class Composition:
    """The chemistry of a particle, parsed from a string by :func:`parse_composition`.

    Attributes
    ----------
    kind
        One of ``COMPOSITION_KINDS``: ``"element"``, ``"alloy"`` (random substitutional alloy),
        ``"L10"`` / ``"L12"`` (chemically ordered on the fcc lattice), ``"core-shell"``,
        ``"hea"`` (random high-entropy alloy).
    fractions
        Nominal atomic fractions as ``((symbol, fraction), ...)`` sorted by symbol. For
        ``"core-shell"`` the fractions depend on the particle size and are left empty.
    core, shell
        Element symbols of a core–shell particle (``None`` otherwise).
    shell_monolayers
        Shell thickness in atomic monolayers (core–shell only; default 1).
    shell_thickness
        Shell thickness in Å, used instead of ``shell_monolayers`` when set (core–shell only).
    """

    kind: str
    fractions: tuple[tuple[str, float], ...] = ()
    core: str | None = None
    shell: str | None = None
    shell_monolayers: int = 1
    shell_thickness: float | None = None

    @property
    def elements(self) -> tuple[str, ...]:
        """Sorted tuple of the element symbols present."""
        if self.kind == "core-shell":
            return tuple(sorted({self.core, self.shell}))
        return tuple(symbol for symbol, _ in self.fractions)

    @property
    def is_ordered(self) -> bool:
        """True for the chemically ordered phases (L1₀, L1₂)."""
        return self.kind in ("L10", "L12")

    def fraction(self, symbol: str) -> float:
        """Nominal atomic fraction of ``symbol`` (0 if absent; not defined for core–shell)."""
        if self.kind == "core-shell":
            raise ValueError(
                f"composition={self.label!r}: core-shell fractions depend on the particle size"
            )
        return dict(self.fractions).get(symbol, 0.0)

    @property
    def label(self) -> str:
        """Canonical string; ``parse_composition(c.label) == c``."""
        if self.kind == "element":
            return self.fractions[0][0]
        if self.kind == "L10":
            return "L10:" + "".join(self.elements)
        if self.kind == "L12":
            (major, _), (minor, _) = sorted(self.fractions, key=lambda item: -item[1])
            return f"L12:{major}3{minor}"
        if self.kind == "core-shell":
            label = f"core-shell:{self.core}@{self.shell}"
            if self.shell_thickness is not None:
                return label + f",shell={self.shell_thickness:g}A"
            if self.shell_monolayers != 1:
                return label + f",shell={self.shell_monolayers}ml"
            return label
        values = [fraction for _, fraction in self.fractions]
        if self.kind == "hea" and np.allclose(values, 1.0 / len(values), atol=1e-9):
            return "hea:" + ",".join(self.elements)
        body = ",".join(f"{symbol}={fraction:.10g}" for symbol, fraction in self.fractions)
        return f"{self.kind}:{body}"

    def __str__(self) -> str:
        return self.label


_KIND_ALIASES = {
    "alloy": "alloy",
    "random": "alloy",
    "l10": "L10",
    "l1_0": "L10",
    "l12": "L12",
    "l1_2": "L12",
    "core-shell": "core-shell",
    "coreshell": "core-shell",
    "core_shell": "core-shell",
    "hea": "hea",
}

_FORMULA_TOKEN = re.compile(r"([A-Z][a-z]?)(\d+(?:\.\d*)?|\.\d+)?")


def _check_element(symbol: str, text: str) -> str:
    from ase.data import atomic_numbers

    if symbol not in atomic_numbers or symbol == "X":
        raise ValueError(
            f"composition={text!r}: unknown element {symbol!r}; expected a chemical symbol such as 'Pt'"
        )
    return symbol


def _parse_formula(body: str, text: str) -> list[tuple[str, float | None]]:
    """``"Fe0.5Pt0.5"`` -> ``[("Fe", 0.5), ("Pt", 0.5)]``; a missing amount gives ``None``."""
    body = body.strip()
    tokens = []
    position = 0
    for match in _FORMULA_TOKEN.finditer(body):
        if match.start() != position:
            break
        tokens.append((match.group(1), None if match.group(2) is None else float(match.group(2))))
        position = match.end()
    if not tokens or position != len(body):
        raise ValueError(
            f"composition={text!r}: cannot read {body!r} as a formula; expected e.g. 'Pt', 'Fe0.5Pt0.5'"
        )
    symbols = [symbol for symbol, _ in tokens]
    for symbol in symbols:
        _check_element(symbol, text)
    if len(set(symbols)) != len(symbols):
        raise ValueError(f"composition={text!r}: an element appears twice")
    return tokens


def _parse_assignments(body: str, text: str) -> list[tuple[str, float | None]]:
    """``"Fe=0.3,Pt=0.7"`` or ``"Fe,Pt"`` -> ``[(symbol, fraction or None), ...]``."""
    items = []
    for item in body.split(","):
        item = item.strip()
        if not item:
            raise ValueError(f"composition={text!r}: empty item; expected 'El=fraction,...'")
        if "=" in item:
            symbol, value = (part.strip() for part in item.split("=", 1))
            try:
                fraction = float(value)
            except ValueError:
                raise ValueError(
                    f"composition={text!r}: fraction {value!r} of {symbol} is not a number"
                ) from None
        else:
            symbol, fraction = item, None
        items.append((_check_element(symbol, text), fraction))
    symbols = [symbol for symbol, _ in items]
    if len(set(symbols)) != len(symbols):
        raise ValueError(f"composition={text!r}: an element appears twice")
    return items


def _checked_fractions(
    items: list[tuple[str, float | None]], text: str
) -> tuple[tuple[str, float], ...]:
    fractions = [fraction for _, fraction in items]
    if any(fraction is None for fraction in fractions):
        raise ValueError(
            f"composition={text!r}: every element needs a fraction (or use 'hea:' for equimolar)"
        )
    if any(not np.isfinite(f) or f <= 0 for f in fractions):
        raise ValueError(f"composition={text!r}: fractions must be positive, got {fractions}")
    total = float(sum(fractions))
    if abs(total - 1.0) > 1e-6:
        listed = ", ".join(f"{symbol}={fraction:g}" for symbol, fraction in items)
        raise ValueError(
            f"composition={text!r}: fractions {listed} sum to {total:.8g}; expected 1 (within 1e-6)"
        )
    return tuple(sorted((symbol, float(fraction)) for symbol, fraction in items))


def _parse_shell_option(value: str, text: str) -> tuple[int, float | None]:
    value = value.strip().lower()
    match = re.fullmatch(r"(\d+)\s*ml", value)
    if match:
        monolayers = int(match.group(1))
        if monolayers < 1:
            raise ValueError(
                f"composition={text!r}: shell={value!r}: expected at least 1 monolayer"
            )
        return monolayers, None
    match = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*(a|å|angstrom)?", value)
    if match:
        return 1, float(match.group(1))
    raise ValueError(
        f"composition={text!r}: shell={value!r}: expected monolayers like '2ml' or Å like '4.5A'"
    )


def parse_composition(text: str | Composition) -> Composition:
    """Parse a composition string (readable in YAML).

    Grammar
    -------
    ``"Pt"``
        One element.
    ``"Fe0.5Pt0.5"``, ``"alloy:Fe=0.3,Pt=0.7"``
        Random substitutional alloy; fractions must sum to 1 within 1e-6.
    ``"L10:FePt"``, ``"L10:CoPt"``
        L1₀ order on the fcc lattice: alternating (001) planes of the two elements.
    ``"L12:Pt3Co"`` (or ``"L12:CoPt3"``)
        L1₂ order A₃B: B on the cube corners, A on the face centres.
    ``"core-shell:Pd@Pt"``, ``"core-shell:Pd@Pt,shell=2ml"``, ``"core-shell:Pd@Pt,shell=4.5A"``
        Core element @ shell element; shell thickness in monolayers (default 1) or in Å.
    ``"hea:Fe,Co,Ni,Cu,Pt"``, ``"hea:Fe=0.3,Co=0.2,..."``
        Random high-entropy alloy of 3 to 5 elements, equimolar unless fractions are given.

    Raises
    ------
    ValueError
        Unknown element, unknown kind, fractions not summing to 1, malformed text.
    """
    if isinstance(text, Composition):
        return text
    if not isinstance(text, str) or not text.strip():
        raise ValueError(
            f"composition={text!r}: expected a string such as 'Pt', 'Fe0.5Pt0.5' or 'L10:FePt'"
        )
    text = text.strip()
    if ":" not in text:
        tokens = _parse_formula(text, text)
        if len(tokens) == 1:
            return Composition("element", ((tokens[0][0], 1.0),))
        if all(amount is None for _, amount in tokens):
            raise ValueError(
                f"composition={text!r}: ambiguous; expected fractions ('Fe0.5Pt0.5'), "
                "an ordered phase ('L10:FePt') or an equimolar alloy ('hea:Fe,Pt,...')"
            )
        return Composition("alloy", _checked_fractions(tokens, text))

    prefix, body = (part.strip() for part in text.split(":", 1))
    kind = _KIND_ALIASES.get(prefix.lower())
    if kind is None:
        raise ValueError(
            f"composition={text!r}: unknown kind {prefix!r}; expected one of alloy, L10, L12, core-shell, hea"
        )
    if kind == "alloy":
        items = (
            _parse_assignments(body, text)
            if ("=" in body or "," in body)
            else _parse_formula(body, text)
        )
        fractions = _checked_fractions(items, text)
        if len(fractions) == 1:
            return Composition("element", fractions)
        return Composition("alloy", fractions)
    if kind in ("L10", "L12"):
        tokens = _parse_formula(body, text)
        if len(tokens) != 2:
            raise ValueError(
                f"composition={text!r}: {kind} needs exactly two elements, e.g. 'L10:FePt', 'L12:Pt3Co'"
            )
        counts = [1.0 if amount is None else amount for _, amount in tokens]
        if kind == "L10":
            if counts[0] != counts[1]:
                raise ValueError(f"composition={text!r}: L10 is 1:1; expected e.g. 'L10:FePt'")
            return Composition("L10", tuple(sorted((symbol, 0.5) for symbol, _ in tokens)))
        if sorted(counts) != [1.0, 3.0]:
            raise ValueError(f"composition={text!r}: L12 is A3B; expected e.g. 'L12:Pt3Co'")
        return Composition(
            "L12",
            tuple(sorted((symbol, count / 4.0) for (symbol, _), count in zip(tokens, counts))),
        )
    if kind == "core-shell":
        main, *opts = (part.strip() for part in body.split(","))
        if main.count("@") != 1:
            raise ValueError(
                f"composition={text!r}: expected 'core-shell:CORE@SHELL', e.g. 'core-shell:Pd@Pt'"
            )
        core, shell = (_check_element(part.strip(), text) for part in main.split("@"))
        if core == shell:
            raise ValueError(f"composition={text!r}: core and shell are the same element")
        monolayers, thickness = 1, None
        for opt in opts:
            key, _, value = opt.partition("=")
            if key.strip().lower() != "shell" or not value:
                raise ValueError(
                    f"composition={text!r}: unknown option {opt!r}; expected 'shell=2ml' or 'shell=4.5A'"
                )
            monolayers, thickness = _parse_shell_option(value, text)
        return Composition("core-shell", (), core, shell, monolayers, thickness)
    # high-entropy alloy
    items = _parse_assignments(body, text)
    if not 3 <= len(items) <= _MAX_HEA_ELEMENTS:
        raise ValueError(
            f"composition={text!r}: hea needs 3 to {_MAX_HEA_ELEMENTS} elements, got {len(items)}"
        )
    if all(fraction is None for _, fraction in items):
        items = [(symbol, 1.0 / len(items)) for symbol, _ in items]
    return Composition("hea", _checked_fractions(items, text))
