"""The blocks of a network: the keys the latency table holds (:func:`network_blocks`) and the modules they
name in the built network (:func:`block_modules`).

The ``e3d`` and ``x3d`` families are keyed block by block (:data:`BLOCKWISE`), other families per stage, or as
a whole network when they build another shape.
"""
from __future__ import annotations

import json
from typing import Any, Iterator

from torch import nn

from ..cost import ceil_div, has_se
from ..family import Family, get_family
from ..spec import ArchSpec

FORMAT = 2  # 2: keys are JSON lists (1: '/'-joined, e3d/x3d only)
KINDS = ("stem", "block", "head", "classifier")

# A block key: a tuple whose first item is its kind (see network_blocks for the fields of each kind).
Key = tuple

# Families whose blocks the table keys one by one (tests/test_latency.py checks the keys against the built
# modules). Any other family is keyed per stage when its network has VideoNet's shape (stem, stages, head,
# classifier), else as a whole network: still exact, just less sharing between specs.
BLOCKWISE = ("e3d", "x3d")


def key_layout(spec: ArchSpec) -> str:
    """``blocks``, ``stages`` or ``network``: how finely the table can key ``spec``'s network."""
    if spec.family in BLOCKWISE and not getattr(spec, "extra", ()) and not any(
            getattr(s, "extra", ()) for s in spec.stages):
        return "blocks"
    return "stages" if type(get_family(spec.family)).build is Family.build else "network"


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _walk(spec: ArchSpec) -> Iterator[tuple[Key, tuple, tuple[int, ...]]]:
    """``(key, path to the module in the built network, input shape)`` for every block, in order."""
    fam, t, layout = spec.family, spec.frames, key_layout(spec)
    if layout == "network":
        yield ("network", fam, _json(spec.replace(name="-").to_dict())), (), (1, 3, t, spec.size, spec.size)
        return
    st = spec.stem
    if layout == "blocks":
        stem_key: Key = ("stem", fam, st.out, st.kernel[0], st.kernel[1], st.stride[1], t, spec.size)
    else:
        stem_key = ("family_stem", fam, _json(spec.to_dict()["stem"]), _json(dict(getattr(spec, "extra", ()))), t,
                    spec.size)
    yield stem_key, ("stem",), (1, 3, t, spec.size, spec.size)
    h, cin = ceil_div(spec.size, st.stride[1]), st.out
    for i, s in enumerate(spec.stages):
        if layout == "blocks":
            kt, k, b = s.kernel[0], s.kernel[1], s.bottleneck
            for j in range(s.layers):
                stride = s.stride[1] if j == 0 else 1
                yield (("block", fam, cin, b, s.out, kt, k, stride, t, h, int(has_se(j))), ("stages", i, j),
                       (1, cin, t, h, h))
                h, cin = ceil_div(h, stride), s.out
        else:
            stage = spec.to_dict()["stages"][i]
            yield ("stage", fam, cin, _json(stage), t, h), ("stages", i), (1, cin, t, h, h)
            h, cin = ceil_div(h, s.stride[1]), s.out
    yield ("head", cin, spec.head.out, t, h), ("head",), (1, cin, t, h, h)
    yield (("classifier", spec.head.out, spec.hidden, spec.num_classes, t, h), ("classifier",),
           (1, spec.head.out, t, h, h))


def network_blocks(spec: ArchSpec) -> list[tuple[Key, int]]:
    """``[(key, count), ...]``: the distinct blocks of ``spec``'s network and how often each occurs, in order.

    Keys of the ``e3d`` and ``x3d`` families: ``("stem", family, out, kt, k, stride, T, H)``; ``("block",
    family, cin, bottleneck, cout, kt, k, stride, T, H_in, se)``; ``("head", cin, out, T, H)``;
    ``("classifier", cin, hidden, classes, T, H)``, ``H`` the spatial size entering the block (a strided
    'same' conv maps it to ``ceil(H / stride)``). Other families: ``("family_stem", family, stem JSON, extra
    JSON, T, H)`` and one ``("stage", family, cin, stage JSON, T, H_in)`` per stage, or one ``("network", family,
    spec JSON)`` when the family builds another shape of network.
    """
    merged: dict[Key, int] = {}  # two stages can share a key (same widths and size, e.g. E3D-S's 3rd and 4th)
    for key, _, _ in _walk(spec):
        merged[key] = merged.get(key, 0) + 1
    return list(merged.items())


def block_modules(spec: ArchSpec, model: nn.Module) -> Iterator[tuple[Key, nn.Module, tuple[int, ...]]]:
    """``(key, submodule, input shape)`` for every block of the built network, in order (batch 1)."""
    for key, path, shape in _walk(spec):
        module = model
        for step in path:
            module = module[step] if isinstance(step, int) else getattr(module, step)
        yield key, module, shape


def key_to_str(key: Key) -> str:
    return _json(list(key))


def key_from_str(text: str) -> Key:
    return tuple(json.loads(text))
