"""Train the EGNN position head on demo's train split; per-element offset error on its val split.

python scripts/eval_position_head.py --data demo.zarr --train-limit 40 --val-limit 20
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    import torch
    from ase.data import chemical_symbols

    from models.position import candidate_graphs, train_position_head
    from simgen.store import open_dataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--train-limit", type=int, default=40)
    parser.add_argument("--val-limit", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    train = candidate_graphs(args.data, split="train", limit=args.train_limit)
    head, history = train_position_head(train, epochs=args.epochs)
    print(json.dumps({"train_mse_A2": [history[0], history[-1]]}), flush=True)
    val_ds = open_dataset(args.data).filter(split="val")
    n_val = min(args.val_limit, len(val_ds))
    val = candidate_graphs(args.data, split="val", limit=n_val)
    rows: dict[tuple, list] = {}
    for k, (positions, features, offsets, mask) in enumerate(val):
        sample = val_ds[k]
        from scipy.spatial import cKDTree

        from models.position import matched_offsets  # noqa: F401  (same matching as training)

        _, nearest = cKDTree(sample["positions"]).query(positions)
        element = np.array([chemical_symbols[int(z)] for z in sample["numbers"][nearest]])
        x = torch.as_tensor(positions, dtype=torch.float32)
        with torch.no_grad():
            correction = head(x - x.mean(0), torch.as_tensor(features)).numpy()
        before = (offsets**2).sum(1)
        after = ((offsets - correction) ** 2).sum(1)
        for e in np.unique(element[mask]):
            m = mask & (element == e)
            key = (e, float(sample["dose"]))
            rows.setdefault(key, []).append((before[m].sum(), after[m].sum(), int(m.sum())))
    for (e, dose), values in sorted(rows.items()):
        b, a, n = (np.sum([v[i] for v in values]) for i in range(3))
        print(
            json.dumps(
                {
                    "element": e,
                    "dose": dose,
                    "n_atoms": int(n),
                    "n_particles": len(values),
                    "rmsd_before_pm": float(100 * np.sqrt(b / n)),
                    "rmsd_after_pm": float(100 * np.sqrt(a / n)),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
