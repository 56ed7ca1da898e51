"""The training recipe: the paper's hyper-parameters (Appendix G, Table 10) and how they scale to a run.

Table 10 (8 x A100, synchronized BN, from scratch)::

                      Sth-Sth V1&V2    Kinetics-400
    epochs                 128              256
    batch per GPU           32               16       (global 256 / 128 on 8 GPUs)
    optimizer              SGD              SGD       momentum 0.9, weight decay 5e-5
    learning rate          0.8              0.4       cosine schedule
    warm-up epochs          10               15

Both columns use the same learning rate per sample, 0.8 / 256 = 0.4 / 128 = 0.003125: the paper follows
the linear scaling rule (Goyal et al., 2017). A run with another global batch ``B`` (workers x batch per
worker) therefore uses ``lr = reference_lr * B / reference_batch``; a run with fewer epochs keeps the
preset's warm-up *fraction* (10/128 of the run for Sth-Sth). The schedule is stepped every iteration:
linear warm-up from ``warmup_start_factor * lr`` to ``lr``, then a half cosine down to ``final_lr_factor * lr``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping


@dataclass(frozen=True)
class Recipe:
    """Hyper-parameters of one training run. ``batch_size`` is per worker; the learning rate is derived
    from the global batch with :meth:`lr_for` unless ``lr`` pins it."""

    name: str = "sthsth"
    epochs: int = 128
    batch_size: int = 32
    reference_lr: float = 0.8
    reference_batch: int = 256
    lr: float | None = None              # absolute learning rate: overrides the linear scaling rule
    warmup_epochs: float = 10.0
    warmup_start_factor: float = 0.01
    final_lr_factor: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 5e-5
    decay_norm_and_bias: bool = False    # pySlowFast's X3D recipe: no weight decay on BN and biases
    nesterov: bool = False
    label_smoothing: float = 0.0
    dropout: float = 0.5
    grad_clip: float | None = None       # max global grad norm; None: no clipping
    amp: bool = True                     # mixed precision, only where CUDA is used
    sync_bn: bool = True                 # SyncBatchNorm, only with several GPU workers
    init: str = "model"                  # "model": e3d.model's init; "torch": PyTorch defaults (see INITS)

    def __post_init__(self) -> None:
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if self.reference_batch < 1:
            problems.append(f"reference_batch must be >= 1, got {self.reference_batch}")
        if self.reference_lr <= 0 or (self.lr is not None and self.lr <= 0):
            problems.append("learning rates must be > 0")
        if not 0 <= self.warmup_epochs <= self.epochs:
            problems.append(f"warmup_epochs must be in [0, epochs={self.epochs}], got {self.warmup_epochs}")
        if not 0 < self.warmup_start_factor <= 1:
            problems.append(f"warmup_start_factor must be in (0, 1], got {self.warmup_start_factor}")
        if not 0 <= self.final_lr_factor <= 1:
            problems.append(f"final_lr_factor must be in [0, 1], got {self.final_lr_factor}")
        if not 0 <= self.momentum < 1:
            problems.append(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            problems.append(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.label_smoothing < 1:
            problems.append(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.dropout < 1:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if self.init not in INITS:
            problems.append(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        if problems:
            raise ValueError("bad recipe: " + "; ".join(problems))

    # -- presets and scaling ----------------------------------------------------------------------
    @classmethod
    def paper(cls, dataset: str = "sthsth") -> "Recipe":
        """Table 10 as printed: ``"sthsth"`` (Something-Something V1/V2) or ``"k400"`` (Kinetics-400)."""
        try:
            return PRESETS[dataset.lower()]
        except KeyError:
            raise ValueError(f"no paper recipe {dataset!r}; known: {', '.join(PRESETS)}") from None

    def scaled(self, *, epochs: int | None = None, batch_size: int | None = None,
               lr: float | None = None, **changes: Any) -> "Recipe":
        """This recipe for a shorter/longer run or another per-worker batch.

        The warm-up keeps its fraction of the run (``warmup_epochs * epochs / self.epochs``) unless
        ``warmup_epochs`` is given; the learning
        rate keeps following the linear scaling rule (resolved by :meth:`lr_for` once the number of workers
        is known) unless ``lr`` pins it.
        """
        new_epochs = self.epochs if epochs is None else epochs
        warmup = changes.pop("warmup_epochs", None)
        if warmup is None:
            warmup = round(self.warmup_epochs * new_epochs / self.epochs, 6)
        return replace(self, epochs=new_epochs, warmup_epochs=warmup,
                       batch_size=self.batch_size if batch_size is None else batch_size,
                       lr=self.lr if lr is None else lr, **changes)

    def global_batch(self, workers: int) -> int:
        return self.batch_size * workers

    def lr_for(self, workers: int) -> float:
        """Peak learning rate for ``workers`` data-parallel workers (the linear scaling rule)."""
        if self.lr is not None:
            return self.lr
        return self.reference_lr * self.global_batch(workers) / self.reference_batch

    # -- schedule ---------------------------------------------------------------------------------
    def lr_factor(self, progress_epochs: float) -> float:
        """Multiplier of the peak learning rate after ``progress_epochs`` (fractional) epochs."""
        t = min(max(progress_epochs, 0.0), float(self.epochs))
        if self.warmup_epochs > 0 and t < self.warmup_epochs:
            a = t / self.warmup_epochs
            return self.warmup_start_factor + (1.0 - self.warmup_start_factor) * a
        span = self.epochs - self.warmup_epochs
        if span <= 0:
            return 1.0
        cos = 0.5 * (1.0 + math.cos(math.pi * (t - self.warmup_epochs) / span))
        return self.final_lr_factor + (1.0 - self.final_lr_factor) * cos

    # -- serialization ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Recipe":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown recipe field {unknown[0]!r} (known: {', '.join(sorted(known))})")
        return cls(**dict(data))

    def params(self, workers: int) -> dict[str, Any]:
        """MLflow params (prefixed ``recipe.``), with the resolved global batch and learning rate."""
        out = {f"recipe.{k}": v for k, v in self.to_dict().items() if v is not None}
        out["recipe.global_batch"] = self.global_batch(workers)
        out["recipe.peak_lr"] = round(self.lr_for(workers), 8)
        return out


INITS = {
    # e3d.model's X3D-style init: Kaiming-normal fan-out convs (counted per group), zero gamma on the last BN
    # of every residual branch (Goyal et al.'s large-batch trick), N(0, 0.01) linear layers. The paper's runs.
    "model": "e3d.model.init_weights (Kaiming fan-out convs, zero-gamma residual BN, N(0, 0.01) linears)",
    # The same with unit gamma everywhere: every block contributes from the first step.
    "model-unit-gamma": "e3d.model.init_weights(zero_init_residual=False)",
    # PyTorch's default conv/linear init (Kaiming-uniform on fan-in, a=sqrt(5)) and unit gamma everywhere.
    "torch": "PyTorch defaults for convs and linears, unit gamma on every BN",
}

PRESETS: dict[str, Recipe] = {
    "sthsth": Recipe(name="sthsth", epochs=128, batch_size=32, reference_lr=0.8, reference_batch=256,
                     warmup_epochs=10),
    "k400": Recipe(name="k400", epochs=256, batch_size=16, reference_lr=0.4, reference_batch=128,
                   warmup_epochs=15),
}
