"""Model specs as text: the one ``name:key=value,...`` syntax of noise and damage models.

``--noise read:sigma=1.5`` on the command line and ``"knock_on:energy=300e3"`` in
``datasets.yaml`` share this syntax; :func:`split_spec` splits it once, and each registry
(:data:`simgen.noise.NOISE_MODELS`, :data:`simgen.damage.DAMAGE_MODELS`) checks the name, the keys
and the values against the parameters its models declare. :func:`parameter_docs` reads the
one-line description of each parameter from a numpydoc docstring, for ``simgen list``.
"""

from __future__ import annotations

import inspect

__all__ = ["split_spec", "parameter_docs"]


def split_spec(text: str) -> tuple[str, list[tuple[str, bool, str]]]:
    """``"name:k=v,k2=v2"`` -> ``("name", [("k", True, "v"), ("k2", True, "v2")])``.

    Whitespace around names, keys and values is dropped and empty items are skipped; the middle
    element says whether the item had an ``=`` (so that the caller can name a missing value).
    Nothing is checked here: the registries know which names, keys and values are allowed.
    """
    name, _, rest = text.strip().partition(":")
    items = []
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, raw = item.partition("=")
        items.append((key.strip(), bool(sep), raw.strip()))
    return name.strip(), items


def parameter_docs(obj) -> dict[str, str]:
    """``{parameter: first line of its description}`` from the numpydoc ``Parameters`` section."""
    lines = (inspect.getdoc(obj) or "").splitlines()
    docs: dict[str, str] = {}
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Parameters") + 2
    except StopIteration:
        return docs
    current = None
    for line in lines[start:]:
        if not line.strip():
            continue
        if not line.startswith(" "):
            if set(line.strip()) == {"-"}:  # the next section's underline
                docs.pop(current, None)
                break
            current = line.split(":")[0].strip()
            for name in current.split(","):
                docs[name.strip()] = ""
            current = current.split(",")[-1].strip()
        elif current is not None and not docs[current]:
            docs[current] = line.strip()
    return docs
