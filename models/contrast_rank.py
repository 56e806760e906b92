"""Elements a network was not trained on, by contrast rank.

A stage-2 network knows a fixed set of elements (the shipped weights: Fe, Co, Ni, Cu, Pd, Pt, Au)
and sees each candidate only through its intensity within the particle and its neighbourhood;
what it learns about an element is where it sits in the particle's contrast order. So a particle
of elements the network never saw (Si, Ge, Ru, Ag, Ir, ...) is classified through *proxies*: known
elements with the same contrast order, chosen so that the contrast gaps between consecutive
proxies (in log σ(Z) of the calibration table) are as close as possible to the real elements'
(a volume's overall scale is arbitrary, so only gaps matter). The network's labels are then mapped back, proxy → element,
and the measurement (the tilt series, σ(Z) of the calibration table) has the last word on the
element (the species step).

A single-element particle needs no species decision: its one element gets the brightest known
element as proxy (the shipped weights saw single-element particles of Pt and Au only; a lone
element the network knows only from mixtures, e.g. Fe, makes it call most atoms "not an atom"),
and every candidate the network calls an atom is that element.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

__all__ = ["proxy_elements", "contrast_order"]


def _log_sigma(elements: Sequence[str], microscope=None) -> dict[str, float]:
    from simgen.physics.imaging import Microscope, cross_section

    microscope = Microscope() if microscope is None else microscope
    return {e: math.log(cross_section(e, microscope)) for e in elements}


def contrast_order(elements: Sequence[str], microscope=None) -> list[str]:
    """``elements`` from the faintest to the brightest by calibrated σ(Z) (ties: by Z)."""
    from ase.data import atomic_numbers

    log_sigma = _log_sigma(elements, microscope)
    return sorted(dict.fromkeys(elements), key=lambda e: (log_sigma[e], atomic_numbers[e]))


def proxy_elements(
    elements: Sequence[str], known: Sequence[str], microscope=None
) -> dict[str, str]:
    """Map each element present to a distinct known element of the same contrast rank.

    Args:
        elements: Elements present in the particle (any the calibration table covers).
        known: Elements the network was trained on.
        microscope: ``simgen.physics.imaging.Microscope`` whose σ(Z) orders them (project default).

    Returns:
        ``{element: proxy}``; the identity when every element is known. Otherwise the proxies
        keep the contrast order of ``elements`` (the faintest element gets the faintest proxy),
        and among the order-preserving choices the one whose consecutive contrast gaps (in
        log σ) best match the real ones as ratios (least squares of their logs; then the
        smallest overall shift in log σ) is taken; one element gets the brightest known element.

    Raises:
        ValueError: More distinct elements than the network knows, or an element without a
            calibrated σ(Z).
    """
    elements = list(dict.fromkeys(str(e) for e in elements))
    known = list(dict.fromkeys(str(e) for e in known))
    if all(e in known for e in elements):
        return {e: e for e in elements}
    if len(elements) > len(known):
        raise ValueError(
            f"elements={elements}: more elements than the {len(known)} the weights know ({known})"
        )
    order = contrast_order(elements, microscope)
    known_order = contrast_order(known, microscope)
    if len(order) == 1:
        # One element: no contrast to match. The particle is a single-element one, and the
        # shipped weights saw single-element particles only of the heaviest elements (Pt, Au:
        # datasets.yaml pann-train); the brightest known element stands for it.
        return {order[0]: known_order[-1]}
    log_sigma = _log_sigma([*order, *known_order], microscope)
    target = [log_sigma[e] for e in order]
    best = None
    for subset in itertools.combinations(known_order, len(order)):  # keeps the order
        values = [log_sigma[e] for e in subset]
        shift = sum(v - t for v, t in zip(values, target)) / len(order)
        # Consecutive contrast gaps, compared as ratios: a proxy pair the network cannot tell
        # apart (Pt/Au: 1% in σ) for a pair that differs clearly (Ag/Ir: a factor of 2) costs a
        # lot, a gap somewhat smaller or larger little.
        misfit = sum(
            math.log(max(values[i + 1] - values[i], 1e-6) / max(target[i + 1] - target[i], 1e-6))
            ** 2
            for i in range(len(order) - 1)
        )
        key = misfit + 0.05 * shift**2  # gaps first; then as bright as the real ones
        if best is None or key < best[0] - 1e-12:
            best = (key, subset)
    return dict(zip(order, best[1]))
