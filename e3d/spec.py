"""Architecture spec: the one currency between search, cost model, scores, builder and training.

A spec describes the E3D network family of ``docs/spec.md`` (and DESIGN.md): a dense stem conv, stages of
3D inverted-bottleneck blocks, a 1x1x1 head conv and a two-layer classifier. Specs are immutable
dataclasses; ``from_dict``/``to_dict`` round-trip the JSON form and validate every field on the way in.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

from .family import FAMILIES

Triple = tuple[int, int, int]

DEFAULT_HIDDEN = 2048
DEFAULT_NUM_CLASSES = 174  # Something-Something, the paper's main benchmark


class SpecError(ValueError):
    """A spec is malformed; the message names the offending field and value."""


@dataclass(frozen=True)
class ConvSpec:
    """A dense conv (stem or head): ``kernel`` (kt, k, k), ``out`` channels, ``stride`` (1, s, s)."""

    kernel: Triple
    out: int
    stride: Triple = (1, 1, 1)


@dataclass(frozen=True)
class StageSpec:
    """``layers`` inverted-bottleneck blocks; the first takes the stage's input width and its stride."""

    kernel: Triple
    out: int
    bottleneck: int
    layers: int
    stride: Triple = (1, 1, 1)
    extra: "Extra" = ()  # family-specific stage fields (its Family.stage_fields), frozen

    def get(self, key: str, default: Any = None) -> Any:
        """A family-specific field of this stage (``extra``), thawed to lists/dicts."""
        return thaw(dict(self.extra).get(key, default))


@dataclass(frozen=True)
class ArchSpec:
    """A whole network: input clip ``3 x frames x size x size`` through stem, stages, head, classifier."""

    name: str
    frames: int
    size: int
    stem: ConvSpec
    stages: tuple[StageSpec, ...]
    head: ConvSpec
    hidden: int = DEFAULT_HIDDEN
    num_classes: int = DEFAULT_NUM_CLASSES
    sampling_rate: int | None = None
    family: str = "e3d"
    extra: "Extra" = ()  # family-specific top-level fields (its Family.arch_fields), frozen

    def get(self, key: str, default: Any = None) -> Any:
        """A family-specific top-level field (``extra``), thawed to lists/dicts."""
        return thaw(dict(self.extra).get(key, default))

    # -- conversions ---------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, *, where: str = "spec") -> "ArchSpec":
        return _parse_arch(data, where)

    def to_dict(self) -> dict[str, Any]:
        inp: dict[str, Any] = {"frames": self.frames, "size": self.size}
        if self.sampling_rate is not None:
            inp["sampling_rate"] = self.sampling_rate
        out: dict[str, Any] = {"name": self.name}
        if self.family != "e3d":
            out["family"] = self.family
        return out | {
            "input": inp,
            "stem": _conv_dict(self.stem),
            "stages": [_stage_dict(s) for s in self.stages],
            "head": _conv_dict(self.head),
            "classifier": {"hidden": self.hidden, "num_classes": self.num_classes},
        } | {k: thaw(v) for k, v in self.extra}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def key(self) -> tuple:
        """Hashable identity of the architecture (everything but its name)."""
        return (self.family, self.frames, self.size, self.stem, self.stages, self.head, self.hidden,
                self.num_classes, self.extra)

    # -- convenience ---------------------------------------------------------------------------
    def replace(self, **changes: Any) -> "ArchSpec":
        return replace(self, **changes)

    def with_input(self, frames: int | None = None, size: int | None = None) -> "ArchSpec":
        spec = replace(self, frames=frames or self.frames, size=size or self.size)
        validate(spec)
        return spec

    def with_num_classes(self, num_classes: int) -> "ArchSpec":
        spec = replace(self, num_classes=num_classes)
        validate(spec)
        return spec

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(s.layers for s in self.stages)

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(s.out for s in self.stages)

    @property
    def kernel_pattern(self) -> str:
        """Compact kernel summary, e.g. ``155-333-333-333-333`` (kt,k,k per stage)."""
        return "-".join("%d%d%d" % s.kernel for s in self.stages)


# -- JSON helpers ------------------------------------------------------------------------------
def _conv_dict(c: ConvSpec) -> dict[str, Any]:
    return {"kernel": list(c.kernel), "out": c.out, "stride": list(c.stride)}


