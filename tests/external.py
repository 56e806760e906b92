"""Where the external reference data (``shared/external``, kept outside the repository) live.

``AET_EXTERNAL`` overrides; otherwise ``../shared/external`` beside the checkout, then the
workplace copy at ``/work/shared/external`` (so a clone elsewhere, e.g. CI's, still finds it).
Tests that need the data skip when none exists.
"""

import os
from pathlib import Path

_CANDIDATES = [
    os.environ.get("AET_EXTERNAL"),
    Path(__file__).resolve().parents[1].parent / "shared" / "external",
    "/work/shared/external",
]
EXTERNAL = next((Path(p) for p in _CANDIDATES if p and Path(p).is_dir()), Path(_CANDIDATES[1]))
