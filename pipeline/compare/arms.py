"""Arms of a comparison: a strategy with its score (``evolution:stentr``, ``random``, ``dnas``) or a zoo network.

Every arm of one comparison searches at the same budget and clip, with a request built here from the arm and
the comparison's shared settings, so arms differ only in what they are named for:

- ``random`` (no score) is the baseline every NAS method must beat: *one* uniform draw of the feasible space
  per seed, ranked by nothing (the ``random`` strategy with ``samples=1``; its ranking score is irrelevant).
- ``random:SCORE`` is random search *with* the score: the best of ``--iterations`` uniform draws by SCORE.
- ``evolution:SCORE`` is Algorithm 1 maximising SCORE; ``dnas``, ``parsec`` and ``fusion`` train a supernet
  (or template) on the training split and rank by their own criteria (a score after the colon is refused).
- ``zoo:NAME`` is a reference network re-inputted to the clip: no search, trained like the others.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from e3d.strategy import Budget, Clip, SearchRequest, get_strategy

BASELINE = "random"
TRAINING_FREE = ("cpu",)


class ArmError(ValueError):
    """An arm that cannot be run; ``option`` is the command-line option to change."""

    def __init__(self, option: str, message: str):
        super().__init__(message)
        self.option = option


@dataclass(frozen=True)
class Arm:
    """One arm: ``strategy`` (None for a zoo network), ``score`` (None: the strategy's own ranking, or none
    for the ``random`` baseline), ``zoo`` (the zoo name of a reference network)."""

    strategy: str | None = None
    score: str | None = None
    zoo: str | None = None

    @property
    def name(self) -> str:
        if self.zoo:
            return self.zoo
        return f"{self.strategy}:{self.score}" if self.score else str(self.strategy)

    @property
    def slug(self) -> str:
        """The arm's name in file and run names (``evolution-stentr``, ``X3D-XS``)."""
        return self.name.replace(":", "-")

    @property
    def searches(self) -> bool:
        return self.zoo is None

    @property
    def is_baseline(self) -> bool:
        return self.strategy == BASELINE and self.score is None

    @property
    def training_free(self) -> bool:
        """True for arms whose search needs no data (analytic strategies, zoo networks)."""
        return self.zoo is not None or tuple(get_strategy(self.strategy).needs) == TRAINING_FREE

    def to_dict(self) -> dict[str, Any]:
        return {"arm": self.name, "strategy": self.strategy or "zoo", "score": self.score or "", "zoo": self.zoo}


def parse_arm(text: str) -> Arm:
    """``strategy[:score]`` into an :class:`Arm` (names checked against the registries)."""
    from e3d.scores import score_names  # noqa: PLC0415

    strategy, _, score = text.strip().partition(":")
    if not strategy:
        raise ArmError("--strategies", f"empty arm in {text!r}: write strategy[:score], e.g. evolution:stentr")
    try:
        s = get_strategy(strategy)
    except (KeyError, ValueError) as exc:
        raise ArmError("--strategies", str(exc.args[0])) from None
    if score:
        if score not in score_names():
            raise ArmError("--strategies", f"arm {text!r}: unknown score {score!r}; known: {', '.join(score_names())}")
        if tuple(s.needs) != TRAINING_FREE:
            raise ArmError("--strategies", f"arm {text!r}: strategy {strategy!r} trains a supernet and ranks by its "
                                           f"own criterion; write it without a score")
    elif strategy != BASELINE and tuple(s.needs) == TRAINING_FREE:
        score = "stentr"  # the paper's score is the default of the analytic strategies
    return Arm(strategy=strategy, score=score or None)


def zoo_arm(name: str) -> Arm:
    from e3d.zoo import names  # noqa: PLC0415

    if name not in names():
        raise ArmError("--zoo", f"unknown zoo network {name!r}; known: {', '.join(names())}")
    return Arm(zoo=name)


@dataclass(frozen=True)
class SearchSettings:
    """What every arm's search shares: the budget, the clip, the number of classes, and the per-strategy
    settings (``iterations``/``population`` where a strategy takes them, ``options[strategy]`` for the rest)."""

    budget: Budget
    clip: Clip
    num_classes: int
    iterations: int | None = None
    population: int | None = None
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def arm_request(arm: Arm, settings: SearchSettings, seed: int, out_dir: str | None = None) -> SearchRequest:
    """The search request of ``arm`` at ``seed``."""
    if not arm.searches:
        raise ValueError(f"{arm.name} is a zoo network: it has no search")
    strategy = get_strategy(arm.strategy)
    takes: Mapping[str, str] = getattr(strategy, "cli_options", {})
    options: dict[str, Any] = {}
    for key in ("iterations", "population"):
        value = getattr(settings, key)
        if value is not None and key in takes:
            options[takes[key]] = value
    options |= dict(settings.options.get(arm.strategy, {}))
    if arm.is_baseline:  # one uniform draw, ranked by nothing
        options["samples"] = 1
    score = arm.score or ("flops" if arm.is_baseline else "stentr")
    return SearchRequest(budget=settings.budget, clip=settings.clip, seed=seed, score=score,
                         num_classes=settings.num_classes, options=options, out_dir=out_dir,
                         name=f"{arm.slug}-s{seed}")
