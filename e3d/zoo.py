"""Registry of named reference architectures (timm-style): E3D-S/M/L, the search's initial structures,
the Table 1 kernel-position variants of X3D-S, and the X3D-XS/S/M/L baselines.

``get(name)`` returns an :class:`~e3d.spec.ArchSpec`; ``names()`` lists what is registered. Sources and the
places where we depart from the paper's tables are in ``docs/zoo.md``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from .spec import ArchSpec, ConvSpec, StageSpec, validate

K133, K155, K333 = (1, 3, 3), (1, 5, 5), (3, 3, 3)

_REGISTRY: dict[str, tuple[Callable[[], ArchSpec], str]] = {}



@dataclass(frozen=True)
class Preset:
    """The paper's settings for one model size: the input (Table 9: frames, crop, sampling rate) and the search's
    FLOPs budget (Sec. 3.4) and layer limit (the official configs': E3D-S/M 83, E3D-L 167, met exactly)."""

    frames: int
    size: int
    sampling_rate: int
    budget_flops: float
    max_layers: int

    @property
    def official_depth_caps(self) -> tuple[int, ...]:
        """Per-stage block caps of the official implementation (not in the paper): 3 for the first stage,
        ``max_layers // 3 // 4`` for the others (6 for S/M, 13 for L: exactly E3D-S/M/L's depths)."""
        return (3,) + (self.max_layers // 3 // 4,) * 4


PRESETS = {"S": Preset(13, 160, 6, 1.9e9, 83), "M": Preset(16, 224, 5, 4.7e9, 83),
           "L": Preset(16, 312, 5, 18.4e9, 167)}


def register(name: str, description: str):
    def deco(fn: Callable[[], ArchSpec]) -> Callable[[], ArchSpec]:
        if name in _REGISTRY:
            raise ValueError(f"zoo entry {name!r} registered twice")
        _REGISTRY[name] = (fn, description)
        return fn
    return deco


def names() -> list[str]:
    return list(_REGISTRY)


def describe(name: str) -> str:
    return _lookup(name)[1]


def get(name: str) -> ArchSpec:
    spec = _lookup(name)[0]()
    validate(spec)
    return spec


def _lookup(name: str) -> tuple[Callable[[], ArchSpec], str]:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = [n for n in _REGISTRY if n.lower() == name.lower()]
        hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(_REGISTRY)}"
        raise KeyError(f"no zoo entry named {name!r}{hint}") from None


def make(name: str, size: str | tuple[int, int, int | None], stages: Sequence[tuple], *, stem: int = 24,
         head: int = 512, num_classes: int = 174, family: str = "e3d") -> ArchSpec:
    """Build a spec from ``(kernel, out, bottleneck, layers, spatial_stride)`` stage tuples."""
    if isinstance(size, str):
        frames, crop, rate = PRESETS[size].frames, PRESETS[size].size, PRESETS[size].sampling_rate
    else:
        frames, crop, rate = size
    return ArchSpec(
        name=name, family=family, frames=frames, size=crop, sampling_rate=rate,
        stem=ConvSpec(kernel=K133, out=stem, stride=(1, 2, 2)),
        stages=tuple(StageSpec(kernel=k, out=o, bottleneck=b, layers=n, stride=(1, s, s))
                     for k, o, b, n, s in stages),
        head=ConvSpec(kernel=(1, 1, 1), out=head), num_classes=num_classes)


# -- E3D family (Table 9, with the official release's 512-wide conv7; see docs/zoo.md) ---------------
@register("E3D-S", "E3D-S (Table 9), 1.9 GFLOPs at 13x160^2")
def e3d_s() -> ArchSpec:
    return make("E3D-S", "S", [(K155, 24, 32, 3, 2), (K333, 48, 96, 6, 2), (K333, 120, 176, 6, 2),
                               (K333, 120, 176, 6, 1), (K333, 256, 384, 6, 2)])


@register("E3D-M", "E3D-M (Table 9), 4.7 GFLOPs at 16x224^2")
def e3d_m() -> ArchSpec:
    return make("E3D-M", "M", [(K155, 24, 32, 3, 2), (K333, 64, 96, 6, 2), (K333, 120, 176, 6, 2),
                               (K333, 120, 176, 6, 1), (K333, 184, 464, 6, 2)])


@register("E3D-L", "E3D-L (Table 9), 18.4 GFLOPs at 16x312^2")
def e3d_l() -> ArchSpec:
    return make("E3D-L", "L", [(K155, 24, 32, 3, 2), (K333, 48, 120, 13, 2), (K333, 120, 176, 13, 2),
                               (K333, 120, 176, 13, 1), (K333, 192, 480, 13, 2)])


# -- the evolutionary search's initial structure (Table 8) at each preset's input size ----------------
def initial_structure(size: str = "S") -> ArchSpec:
    """Table 8: five one-block stages, well under a third of the preset's FLOPs budget."""
    return make(f"E3D-init-{size}", size, [(K333, 24, 48, 1, 2), (K333, 48, 96, 1, 2), (K333, 96, 192, 1, 2),
                                          (K333, 96, 192, 1, 1), (K333, 192, 384, 1, 2)])


for _size in PRESETS:
    register(f"E3D-init-{_size}", f"initial search structure (Table 8) at the {_size} input size")(
        lambda _size=_size: initial_structure(_size))


# -- Table 1: X3D-S with one stage's kernel swapped (stage 4 of X3D split into 5 + 6 layers) ---------
_X3DS_STAGES = [(24, 54, 3, 2), (48, 108, 5, 2), (96, 216, 5, 2), (96, 216, 6, 1), (192, 432, 7, 2)]


def table1_variant(kind: str, stage: int) -> ArchSpec:
    """``S-N``: only stage N uses 1x5x5 (others 3x3x3); ``T-N``: only stage N uses 3x3x3 (others 1x5x5)."""
    if kind not in ("S", "T") or not 2 <= stage <= 6:
        raise ValueError(f"Table 1 variants are S-2..S-6 and T-2..T-6, got {kind}-{stage}")
    odd, rest = (K155, K333) if kind == "S" else (K333, K155)
    return make(f"{kind}-{stage}", "S", [(odd if i + 2 == stage else rest, o, b, n, s)
                                        for i, (o, b, n, s) in enumerate(_X3DS_STAGES)], head=432)


for _kind in "ST":
    for _stage in range(2, 7):
        register(f"{_kind}-{_stage}", f"Table 1 variant of X3D-S: {_kind}-{_stage}")(
            lambda _kind=_kind, _stage=_stage: table1_variant(_kind, _stage))


# -- X3D baselines (Feichtenhofer 2020, Table 3 and the reference implementation) --------------------
_X3D_INPUTS = {"XS": (4, 160, 12), "S": (13, 160, 6), "M": (16, 224, 5), "L": (16, 312, 5)}
_X3D_DEPTHS = {"XS": (3, 5, 11, 7), "S": (3, 5, 11, 7), "M": (3, 5, 11, 7), "L": (5, 10, 25, 15)}


def x3d(size: str, num_classes: int = 400) -> ArchSpec:
    """X3D-{XS,S,M,L}: widths 24/48/96/192, expansion 2.25, 3x3x3 depthwise, conv5 432, fc 2048.

    XS is the S network on 4 frames; L is deeper (5, 10, 25, 15 blocks) at 312^2.
    """
    widths = (24, 48, 96, 192)
    stages = [(K333, w, int(2.25 * w), n, 2) for w, n in zip(widths, _X3D_DEPTHS[size])]
    return make(f"X3D-{size}", _X3D_INPUTS[size], stages, head=432, num_classes=num_classes, family="x3d")


for _size in _X3D_DEPTHS:
    register(f"X3D-{_size}", f"X3D-{_size} baseline (Kinetics-400 head)")(lambda _size=_size: x3d(_size))


def resolve_specs(items: Sequence[str]) -> list[ArchSpec]:
    """Zoo names or spec JSON files (one spec or a list per file), in order; :class:`SpecError` naming the
    item when it is neither."""
    from pathlib import Path  # noqa: PLC0415

    from .spec import SpecError, load_specs  # noqa: PLC0415

    specs: list[ArchSpec] = []
    for item in items:
        if Path(item).suffix == ".json" or Path(item).is_file():
            specs.extend(load_specs(item))
        else:
            try:
                specs.append(get(item))
            except KeyError as exc:
                raise SpecError(f"{item!r} is neither a spec file nor a zoo entry ({exc.args[0]})") from None
    return specs


# -- two-stream nets (family "twostream", Auto-TSNet's space; docs/parsec.md): hand-made, not searched --------
def two_stream(name: str, frames: int, size: int, alpha: int, sparse: Sequence[tuple], dense: Sequence[tuple],
               fusion: Sequence[str], *, stem: int = 24, dense_stem: int = 8, head: int = 432,
               num_classes: int = 400) -> ArchSpec:
    """A ``twostream`` spec from ``(kernel, out, bottleneck, layers)`` tuples per stream (every stage strided 2)."""
    from .spec import make_extra  # noqa: PLC0415

    return ArchSpec(
        name=name, family="twostream", frames=frames, size=size,
        stem=ConvSpec(kernel=K133, out=stem, stride=(1, 2, 2)),
        stages=tuple(StageSpec(kernel=k, out=o, bottleneck=b, layers=n, stride=(1, 2, 2)) for k, o, b, n in sparse),
        head=ConvSpec(kernel=(1, 1, 1), out=head), num_classes=num_classes,
        extra=make_extra({"alpha": alpha, "fusion": list(fusion),
                          "dense": {"stem": {"kernel": list(K133), "out": dense_stem},
                                    "stages": [{"kernel": list(k), "out": o, "bottleneck": b, "layers": n}
                                               for k, o, b, n in dense]}}))


_TS_FUSION = ("tconv", "t2c", "tsample", "tconv")


@register("TS-S", "two-stream net (hand-made): X3D-like sparse stream on 4 of 16 frames, 1/4-wide dense stream, "
                  "0.59 GFLOPs at 16x160^2")
def two_stream_s() -> ArchSpec:
    return two_stream("TS-S", 16, 160, 4, [(K155, 24, 54, 2), (K333, 48, 108, 4), (K333, 96, 216, 8),
                                           (K333, 192, 432, 4)],
                      [(K333, 8, 24, 1), (K333, 16, 40, 2), (K333, 24, 56, 3), (K333, 48, 112, 2)], _TS_FUSION)


@register("TS-M", "two-stream net (hand-made): X3D-S depths on the sparse stream, 1.57 GFLOPs at 16x224^2")
def two_stream_m() -> ArchSpec:
    return two_stream("TS-M", 16, 224, 4, [(K155, 24, 54, 3), (K333, 48, 108, 5), (K333, 96, 216, 11),
                                           (K333, 192, 432, 7)],
                      [(K333, 8, 24, 2), (K333, 16, 40, 3), (K333, 24, 56, 5), (K333, 48, 112, 3)], _TS_FUSION)


# -- DNAS-K400: Zhou et al. 2021 (ACML), Table 3 (family "r2plus1d"; docs/dnas.md) ----------------------------
# stage: (width, temporal dilation of each stack layer, spatial stride); the stem (stage 1) is 32 wide, stride 2
_DNAS_K400 = ((64, (), 2), (96, (), 2), (160, (4, 4, 4, 1, 1, 4), 2), (224, (2, 4), 2), (288, (2, 2, 1), 1),
              (512, (2,), 1))


@register("DNAS-K400", "Zhou et al. 2021 Table 3: the (2+1)D network searched on Kinetics-400, 16x224^2 "
                       "(19.2 GFLOPs here vs 15.78 printed; docs/dnas.md)")
def dnas_k400() -> ArchSpec:
    from .spec import make_extra  # noqa: PLC0415

    stages = tuple(StageSpec(kernel=K333, out=w, bottleneck=w, layers=1 + len(d), stride=(1, s, s),
                             extra=make_extra({"dilations": list(d)})) for w, d, s in _DNAS_K400)
    return ArchSpec(name="DNAS-K400", family="r2plus1d", frames=16, size=224, sampling_rate=1,
                    stem=ConvSpec(kernel=(3, 7, 7), out=32, stride=(1, 2, 2)), stages=stages,
                    head=ConvSpec(kernel=(1, 1, 1), out=512), hidden=2048, num_classes=400)
