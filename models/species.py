"""Stage 2 of PANN: a graph attention Transformer that names every traced candidate.

Candidates traced in the refined volume become nodes of a k-nearest-neighbour graph; node
features are the candidate's rotation-invariant 3D Zernike descriptors and intensities, edge
features a Gaussian radial-basis expansion of the neighbour distance (as SchNet, Schütt et al.
2017) and optionally the unit displacement vector. Graph Transformer layers
(``torch_geometric.nn.TransformerConv``, Shi et al. 2021, with edge features in the attention)
update the nodes; a linear head gives one logit per class: the elements, then "not an atom"
(always the last class), which removes false peaks (PANN, arXiv 2603.19942).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["SpeciesTransformer", "build_graph", "rbf_expansion", "species_classes", "NOT_AN_ATOM"]

logger = logging.getLogger(__name__)

NOT_AN_ATOM = "none"


def species_classes(elements: Sequence[str]) -> list[str]:
    """Class names in logit order: the elements, then ``"none"`` (not an atom)."""
    return [*elements, NOT_AN_ATOM]


def rbf_expansion(distances: Tensor, num_rbf: int = 16, cutoff: float = 6.0) -> Tensor:
    """Gaussian radial basis expansion of distances (Å).

    Centres are spaced evenly on [0, ``cutoff``]; each Gaussian's width equals the spacing.

    Args:
        distances: (E,) distances in Å.
        num_rbf: Number of basis functions.
        cutoff: Largest centre in Å.

    Returns:
        (E, num_rbf) values in (0, 1].
    """
    centres = torch.linspace(0.0, cutoff, num_rbf, device=distances.device, dtype=distances.dtype)
    width = cutoff / max(num_rbf - 1, 1)
    return torch.exp(-0.5 * ((distances[:, None] - centres[None, :]) / width) ** 2)


def build_graph(
    positions,
    k: int = 12,
    cutoff: float | None = None,
    num_rbf: int = 16,
    rbf_cutoff: float = 6.0,
    direction: bool = False,
) -> tuple[Tensor, Tensor]:
    """k-nearest-neighbour graph of candidate positions with distance edge features.

    Each node receives edges from its ``k`` nearest other nodes (fewer when the graph is small or
    ``cutoff`` removes some), found with a k-d tree (``scipy.spatial.cKDTree``).

    Args:
        positions: (N, 3) positions in Å (tensor or array).
        k: Neighbours per node.
        cutoff: Largest neighbour distance in Å (``None``: no limit).
        num_rbf: Gaussian radial basis functions per edge.
        rbf_cutoff: Largest RBF centre in Å.
        direction: Append the unit vector from target to source (x, y, z) to the edge features.
            It makes the classifier orientation-dependent; the default keeps it
            rotation-invariant, like the Zernike descriptors.

    Returns:
        ``edge_index`` (2, E) int64, row 0 = source (neighbour) j, row 1 = target i (PyG's
        ``source_to_target`` flow), sorted by target; ``edge_attr`` (E, num_rbf [+ 3]) float32.
    """
    from scipy.spatial import cKDTree

    pos = (
        positions.detach().cpu().double().numpy()
        if isinstance(positions, Tensor)
        else np.asarray(positions, dtype=np.float64)
    )
    device = positions.device if isinstance(positions, Tensor) else torch.device("cpu")
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"positions.shape={pos.shape}: expected (N, 3) in Å")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k={k!r}: expected a positive integer")
    if cutoff is not None and not cutoff > 0:
        raise ValueError(f"cutoff={cutoff!r}: expected a positive distance in Å or None")
    n = len(pos)
    width = num_rbf + (3 if direction else 0)
    kk = min(int(k), n - 1)
    if kk < 1:
        return torch.zeros((2, 0), dtype=torch.long, device=device), torch.zeros(
            (0, width), device=device
        )
    dist, idx = cKDTree(pos).query(
        pos, k=kk + 1, distance_upper_bound=np.inf if cutoff is None else cutoff
    )
    dist, idx = dist[:, 1:], idx[:, 1:]  # drop self (distance 0, first)
    target = np.repeat(np.arange(n), kk)
    source, d = idx.ravel(), dist.ravel()
    keep = np.isfinite(d) & (source != target)
    source, target, d = source[keep], target[keep], d[keep]
    edge_index = torch.as_tensor(np.stack([source, target]), dtype=torch.long, device=device)
    dist_t = torch.as_tensor(d, dtype=torch.float32, device=device)
    feats = [rbf_expansion(dist_t, num_rbf, rbf_cutoff)]
    if direction:
        vec = torch.as_tensor(pos[source] - pos[target], dtype=torch.float32, device=device)
        feats.append(vec / dist_t.clamp_min(1e-9)[:, None])
    return edge_index, torch.cat(feats, dim=1)


class SpeciesTransformer(nn.Module):
    """Graph attention Transformer classifying traced candidates into elements or "not an atom".

    An input projection, ``layers`` pre-norm Transformer blocks (multi-head
    ``TransformerConv`` with edge features in keys and values, residual; then a two-layer
    feed-forward network, residual) and a LayerNorm + linear head.

    Args:
        in_features: Node features per candidate (standardise them: zero mean, unit variance).
        num_classes: Elements + 1 ("not an atom" is the last class).
        hidden: Width of the node embeddings (divisible by ``heads``).
        heads: Attention heads.
        layers: Transformer blocks.
        edge_features: Width of ``edge_attr`` (16 = :func:`build_graph`'s default RBFs; 19
            with ``direction=True``).
        dropout: Dropout on attention weights and block outputs.

    Shapes:
        x (N, in_features); edge_index (2, E); edge_attr (E, edge_features) -> logits
        (N, num_classes).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: int = 64,
        heads: int = 4,
        layers: int = 3,
        edge_features: int = 16,
        dropout: float = 0.1,
    ):
        super().__init__()
        from torch_geometric.nn import TransformerConv

        for name, value in (
            ("in_features", in_features),
            ("hidden", hidden),
            ("heads", heads),
            ("layers", layers),
            ("edge_features", edge_features),
        ):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}={value!r}: expected a positive integer")
        if not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
            raise ValueError(
                f"num_classes={num_classes!r}: expected ≥ 2 (elements + 'not an atom')"
            )
        if hidden % heads:
            raise ValueError(f"hidden={hidden}: expected a multiple of heads={heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout!r}: expected a probability in [0, 1)")
        self.in_features, self.num_classes = int(in_features), int(num_classes)
        self.hidden, self.heads, self.layers = hidden, heads, layers
        self.edge_features, self.dropout = edge_features, dropout
        self.embed = nn.Linear(in_features, hidden)
        self.attn_norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.convs = nn.ModuleList(
            TransformerConv(
                hidden,
                hidden // heads,
                heads=heads,
                concat=True,
                edge_dim=edge_features,
                dropout=dropout,
            )
            for _ in range(layers)
        )
        self.ffn_norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.ffns = nn.ModuleList(
            nn.Sequential(
                nn.Linear(hidden, 2 * hidden),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(2 * hidden, hidden),
            )
            for _ in range(layers)
        )
        self.out_norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, num_classes)
        self.drop = nn.Dropout(dropout)

    def reset_parameters(self) -> None:
        """Re-initialise every layer."""
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.in_features}, {self.num_classes}, hidden={self.hidden}, "
            f"heads={self.heads}, layers={self.layers}, edge_features={self.edge_features})"
        )

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        """Class logits of every node.

        Args:
            x: (N, in_features) node features.
            edge_index: (2, E) source/target node indices.
            edge_attr: (E, edge_features) edge features from :func:`build_graph`.

        Returns:
            (N, num_classes) logits; the last class is "not an atom".
        """
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"x.shape={tuple(x.shape)}: expected (N, {self.in_features})")
        if (
            edge_attr.ndim != 2
            or edge_attr.shape[1] != self.edge_features
            or edge_attr.shape[0] != edge_index.shape[1]
        ):
            raise ValueError(
                f"edge_attr.shape={tuple(edge_attr.shape)}: expected ({edge_index.shape[1]}, {self.edge_features})"
            )
        h = self.embed(x)
        for norm1, conv, norm2, ffn in zip(self.attn_norms, self.convs, self.ffn_norms, self.ffns):
            h = h + self.drop(conv(norm1(h), edge_index, edge_attr))
            h = h + self.drop(ffn(norm2(h)))
        return self.head(self.out_norm(h))
