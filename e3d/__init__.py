"""e3d: training-free spatio-temporal entropy NAS for 3D video CNNs (the science; no Ray needed)."""
from . import families  # registers the built-in block families (e3d.family.FAMILIES)
from .cost import Cost, cost, flops, num_layers, params
from .scores import InfiniteScoreError, homoentr, stentr
from .spec import ArchSpec, ConvSpec, SpecError, StageSpec, load_spec, load_specs, save_specs

__all__ = ["ArchSpec", "ConvSpec", "StageSpec", "SpecError", "InfiniteScoreError", "Cost", "cost", "flops",
           "params", "num_layers", "stentr", "homoentr", "load_spec", "load_specs", "save_specs", "load"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """``e3d.load`` (a model folder: the network and its preprocessing), imported on first use so that
    ``import e3d`` stays light."""
    if name == "load":
        from .model_folder import load

        return load
    raise AttributeError(f"module 'e3d' has no attribute {name!r}")
