"""A progress bar over the epochs of every candidate a Tune run trains (on the driver, silent off a terminal).

``EpochProgress`` is a Tune callback: each trial's reports carry ``epoch`` (:func:`pipeline.train.worker.report`),
so the bar advances by the epochs each trial finished since its last report, resumed trials included, and shows
which candidates are training and where they are: ``40%|████    | 12/30 [01:05<01:37, 5.4 s/epoch, cand1=7/15]``.
The per-epoch lines of the workers are printed above it (:func:`e3d.progress.suspended`).
"""
from __future__ import annotations

from typing import Any

from ray.tune import Callback

from e3d.progress import Progress


class EpochProgress(Callback):
    """Tune pickles its callbacks with the experiment state: the bar and its stream (a terminal, or pytest's
    capture) stay out of the pickle and are made again on first use."""

    def __init__(self, names: list[str], epochs: int, *, enabled: bool | None = None, stream: Any = None):
        self.names, self.epochs, self.enabled, self.stream = names, epochs, enabled, stream
        self._bar: Progress | None = None
        self.reached: dict[str, int] = {}  # candidate -> last epoch reported
        self.running: dict[str, str] = {}  # candidate -> "7/15"

    @property
    def bar(self) -> Progress:
        if self._bar is None:
            self._bar = Progress(len(self.names) * self.epochs, enabled=self.enabled, stream=self.stream,
                                 unit="epoch")
            self._bar.done = sum(self.reached.values())
        return self._bar

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_bar": None, "stream": None}

    def _name(self, trial: Any) -> str:
        index = (getattr(trial, "config", None) or {}).get("candidate")
        return self.names[index] if isinstance(index, int) and index < len(self.names) else str(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        epoch = result.get("epoch")
        if not isinstance(epoch, int):
            return
        bar, name = self.bar, self._name(trial)  # the bar first: a new one starts from the epochs reached so far
        advance = max(0, epoch - self.reached.get(name, 0))
        self.reached[name] = max(epoch, self.reached.get(name, 0))
        self.running[name] = f"{epoch}/{self.epochs}"
        bar.fields = dict(self.running)
        bar.update(advance)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.pop(self._name(trial), None)
        self.bar.fields = dict(self.running)

    on_trial_error = on_trial_complete

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self._bar is not None:
            self._bar.close()
