"""Forward-inference training-free proxies: Zen, MAE-DET entropy, NASWOT, SynFlow.

:mod:`e3d.scores` registers them by path (``declare_score(..., "e3d.proxies:zen")``): this module, and torch with
it, is imported when one is first evaluated, never to list or choose scores.

Unlike the analytic scores of :mod:`e3d.scores` these build the training network of a spec
(:func:`e3d.model.build_model`), re-initialise it for the proxy and run it: milliseconds to seconds per
evaluation instead of microseconds. One call is one evaluation for one seed; the registry's
``Score.evaluate(spec, repeats=r, seed=s)`` averages seeds. Every formula, its source and the choices made
for 3D video networks are in ``docs/scores.md`` ("Forward proxies").

    zen      log E|f(x) - f(x + 0.01 e)|_1 + sum_BN log sqrt(mean batch variance)   Lin et al., ICCV 2021
    maedet   log std(F) + ln C_out, Gaussian weights and input, BN as identity      Sun et al., ICML 2022
    naswot   log det K_H, K_H = N_A - Hamming distance of ReLU codes of real clips  Mellor et al., ICML 2021
    synflow  log sum |theta * dR/dtheta|, |theta|, all-ones input, BN as identity   Tanaka et al., NeurIPS 2020

The *trunk* (:func:`trunk`) of a ``VideoNet`` is the chain every path from input to output goes through:
its children, recursively through ``nn.Sequential`` containers (stem layers, blocks, head layers,
classifier). MAE-DET and SynFlow rescale activations at those cut points by a detached scalar and add its
log back, so deep 3D nets neither overflow float32 nor need float64 (exact for positively homogeneous
networks; see ``docs/scores.md``). A network that is not one chain (two streams) runs in float64 instead.

Evaluations run on the CPU, on one torch thread, inside ``torch.random.fork_rng``: seeded, and the
caller's random state and thread count are left as they were.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator

import torch
from torch import nn

from .latency import torch_threads
from .model import build_model
from .spec import ArchSpec

GAUSSIAN_BATCH = 4      # clips of N(0, 1) noise per evaluation (zen, maedet)
ZEN_ALPHA = 0.01        # Zen's input perturbation (mixup_gamma of the reference code)
_BATCHNORM = nn.modules.batchnorm._BatchNorm
_CODE_ACTIVATIONS = (nn.ReLU, nn.SiLU)  # NASWOT codes: the sign of the activation's input


# -- building and initialising ----------------------------------------------------------------------
@contextlib.contextmanager
def seeded(seed: int, threads: int | None = 1) -> Iterator[None]:
    """Run the block with torch's CPU generator seeded ``seed`` and ``threads`` intra-op threads; the caller's
    RNG state and thread count are restored. One thread: a proxy evaluates small tensors, parallelism comes
    from scoring specs in parallel processes, and on a loaded machine two OpenMP threads made an E3D-S
    evaluation at 4x32^2 20-30x slower (13-20 s instead of 0.6 s)."""
    with torch_threads(threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


def build(spec: ArchSpec, proxy: str) -> nn.Module:
    """The training network of ``spec``; a spec that cannot be built raises ``ValueError`` naming it."""
    try:
        return build_model(spec)
    except Exception as exc:  # noqa: BLE001 - re-raised with the spec's name
        raise ValueError(f"{proxy}: cannot build spec {spec.name!r} "
                         f"({spec.frames}x{spec.size}^2): {type(exc).__name__}: {exc}") from exc


def gaussian_init(model: nn.Module, std: float = 1.0) -> None:
    """Zen/MAE-DET init: conv and linear weights N(0, std^2), biases 0, BN gamma 1 / beta 0, fresh stats."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv3d, nn.Linear)):
                m.weight.normal_(0.0, std)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, _BATCHNORM):
                m.reset_parameters()  # gamma 1, beta 0, running mean 0 / var 1


def torch_default_init(model: nn.Module) -> None:
    """PyTorch's default init on every layer (what NASWOT and SynFlow score; the ``"torch"`` recipe init)."""
    for m in model.modules():
        if m is not model and hasattr(m, "reset_parameters"):
            m.reset_parameters()


