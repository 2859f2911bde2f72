"""The k-NN machinery of precision/recall and density/coverage: blocked distances, each point's
nearest neighbours within its set, and one pass over the real × fake distances for every ball test.

Distances are squared Euclidean, ‖a‖² + ‖b‖² − 2 a·b, in blocks of at most ``batch_size`` rows
and columns (memory bounded by ``batch_size²`` whatever the set sizes; the ADM evaluator's
blocks are 10000). One block costs one matrix product, so the work is counted in products of
two blocks:

- within a set the distance matrix is symmetric, so only the blocks on and above the diagonal
  are computed; each serves the nearest neighbours of its rows and (transposed) of its columns:
  half the products of the whole matrix;
- the real × fake matrix is computed once, and every ball test of the requested metrics reads
  it: precision (fake inside a real ball), recall (real inside a fake ball), density and
  coverage (fake inside real balls of another k).

Precision/recall at N real and N fake points therefore costs two products of N × N (the ADM
evaluator's and torch-fidelity's loops make four), and a reference set's neighbours, the same
for every row of a run, are computed once per run (:func:`reference_nearest`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def sq_norms(x: torch.Tensor) -> torch.Tensor:
    """Each row's squared norm."""
    return (x * x).sum(1)


def sq_distances(a: torch.Tensor, b: torch.Tensor, a_sq: torch.Tensor | None = None,
                 b_sq: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean distances ``[len(a), len(b)]``: ‖a‖² + ‖b‖² − 2 a·b in one matrix
    product (``addmm`` onto the sum of the norms), clamped at 0. Row norms may be passed in."""
    a_sq = sq_norms(a) if a_sq is None else a_sq
    b_sq = sq_norms(b) if b_sq is None else b_sq
    d = a_sq[:, None] + b_sq[None, :]
    return d.addmm_(a, b.T, alpha=-2.0).clamp_(min=0.0)


def _spans(n: int, batch_size: int) -> list[tuple[int, int]]:
    return [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


def _keep_smallest(best: torch.Tensor | None, block: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` smallest values of each row among ``best`` and ``block``, ascending."""
    near = torch.topk(block, min(count, block.shape[1]), dim=1, largest=False).values
    if best is not None:
        merged = torch.cat([best, near], dim=1)
        near = torch.topk(merged, min(count, merged.shape[1]), dim=1, largest=False).values
    return near


def nearest_sq_distances(x: torch.Tensor, k: int, batch_size: int) -> torch.Tensor:
    """Each point's ``k + 1`` smallest squared distances within ``x``, ascending, its own included.

    The self-distance is exactly 0 (not 0 up to round-off), so column ``j`` is the squared
    distance to the j-th nearest other point (a duplicate's is 0). Only the blocks on and above
    the diagonal are computed.
    """
    n = x.shape[0]
    if n <= k:
        raise ValueError(f"a set needs more than k = {k} points for k-NN radii; got {n}")
    norms = sq_norms(x)
    spans = _spans(n, batch_size)
    best: list[torch.Tensor | None] = [None] * len(spans)
    for i, (r0, r1) in enumerate(spans):
        for j in range(i, len(spans)):
            c0, c1 = spans[j]
            block = sq_distances(x[r0:r1], x[c0:c1], norms[r0:r1], norms[c0:c1])
            if i == j:
                block.fill_diagonal_(0.0)
            best[i] = _keep_smallest(best[i], block, k + 1)
            if j != i:
                best[j] = _keep_smallest(best[j], block.T.contiguous(), k + 1)
    return torch.cat(best)


def reference_nearest(reference, layer: str, real: torch.Tensor, k: int, batch_size: int) -> torch.Tensor:
    """:func:`nearest_sq_distances` of ``real``, the tensor of ``reference.features[layer]``, kept
    on ``reference`` so that every row of a run reuses them. An entry is keyed by layer, batch size,
    dtype and device, holds the array it was computed from (a replaced array is recomputed), and
    serves any k up to its own by its first columns."""
    source = reference.features[layer]
    key = ("nearest", layer, batch_size, real.dtype, str(real.device))
    cached = reference.derived.get(key)
    if cached is None or cached[0] is not source or cached[1].shape[1] < k + 1:
        cached = reference.derived[key] = (source, nearest_sq_distances(real, k, batch_size))
    return cached[1][:, : k + 1]


@dataclass(frozen=True)
class BallTests:
    """What one pass over the real × fake distances tests, by squared radius per point.

    ``precision``: (real radii, fake radii) under "≤" (precision/recall); ``density``: real
    radii under "<" (density/coverage, as ``prdc``). Either may be None."""

    precision: tuple[torch.Tensor, torch.Tensor] | None = None
    density: torch.Tensor | None = None


@dataclass(frozen=True)
class BallCounts:
    precision: float | None = None  # fraction of fake points inside (≤) some real ball
    recall: float | None = None  # fraction of real points inside (≤) some fake ball
    density_pairs: int | None = None  # (fake, real) pairs with d < the real point's radius
    coverage: float | None = None  # fraction of real balls (<) holding some fake point


def ball_counts(real: torch.Tensor, fake: torch.Tensor, tests: BallTests, batch_size: int) -> BallCounts:
    """Every ball test of ``tests`` from one pass over the real × fake distance blocks."""
    device = real.device
    in_real_ball = torch.zeros(fake.shape[0], dtype=torch.bool, device=device)
    in_fake_ball = torch.zeros(real.shape[0], dtype=torch.bool, device=device)
    covered = torch.zeros(real.shape[0], dtype=torch.bool, device=device)
    pairs = torch.zeros((), dtype=torch.int64, device=device)
    real_norms, fake_norms = sq_norms(real), sq_norms(fake)
    for f0, f1 in _spans(fake.shape[0], batch_size):
        for r0, r1 in _spans(real.shape[0], batch_size):
            d = sq_distances(fake[f0:f1], real[r0:r1], fake_norms[f0:f1], real_norms[r0:r1])
            if tests.precision is not None:
                real_radii, fake_radii = tests.precision
                in_real_ball[f0:f1] |= (d <= real_radii[None, r0:r1]).any(dim=1)
                in_fake_ball[r0:r1] |= (d <= fake_radii[f0:f1, None]).any(dim=0)
            if tests.density is not None:
                inside = d < tests.density[None, r0:r1]
                pairs += inside.sum()
                covered[r0:r1] |= inside.any(dim=0)
    fraction = lambda flags: float(flags.double().mean())  # noqa: E731
    precision = tests.precision is not None
    density = tests.density is not None
    return BallCounts(
        precision=fraction(in_real_ball) if precision else None,
        recall=fraction(in_fake_ball) if precision else None,
        density_pairs=int(pairs) if density else None,
        coverage=fraction(covered) if density else None,
    )
