"""e3d: training-free spatio-temporal entropy NAS for 3D video CNNs (the science; no Ray needed)."""
from .cost import Cost, cost, flops, num_layers, params
from .scores import InfiniteScoreError, homoentr, stentr
from .spec import ArchSpec, ConvSpec, SpecError, StageSpec, load_spec, load_specs, save_specs

__all__ = ["ArchSpec", "ConvSpec", "StageSpec", "SpecError", "InfiniteScoreError", "Cost", "cost", "flops",
           "params", "num_layers", "stentr", "homoentr", "load_spec", "load_specs", "save_specs"]
__version__ = "0.1.0"