def bn_as_identity(model: nn.Module) -> None:
    """Every BN in eval mode with mean 0, variance 1, gamma 1, beta 0 and eps 0: exactly the identity."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _BATCHNORM):
                m.reset_parameters()
                m.eps = 0.0
                m.eval()


def trunk(model: nn.Module) -> list[nn.Module]:
    """The cut points of ``model``: modules whose output every path from input to output goes through.

    For an ``nn.Sequential`` and for :class:`e3d.model.VideoNet` (whose ``features`` chains stem, stages and
    head, then the classifier): the children, recursively through ``nn.Sequential`` containers (stem
    layers, blocks, head layers, classifier). Any other network (e.g. the two streams of the ``twostream``
    family's ``TwoStreamNet``) is not known to be one chain: ``[]``, and the proxies that rescale at cut
    points compute in float64 without rescaling instead.
    """
    from .model import VideoNet

    if not isinstance(model, (VideoNet, nn.Sequential)):
        return []

    def chain(m: nn.Module) -> list[nn.Module]:
        out: list[nn.Module] = []
        for child in m.children():
            out.extend(chain(child) if isinstance(child, nn.Sequential) else [child])
        return out

    return chain(model)


def _log_std(y: torch.Tensor) -> float:
    """``log std(y)`` without squaring large values (a float64 forward can reach e^300)."""
    m = float(y.detach().abs().max())
    if not m > 0 or not math.isfinite(m):
        return -math.inf if m == 0 else math.nan
    s = float((y.detach() / m).std())
    return math.log(m) + math.log(s) if s > 0 else -math.inf


@contextlib.contextmanager
def hooks(modules: list[nn.Module], hook: Callable, *, pre: bool = False) -> Iterator[None]:
    handles = [m.register_forward_pre_hook(hook) if pre else m.register_forward_hook(hook) for m in modules]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _modules(model: nn.Module, kinds: tuple[type, ...]) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, kinds)]


def gaussian_clips(spec: ArchSpec, batch: int = GAUSSIAN_BATCH) -> torch.Tensor:
    return torch.randn(batch, 3, spec.frames, spec.size, spec.size)


# -- the formulas, on any module (the Fig. 4 benchmark and the tests call them directly) ---------------
def forward_entropy(run: Callable[[torch.Tensor], torch.Tensor], cut_points: list[nn.Module],
                    x: torch.Tensor) -> float:
    """MAE-DET's entropy of the output ``F = run(x)``: ``log std(F) + ln C_out``.

    The output of every cut point is divided by its standard deviation and the log of it added to the
    score (the reference code normalises after every block the same way): the value equals the plain
    forward's ``log std(F)`` whenever the network is positively homogeneous (convs, ReLU, BN as identity,
    pooling, residual sums) and stays in float32 range for any depth.
    """
    logs: list[float] = []

    def rescale(_module, _inputs, out):
        s = float(out.std())
        logs.append(math.log(s) if s > 0 else -math.inf)
        return out / s if s > 0 else out

    with torch.no_grad(), hooks(cut_points, rescale):
        y = run(x)
    return math.fsum(logs) + _log_std(y) + math.log(y.shape[1])


def zen_score(model: nn.Module, run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
              alpha: float = ZEN_ALPHA) -> float:
    """Zen-score of ``run`` (the network without its classifier), BN in train mode:
    ``log mean_b sum |f(x) - f(x + alpha e)| + sum_BN log sqrt(mean_c Var_batch)`` (Lin et al., Eq. 6;
    the L1 difference and no division by alpha as in the reference code; the BN term from the batch
    variance of the unperturbed pass, where the reference code reads the momentum-blurred running variance)."""
    log_sigmas: list[float] = []

    def bn_variance(_module, inputs):
        v = inputs[0].var(dim=[d for d in range(inputs[0].dim()) if d != 1], unbiased=False)
        log_sigmas.append(0.5 * math.log(float(v.mean())))

    model.train()
    with torch.no_grad():
        with hooks(_modules(model, (_BATCHNORM,)), bn_variance, pre=True):
            f = run(x)
        f_mixed = run(x + alpha * torch.randn_like(x))
    diff = float((f - f_mixed).abs().flatten(1).sum(1).mean())
    return (math.log(diff) if diff > 0 else -math.inf) + math.fsum(log_sigmas)


def naswot_kernel(model: nn.Module, run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``K_H[i, j] = sum over activation units of [code_i == code_j]`` = N_A - Hamming(code_i, code_j), the
    binary code of a clip being the sign pattern at the input of every ReLU (and SiLU) of ``run``."""
    k = torch.zeros(x.shape[0], x.shape[0], dtype=torch.float64)

    def count(_module, inputs):
        c = (inputs[0].flatten(1) > 0).float()  # (B, units); integer-valued products are exact below 2^24
        k.add_((c @ c.t() + (1 - c) @ (1 - c).t()).double())

    model.train()
    with torch.no_grad(), hooks(_modules(model, _CODE_ACTIVATIONS), count, pre=True):
        run(x)
    return k


def log_det(k: torch.Tensor) -> float:
    """``log det K`` (``-inf`` when singular, e.g. two clips with identical codes)."""
    sign, logabs = torch.linalg.slogdet(k)
    return float(logabs) if float(sign) > 0 else -math.inf