def _stage_dict(s: StageSpec) -> dict[str, Any]:
    return {"kernel": list(s.kernel), "out": s.out, "bottleneck": s.bottleneck,
            "layers": s.layers, "stride": list(s.stride)} | {k: thaw(v) for k, v in s.extra}


# -- family-specific fields: stored frozen (hashable, comparable), read back as JSON values -------------------
Extra = tuple[tuple[str, Any], ...]


def freeze(value: Any) -> Any:
    """JSON value -> hashable: lists become tuples, objects become ``(("__dict__", ((k, v), ...)),)``."""
    if isinstance(value, dict):
        return ("__dict__", tuple(sorted((str(k), freeze(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The inverse of :func:`freeze`."""
    if isinstance(value, tuple) and len(value) == 2 and value[0] == "__dict__":
        return {k: thaw(v) for k, v in value[1]}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


def make_extra(fields: dict[str, Any]) -> Extra:
    """Family-specific fields as stored in a spec (sorted by name, values frozen)."""
    return tuple(sorted((k, freeze(v)) for k, v in fields.items()))


def _expect_mapping(data: Any, where: str, allowed: Iterable[str], required: Iterable[str]) -> dict:
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected an object, got {type(data).__name__} {data!r}")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise SpecError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
    missing = [k for k in required if k not in data]
    if missing:
        raise SpecError(f"{where}: missing required key {missing[0]!r}")
    return data


def _int(value: Any, where: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise SpecError(f"{where}: must be >= {minimum}, got {value}")
    return value


def _triple(value: Any, where: str) -> Triple:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise SpecError(f"{where}: expected a list of 3 integers [t, h, w], got {value!r}")
    return tuple(_int(v, f"{where}[{i}]") for i, v in enumerate(value))  # type: ignore[return-value]


def _parse_conv(data: Any, where: str) -> ConvSpec:
    d = _expect_mapping(data, where, ("kernel", "out", "stride"), ("kernel", "out"))
    return ConvSpec(kernel=_triple(d["kernel"], f"{where}.kernel"), out=_int(d["out"], f"{where}.out"),
                    stride=_triple(d.get("stride", [1, 1, 1]), f"{where}.stride"))


def _parse_stage(data: Any, where: str, family_fields: tuple[str, ...] = ()) -> StageSpec:
    keys = ("kernel", "out", "bottleneck", "layers", "stride")
    d = _expect_mapping(data, where, keys + family_fields, keys[:4])
    return StageSpec(kernel=_triple(d["kernel"], f"{where}.kernel"), out=_int(d["out"], f"{where}.out"),
                     bottleneck=_int(d["bottleneck"], f"{where}.bottleneck"),
                     layers=_int(d["layers"], f"{where}.layers"),
                     stride=_triple(d.get("stride", [1, 1, 1]), f"{where}.stride"),
                     extra=make_extra({k: d[k] for k in family_fields if k in d}))


def _parse_arch(data: Any, where: str) -> ArchSpec:
    family_name = data.get("family", "e3d") if isinstance(data, dict) else "e3d"
    fam = FAMILIES.get(family_name) if family_name in FAMILIES else None
    arch_fields = tuple(fam.arch_fields) if fam is not None else ()
    stage_fields = tuple(fam.stage_fields) if fam is not None else ()
    d = _expect_mapping(data, where, ("name", "family", "input", "stem", "stages", "head", "classifier")
                        + arch_fields, ("input", "stem", "stages", "head"))
    name = d.get("name", "unnamed")
    if not isinstance(name, str) or not name:
        raise SpecError(f"{where}.name: expected a non-empty string, got {name!r}")
    where = f"{where} {name!r}" if where == "spec" else where
    family = d.get("family", "e3d")
    if family not in family_names():
        raise SpecError(f"{where}.family: expected one of {', '.join(family_names())}, got {family!r}")
    inp = _expect_mapping(d["input"], f"{where}.input", ("frames", "size", "sampling_rate"), ("frames", "size"))
    rate = inp.get("sampling_rate")
    stages = d["stages"]
    if not isinstance(stages, list) or not stages:
        raise SpecError(f"{where}.stages: expected a non-empty list of stages, got {stages!r}")
    cls = _expect_mapping(d.get("classifier", {}), f"{where}.classifier", ("hidden", "num_classes"), ())
    spec = ArchSpec(
        name=name,
        family=family,
        frames=_int(inp["frames"], f"{where}.input.frames"),
        size=_int(inp["size"], f"{where}.input.size"),
        sampling_rate=None if rate is None else _int(rate, f"{where}.input.sampling_rate"),
        stem=_parse_conv(d["stem"], f"{where}.stem"),
        stages=tuple(_parse_stage(s, f"{where}.stages[{i}]", stage_fields) for i, s in enumerate(stages)),
        head=_parse_conv(d["head"], f"{where}.head"),
        hidden=_int(cls.get("hidden", DEFAULT_HIDDEN), f"{where}.classifier.hidden"),
        num_classes=_int(cls.get("num_classes", DEFAULT_NUM_CLASSES), f"{where}.classifier.num_classes"),
        extra=make_extra({k: d[k] for k in arch_fields if k in d}),
    )
    validate(spec, where)
    return spec


# -- semantic validation -----------------------------------------------------------------------
def _check_kernel(kernel: Triple, where: str) -> None:
    kt, kh, kw = kernel
    if kh != kw:
        raise SpecError(f"{where}.kernel: height and width must be equal (square kernels), got {list(kernel)}")
    for axis, k in zip("thw", kernel):
        if k % 2 == 0:
            raise SpecError(f"{where}.kernel: sizes must be odd for 'same' padding, got {axis}={k} in {list(kernel)}")


def _check_stride(stride: Triple, where: str) -> None:
    st, sh, sw = stride
    if st != 1:
        raise SpecError(f"{where}.stride: time is never downsampled, temporal stride must be 1, got {list(stride)}")
    if sh != sw or sh not in (1, 2):
        raise SpecError(f"{where}.stride: spatial stride must be [1, 1, 1] or [1, 2, 2], got {list(stride)}")


def family_names() -> list[str]:
    return FAMILIES.names()


def validate(spec: ArchSpec, where: str | None = None) -> None:
    """Raise :class:`SpecError` naming the field if ``spec`` is not a buildable network."""
    where = where or f"spec {spec.name!r}"
    if spec.family not in FAMILIES:
        raise SpecError(f"{where}.family: expected one of {', '.join(FAMILIES.names())}, got {spec.family!r}")
    _check_kernel(spec.stem.kernel, f"{where}.stem")
    _check_stride(spec.stem.stride, f"{where}.stem")
    size = -(-spec.size // spec.stem.stride[1])
    for i, stage in enumerate(spec.stages):
        w = f"{where}.stages[{i}]"
        _check_kernel(stage.kernel, w)
        _check_stride(stage.stride, w)
        if stage.kernel[0] > spec.frames:
            raise SpecError(f"{w}.kernel: temporal size {stage.kernel[0]} exceeds input frames {spec.frames}")
        size = -(-size // stage.stride[1])
    if spec.head.kernel != (1, 1, 1) or spec.head.stride != (1, 1, 1):
        raise SpecError(f"{where}.head: the head is a 1x1x1 conv with stride 1, got kernel "
                        f"{list(spec.head.kernel)} stride {list(spec.head.stride)}")
    if spec.stem.kernel[0] > spec.frames:
        raise SpecError(f"{where}.stem.kernel: temporal size {spec.stem.kernel[0]} exceeds input frames {spec.frames}")
    if size < 1:  # pragma: no cover - ceil division never reaches 0 from size >= 1
        raise SpecError(f"{where}.input.size: {spec.size} is too small for the network's strides")
    FAMILIES.get(spec.family).validate(spec, where)


# -- files -------------------------------------------------------------------------------------
def load_specs(path: str | Path) -> list[ArchSpec]:
    """Load a JSON file holding one spec object or a list of them."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise SpecError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    items = data if isinstance(data, list) else [data]
    if not items:
        raise SpecError(f"{path}: the list of specs is empty")
    return [ArchSpec.from_dict(item, where=f"{path}" + (f"[{i}]" if isinstance(data, list) else ""))
            for i, item in enumerate(items)]


def load_spec(path: str | Path) -> ArchSpec:
    specs = load_specs(path)
    if len(specs) != 1:
        raise SpecError(f"{path}: expected one spec, found {len(specs)}")
    return specs[0]


def save_specs(specs: ArchSpec | Sequence[ArchSpec], path: str | Path) -> None:
    data: Any = specs.to_dict() if isinstance(specs, ArchSpec) else [s.to_dict() for s in specs]
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
