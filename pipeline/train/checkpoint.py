"""A training checkpoint on disk: ``state.pt`` (everything to resume) and ``meta.json`` (epoch, metrics).

``state.pt`` holds ``model``, ``optimizer``, ``scheduler``, ``scaler`` (state dicts), ``epoch`` (completed),
``history`` (every epoch's metrics), ``final`` (the multi-view evaluation, once done), ``spec``, ``recipe``
and ``dropout``: enough to rebuild the trained network without the run's config.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from e3d.model import build_model
from e3d.spec import ArchSpec

STATE_FILE = "state.pt"
META_FILE = "meta.json"


def save_state(folder: str | os.PathLike, state: dict[str, Any], metrics: dict[str, Any]) -> None:
    torch.save(state, Path(folder) / STATE_FILE)
    (Path(folder) / META_FILE).write_text(json.dumps({"epoch": state["epoch"], "metrics": metrics}, default=str))


def load_state(checkpoint_dir: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    return torch.load(Path(checkpoint_dir) / STATE_FILE, map_location=map_location, weights_only=False)


def model_from_checkpoint(checkpoint_dir: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """The trained network (eval mode, CPU) and the checkpoint's state dict."""
    state = load_state(checkpoint_dir)
    spec = ArchSpec.from_dict(state["spec"])
    model = build_model(spec, dropout=state.get("dropout", 0.5))
    model.load_state_dict(state["model"])
    return model.eval(), state
