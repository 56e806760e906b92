"""One-to-one matching of predicted and true atoms; lives in :mod:`simgen.matching`.

Matching sits below ``models`` (training labels candidates with it) and ``benchmark`` (metrics), so
it lives in the lowest layer; this module keeps the ``benchmark.matching`` names working.
"""

from __future__ import annotations

from simgen.matching import Matching, align, match_atoms

__all__ = ["Matching", "match_atoms", "align"]
