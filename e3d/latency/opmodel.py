"""The per-op model (``on_missing="estimate"``): a block's latency as a non-negative linear function of its
work (:data:`FEATURES`: MACs per kind of conv, elements written, constants per block kind), fitted on the
measured blocks of a table (:class:`OpModel`).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

from ..cost import ceil_div
from .blocks import KINDS, Key

_KERNEL_COLUMNS = ((1, 3), (1, 5), (3, 3))  # depthwise MACs get a column per paper kernel (kt, k), + others
FEATURES = ("stem", "block", "head", "classifier",  # a constant per block kind (module-call overheads)
            "se",                                    # a constant per SE (its two tiny convs)
            "pointwise_macs", "dense_macs", "dw133_macs", "dw155_macs", "dw333_macs", "dw_other_macs",
            "linear_macs", "elements", "large_elements", "input_reads", "strided_pointwise_macs", "se_elements",
            "swish_elements")
_COL = {name: i for i, name in enumerate(FEATURES)}
# glibc serves allocations above 32 MiB (its largest mmap threshold) with fresh pages every time: writing a
# tensor that large costs page faults, ~10x the time per element of a reused buffer (on this CPU a stem of
# 96 channels at 13x80^2, 31.9 MiB per tensor, takes 18 ms; one of 120, 39.9 MiB, 66 ms)
LARGE_TENSOR_BYTES = 32 << 20


def _tensors(key: Key) -> list[int]:
    """Element counts of the tensors one call of the block allocates (conv, BN, activation, pooling,
    products and sums; the SE's pooled vectors are negligible)."""
    kind = key[0]
    if kind == "stem":
        _, fam, out, kt, k, s, t, h = key
        n = out * t * ceil_div(h, s) ** 2
        return [n] * (4 if fam == "x3d" else 3)
    if kind == "block":
        _, fam, cin, b, cout, kt, k, s, t, h, se = key
        vin, vout = t * h * h, t * ceil_div(h, s) ** 2
        out = [b * vin] * 3 + [b * vout] * (3 + se) + [cout * vout] * 3
        if cin != cout:
            out += [cout * vout] * 2
        elif s != 1:
            out += [cin * vout]
        if fam == "x3d":
            out += [cout * vout]
        return out
    if kind == "head":
        _, cin, out_, t, h = key
        return [out_ * t * h * h] * 3
    return []


def estimable(key: Key) -> bool:
    """Whether the per-op model has features for ``key`` (the e3d/x3d blocks, heads and classifiers)."""
    return key[0] in KINDS


def _features(key: Key) -> list[float]:
    """The work of one block in units a CPU or GPU pays for (:data:`FEATURES`): MACs per kind of conv,
    elements written (and those written into tensors too large for the allocator to reuse), constants."""
    kind = key[0]
    row = [0.0] * len(FEATURES)
    row[_COL[kind]] = 1.0
    tensors = _tensors(key)
    row[_COL["elements"]] = float(sum(tensors))
    row[_COL["large_elements"]] = float(sum(n for n in tensors if 4 * n > LARGE_TENSOR_BYTES))
    if kind == "stem":
        _, fam, out, kt, k, s, t, h = key
        vout = t * ceil_div(h, s) ** 2
        row[_COL["dense_macs"]] = 3.0 * out * kt * k * k * vout
        if fam == "x3d":  # X3D's depthwise 5x1x1 temporal conv
            row[_COL["dw_other_macs"]] = 5.0 * out * vout
    elif kind == "block":
        _, fam, cin, b, cout, kt, k, s, t, h, se = key
        vin, vout = t * h * h, t * ceil_div(h, s) ** 2
        row[_COL["pointwise_macs"]] = float(cin * b * vin + b * cout * vout)
        if cin != cout:  # the projection shortcut: a 1x1x1 conv, strided with the block
            row[_COL["pointwise_macs" if s == 1 else "strided_pointwise_macs"]] += float(cin * cout * vout)
        row[_COL["input_reads"]] = float(cin * vin * (2 if (cin != cout or s != 1) else 1))
        dw = f"dw{kt}{k}{k}_macs" if (kt, k) in _KERNEL_COLUMNS else "dw_other_macs"
        row[_COL[dw]] = float(b * kt * k * k * vout)
        row[_COL["se"]] = float(se)
        row[_COL["se_elements"]] = float(se * b * vout)
        row[_COL["swish_elements"]] = float(b * vout if fam == "x3d" else 0)
    elif kind == "head":
        _, cin, out, t, h = key
        row[_COL["pointwise_macs"]] = float(cin * out * t * h * h)
        row[_COL["input_reads"]] = float(cin * t * h * h)
    else:
        _, cin, hidden, classes, t, h = key
        row[_COL["elements"]] = float(cin * t * h * h)  # the global pooling reads the features once
        row[_COL["linear_macs"]] = float(cin * hidden + hidden * classes)
    return row


def _nnls(a: list[list[float]], b: list[float], iterations: int = 3000) -> list[float]:
    """Non-negative least squares by the Lawson-Hanson active-set method (numpy only)."""
    import numpy as np

    A, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    scale = np.maximum(np.abs(A).max(axis=0), 1e-30)  # columns span 1 .. 1e9: normalise them
    A = A / scale
    n = A.shape[1]
    passive = np.zeros(n, dtype=bool)
    x = np.zeros(n)
    for _ in range(iterations):
        w = A.T @ (y - A @ x)
        if passive.all() or (w[~passive] <= 1e-12).all():
            break
        j = int(np.argmax(np.where(passive, -np.inf, w)))
        passive[j] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(A[:, passive], y, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            neg = passive & (z <= 0)
            alpha = np.min(x[neg] / np.maximum(x[neg] - z[neg], 1e-30))
            x = x + alpha * (z - x)
            passive &= x > 1e-15
            x[~passive] = 0.0
    return list(x / scale)


@dataclass
class OpModel:
    """``ms(key) = coefficients . features(key)``, fitted on measured blocks (minimising relative error)."""

    coef: list[float]
    fitted_on: int
    median_rel_error: float
    max_rel_error: float

    @classmethod
    def fit(cls, entries: dict[Key, float]) -> "OpModel":
        entries = {k: v for k, v in entries.items() if estimable(k)}
        if len(entries) < 20:
            raise ValueError(f"the per-op latency model needs at least 20 measured blocks, the table has "
                             f"{len(entries)}: measure more specs first (LatencyTable.fill)")
        keys = list(entries)
        rows = [[f / entries[k] for f in _features(k)] for k in keys]  # weight 1/y: relative error
        coef = _nnls(rows, [1.0] * len(keys))
        errs = [abs(sum(c * f for c, f in zip(coef, _features(k))) / entries[k] - 1) for k in keys]
        return cls(coef, len(keys), statistics.median(errs), max(errs))

    def ms(self, key: Key) -> float:
        return sum(c * f for c, f in zip(self.coef, _features(key)))
