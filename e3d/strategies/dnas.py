"""``dnas``: differentiable video NAS (Zhou et al., ACML 2021): a supernet of (2+1)D layers with temporal
dilation, trained on Ray Train, then decoded into ``r2plus1d`` specs.

The search space is Table 1's (:func:`e3d.dnas.space.table1_space`): a fixed stem, six stages each with 3-4
candidate head widths and up to 0/5/10/5/5/1 stack layers of {dilation 1, 2, 4, skip}. The pipeline's
:class:`~e3d.strategy.SupernetTrainer` runs the loop (:mod:`pipeline.dnas.loop`, Sec. 3.3 and Appendix A): it
trains the weights alone for ``warmup_epochs``, then alternates an architecture step (Adam on ``alpha``/
``beta``, loss = cross-entropy + ``lam * log_k(expected FLOPs)``, Eq. 5) on a held-out part of the *training*
videos and a weight step (SGD, cosine) on the rest. It checkpoints every epoch under ``out_dir`` and resumes from
there. The candidates are the ``top_k`` best head-layer paths (Viterbi) with the argmax op of every stack layer,
best first; their ``score`` is the log of the path's probability (plus the chosen ops' log weights). Candidates
over the request's budget are ranked after those within it (``info["fits_budget"]``). ``docs/dnas.md`` has the
details and the measured runs.

Options (``--set NAME=VALUE``), defaults from the paper's Appendix A where it gives them:

- schedule: ``epochs`` (70), ``warmup_epochs`` (10), ``batch_size`` (the job's recipe's, else 8), ``lr`` (0.02),
  ``min_lr`` (1e-4), ``momentum`` (0.9), ``weight_decay`` (4e-5), ``grad_clip`` (5.0), ``dropout`` (0.0),
  ``arch_lr`` (3e-4), ``arch_weight_decay`` (1e-3), ``lam`` (lambda of Eq. 5, 0.1), ``log_base`` (k, 10);
- data: ``split`` (fractions of the training videos for weights / architecture / monitoring, [0.6, 0.2, 0.2]);
- space: ``width_mult`` (1.0), ``width_divisor`` (8), ``max_stack`` (6 ints, [0, 5, 10, 5, 5, 1]), ``strides``
  (6 ints, [2, 2, 2, 2, 1, 1]), ``mid_ratio`` (1.0), ``stem_kernel`` ([3, 7, 7]);
- Table 6's ablations: ``search_channels``, ``search_ops``, ``search_depth`` (true), ``fixed_stack`` (6 ints);
- derivation: ``top_k`` (5 paths), ``path_score`` ("log": most probable path; "sum": largest sum of weights);
- Ray: ``workers`` (Train workers; default: :func:`pipeline.train.plan_resources`), ``max_failures`` (1).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from ..strategy import (NEEDS_TRAINING, RequestError, SearchContext, SearchOutcome, SearchRequest, check_known_options,
                        register_strategy)


@dataclass(frozen=True)
class DnasSettings:
    """Every setting of one search (the options with their defaults)."""

    epochs: int = 70
    warmup_epochs: int = 10
    batch_size: int | None = None
    lr: float = 0.02
    min_lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 4e-5
    grad_clip: float | None = 5.0
    dropout: float = 0.0
    arch_lr: float = 3e-4
    arch_weight_decay: float = 1e-3
    lam: float = 0.1
    log_base: float = 10.0
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    width_mult: float = 1.0
    width_divisor: int = 8
    max_stack: tuple[int, ...] | None = None
    strides: tuple[int, ...] | None = None
    mid_ratio: float = 1.0
    stem_kernel: tuple[int, int, int] = (3, 7, 7)
    search_channels: bool = True
    search_ops: bool = True
    search_depth: bool = True
    fixed_stack: tuple[int, ...] | None = None
    top_k: int = 5
    path_score: str = "log"
    workers: int | None = None
    max_failures: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def space(self, frames: int, size: int, num_classes: int):
        from ..dnas.space import table1_space  # noqa: PLC0415

        return table1_space(frames, size, num_classes, width_mult=self.width_mult, width_divisor=self.width_divisor,
                            max_stack=self.max_stack, strides=self.strides, search_channels=self.search_channels,
                            search_ops=self.search_ops, search_depth=self.search_depth, fixed_stack=self.fixed_stack,
                            mid_ratio=self.mid_ratio, stem_kernel=self.stem_kernel)


OPTIONS = tuple(f.name for f in fields(DnasSettings))
_INTS = ("epochs", "warmup_epochs", "batch_size", "width_divisor", "top_k", "workers")
_NON_NEGATIVE = ("warmup_epochs", "max_failures")
_FLOATS = ("lr", "min_lr", "momentum", "weight_decay", "grad_clip", "dropout", "arch_lr", "arch_weight_decay", "lam",
           "log_base", "width_mult", "mid_ratio")
_BOOLS = ("search_channels", "search_ops", "search_depth")
_LISTS = {"max_stack": 6, "strides": 6, "fixed_stack": 6, "stem_kernel": 3}


def _bad(key: str, message: str) -> RequestError:
    return RequestError(f"options.{key}", f"strategy 'dnas': option {key!r} {message}")


def settings_from(options: Mapping[str, Any], recipe: Any = None) -> DnasSettings:
    """The options checked and completed with the defaults (``batch_size`` from ``recipe`` when given)."""
    check_known_options("dnas", options, OPTIONS)
    values: dict[str, Any] = {}
    for key, value in options.items():
        if value is None and key in ("batch_size", "workers", "max_stack", "strides", "fixed_stack", "grad_clip"):
            continue
        if key in _INTS or key in _NON_NEGATIVE:
            low = 0 if key in _NON_NEGATIVE else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise _bad(key, f"must be an integer >= {low}, got {value!r}")
        elif key in _FLOATS:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise _bad(key, f"must be a non-negative number, got {value!r}")
            value = float(value)
        elif key in _BOOLS:
            if not isinstance(value, bool):
                raise _bad(key, f"must be true or false, got {value!r}")
        elif key in _LISTS:
            n = _LISTS[key]
            if not isinstance(value, (list, tuple)) or len(value) != n or any(
                    isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in value):
                raise _bad(key, f"must be a list of {n} non-negative integers, got {value!r}")
            value = tuple(value)
        elif key == "split":
            if not isinstance(value, (list, tuple)) or len(value) not in (2, 3) or any(
                    isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in value) \
                    or min(value[:2]) <= 0 or sum(value) > 1 + 1e-9:
                raise _bad(key, f"must be 2 or 3 fractions (weights, architecture[, monitor]), the first two "
                                f"positive, summing to at most 1; got {value!r}")
            value = tuple(float(v) for v in value) + ((0.0,) if len(value) == 2 else ())
        elif key == "path_score" and value not in ("log", "sum"):
            raise _bad(key, f"must be 'log' or 'sum', got {value!r}")
        values[key] = value
    if "batch_size" not in values and recipe is not None:
        values["batch_size"] = int(recipe.batch_size)
    settings = DnasSettings(**values)
    if settings.warmup_epochs > settings.epochs:
        raise _bad("warmup_epochs", f"({settings.warmup_epochs}) exceeds epochs ({settings.epochs})")
    for key in ("lr", "arch_lr", "log_base", "width_mult", "mid_ratio"):
        if getattr(settings, key) <= 0:
            raise _bad(key, "must be positive")
    if settings.log_base == 1.0:
        raise _bad("log_base", "must not be 1 (log_k)")
    if settings.dropout >= 1 or settings.momentum >= 1:
        raise _bad("dropout" if settings.dropout >= 1 else "momentum", "must be below 1")
    if any(k % 2 == 0 or k < 1 for k in settings.stem_kernel) or settings.stem_kernel[1] != settings.stem_kernel[2]:
        raise _bad("stem_kernel", f"must be odd sizes [kt, k, k], got {list(settings.stem_kernel)}")
    if settings.strides is not None and any(s not in (1, 2) for s in settings.strides):
        raise _bad("strides", f"must be 1 or 2 per stage, got {list(settings.strides)}")
    return settings


class DnasSearch:
    name = "dnas"
    description = ("differentiable video NAS (Zhou et al. 2021): (2+1)D supernet with dilated stack layers on Ray "
                   "Train, Viterbi-decoded (trains)")
    needs = NEEDS_TRAINING
    cli_options: Mapping[str, str] = {}  # --iterations would arrive as thousands of epochs: use --set epochs=N
    quick_options = {"epochs": 2, "warmup_epochs": 1, "width_mult": 0.125, "width_divisor": 4,
                     "max_stack": [0, 1, 1, 1, 1, 1], "batch_size": 4, "arch_lr": 0.01, "top_k": 2,
                     "split": [0.5, 0.5, 0.0], "stem_kernel": [3, 3, 3]}

    def check(self, request: SearchRequest) -> None:
        settings = settings_from(request.options)
        if not (settings.search_channels or settings.search_ops or settings.search_depth):
            raise _bad("search_channels", "and search_ops and search_depth are all off: nothing to search")
        try:
            space = settings.space(request.clip.frames, request.clip.size, request.num_classes or 2)
        except ValueError as exc:
            field = "clip" if "frames" in str(exc) else "options.max_stack"
            raise RequestError(field, f"strategy 'dnas': {exc}") from None
        if request.clip.frames < space.stem_kernel[0]:
            raise RequestError("clip", f"strategy 'dnas': {request.clip.frames} frames are fewer than the stem's "
                                       f"temporal kernel {space.stem_kernel[0]}")
        if request.budget.latency_ms is not None:
            raise RequestError("budget.latency_ms", "strategy 'dnas' has no latency term (not wired)")

    def search(self, request: SearchRequest, context: SearchContext | None = None) -> SearchOutcome:
        self.check(request)
        context = context or SearchContext()
        trainer = context.training(self.name, "a supernet")
        return trainer.run(self.name, request, context, settings_from(request.options, context.recipe))


STRATEGY = register_strategy(DnasSearch())