def synflow_score(model: nn.Module, x: torch.Tensor, cut_points: list[nn.Module]) -> float:
    """``log sum_theta |theta * dR/dtheta|`` with ``R = sum model(x)`` on the sign-linearised network: every
    conv and linear weight and bias replaced by its absolute value (signs restored afterwards), SiLU taken as
    the identity like ReLU (all activations are positive); BN should be the identity (:func:`bn_as_identity`).
    Conv and linear weights and biases are scored.

    Activations are divided by their mean at every cut point (the divisor detached) and each bias by the
    product of the divisors before it: ``R`` and every ``dR/dtheta`` then shrink by one known product whose
    log is added back, exact for positively homogeneous networks (SE gates are not: they see activations of
    order 1 instead of huge ones, and saturate near 1 either way), so no float64 is needed.
    """
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv3d, nn.Linear))]
    params = [p for m in layers for p in m.parameters(recurse=False)]
    log_scale = [0.0]  # log of the product of the divisors so far

    def scale_bias(module, _inputs, out):
        if module.bias is None or log_scale[0] == 0.0:
            return out
        b = module.bias.view((1, -1) + (1,) * (out.dim() - 2))
        return out - b + b * math.exp(-log_scale[0])

    def rescale(_module, _inputs, out):
        c = float(out.detach().abs().mean())
        if not c > 0:
            return out
        log_scale[0] += math.log(c)
        return out / c

    with torch.no_grad():
        signs = [torch.sign(p) for p in params]
        for p in params:
            p.abs_()
    try:
        model.zero_grad(set_to_none=True)
        with hooks(layers, scale_bias), hooks(cut_points, rescale), \
                hooks(_modules(model, (nn.SiLU,)), lambda _m, inputs, _out: inputs[0]):
            model(x).sum().backward()
        total = math.fsum(float((p.detach() * p.grad).sum()) for p in params if p.grad is not None)
    finally:
        with torch.no_grad():
            for p, s in zip(params, signs):
                p.mul_(s)
        model.zero_grad(set_to_none=True)
    return (math.log(total) if total > 0 else -math.inf) + log_scale[0]


# -- the scores e3d.scores declares (one evaluation per seed) -------------------------------------------------
@contextlib.contextmanager
def named_errors(proxy: str, spec: ArchSpec) -> Iterator[None]:
    """A network that fails to run inside torch (e.g. out of memory, an unsupported op) raises
    ``ValueError`` naming the proxy and the spec."""
    try:
        yield
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{proxy}: spec {spec.name!r} cannot run at {spec.frames}x{spec.size}^2: {first}") from exc


def _checked(name: str, spec: ArchSpec, value: float) -> float:
    if math.isnan(value) or value == math.inf:
        raise ValueError(f"{name}: spec {spec.name!r} ({spec.frames}x{spec.size}^2) gave a non-finite score {value}")
    return value


def zen(spec: ArchSpec, *, seed: int = 0, batch: Any = None) -> float:
    with seeded(seed), named_errors("zen", spec):
        model = build(spec, "zen")
        gaussian_init(model)
        value = zen_score(model, model.features, gaussian_clips(spec))
    return _checked("zen", spec, value)


def maedet(spec: ArchSpec, *, seed: int = 0, batch: Any = None) -> float:
    with seeded(seed), named_errors("maedet", spec):
        model = build(spec, "maedet")
        gaussian_init(model)
        bn_as_identity(model)
        cuts, x = trunk(model), gaussian_clips(spec)
        if not cuts:  # not one chain: no rescaling, float64 instead (log std up to ~700)
            model, x = model.double(), x.double()
        value = forward_entropy(model.features, cuts, x)
    return _checked("maedet", spec, value)


def naswot(spec: ArchSpec, *, seed: int = 0, batch: Any = None) -> float:
    x = torch.as_tensor(batch, dtype=torch.float32)
    if x.dim() != 5 or x.shape[1] != 3 or x.shape[0] < 2:
        raise ValueError(f"naswot: batch must be (B >= 2, 3, T, H, W) clips, got shape {tuple(x.shape)}")
    with seeded(seed), named_errors("naswot", spec):
        model = build(spec, "naswot")
        torch_default_init(model)
        value = log_det(naswot_kernel(model, model.features, x))
    return _checked("naswot", spec, value)


def synflow(spec: ArchSpec, *, seed: int = 0, batch: Any = None) -> float:
    with seeded(seed), named_errors("synflow", spec):
        model = build(spec, "synflow")
        torch_default_init(model)
        bn_as_identity(model)
        model.eval()  # dropout off
        cuts, x = trunk(model), torch.ones(1, 3, spec.frames, spec.size, spec.size)
        if not cuts:  # not one chain: no rescaling, float64 instead (a sum up to ~e^700)
            model, x = model.double(), x.double()
        value = synflow_score(model, x, cuts)
    return _checked("synflow", spec, value)
