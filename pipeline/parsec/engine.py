"""One worker's PARSEC search without Ray: the supernet, the architecture distribution, both optimizers and
the epoch loop. :mod:`pipeline.parsec.loop` runs it inside Ray Train; tests run it directly.

    engine = ParsecEngine(settings, space, seed=0, lr=0.02, steps_per_epoch=9)
    for epoch in range(settings.epochs):
        row = engine.run_epoch(batches)            # K architectures per step, weights (SGD) + alpha (Adam)
        row |= engine.validate(val_batches)        # the most probable architecture on held-out clips
        engine.end_epoch(row)
    engine.state_dict()                            # everything to resume: weights, alpha, optimizers, history

A step (supplement §1): sample ``K`` architectures from ``P(A | alpha)`` (seeded per epoch, so a resumed run
draws what an uninterrupted one would), run each on the batch (``l_k``, the summed log-likelihood), weight them
by ``v = softmax(l)``, take one SGD step on ``-sum_k v_k l_k``, then, after the part's warm-up, one Adam step on
alpha with :func:`e3d.parsec.distribution.surrogate`. The K graphs are kept until the weighted backward;
with ``recompute`` (less memory) the K forwards run without graphs and the architectures holding all but 0.1 %
of the weight run again with gradients. With several workers the log-likelihoods and the
weight gradients are summed over all of them; every worker draws the same architectures.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from e3d.parsec.distribution import ArchDistribution, flops_penalty, posterior_weights, surrogate
from e3d.parsec.space import TwoStreamSpace
from e3d.parsec.supernet import TwoStreamSupernet
from e3d.spec import ArchSpec
from e3d.strategies.parsec import ParsecSettings
from pipeline.train.optim import make_optimizer, make_scheduler
from pipeline.train.recipe import Recipe

KEPT_WEIGHT = 0.999  # the architectures run again with gradients hold at least this share of v
CALIBRATION_BATCHES = 4  # training batches that re-estimate BN statistics for the validated architecture


def search_recipe(settings: ParsecSettings, lr: float) -> Recipe:
    """The weights' schedule: SGD (momentum 0.9, weight decay 5e-5 on conv/linear weights), half-cosine over the
    search, no rate warm-up (the warm-up of Table 2 freezes alpha instead)."""
    return Recipe(name="parsec", epochs=settings.epochs, batch_size=settings.batch_size, lr=lr, warmup_epochs=0.0,
                  weight_decay=settings.weight_decay, momentum=settings.momentum, init="torch", amp=False)


class ParsecEngine:
    """The search state of one worker (identical on every worker but for BN statistics)."""

    def __init__(self, settings: ParsecSettings, space: TwoStreamSpace, *, seed: int = 0, lr: float,
                 steps_per_epoch: int, device: torch.device | str = "cpu",
                 all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.settings, self.space, self.seed, self.device = settings, space, int(seed), torch.device(device)
        self.all_reduce = all_reduce
        torch.manual_seed(self.seed)
        self.supernet = TwoStreamSupernet(space).to(self.device)
        self.dist = ArchDistribution(space.sizes)
        self.recipe = search_recipe(settings, lr)
        self.opt_w = make_optimizer(self.supernet, self.recipe, lr)
        self.sched = make_scheduler(self.opt_w, self.recipe, steps_per_epoch)
        self.opt_a = torch.optim.Adam([self.dist.alpha], lr=settings.arch_lr, weight_decay=0.0)
        self.epoch, self.total_steps = 0, 0
        self.history: list[dict[str, Any]] = []
        self.fixed: dict[int, int] = {}  # staged search: the sparse stream's choices, fixed for the second part
        self._specs: dict[tuple[int, ...], ArchSpec] = {}
        self._calibration: list[tuple[torch.Tensor, torch.Tensor]] = []
        streams = [v.stream for v in space.variables]
        self.variables = {"all": list(range(len(streams))),
                          "sparse": [i for i, s in enumerate(streams) if s == "sparse"],
                          "dense+fusion": [i for i, s in enumerate(streams) if s != "sparse"]}

    # -- helpers ---------------------------------------------------------------------------------------
    def spec(self, index: Sequence[int]) -> ArchSpec:
        key = tuple(int(j) for j in index)
        if key not in self._specs:
            self._specs[key] = self.space.decode(key)
        return self._specs[key]

    def penalty(self, flops: float) -> float:
        return flops_penalty(flops, self.settings.t_min, self.settings.t_max)

    def expected_flops(self, draws: int, generator: torch.Generator) -> float:
        """Monte-Carlo estimate of E[F(A)] under the current distribution (``draws`` draws)."""
        index = self.dist.sample(draws, generator, self.fixed)
        return float(sum(self.space.flops(r) for r in index.tolist())) / draws

    def _sum(self, t: torch.Tensor) -> torch.Tensor:
        return self.all_reduce(t) if self.all_reduce is not None else t

    # -- one step --------------------------------------------------------------------------------------
    def train_step(self, x: torch.Tensor, y: torch.Tensor, *, update_arch: bool, variables: Sequence[int],
                   generator: torch.Generator) -> dict[str, float]:
        s = self.settings
        index = self.dist.sample(s.samples, generator, self.fixed)
        rows = [tuple(r) for r in index.tolist()]
        specs = [self.spec(r) for r in rows]
        flops = [self.space.flops(r) for r in rows]
        penalty = torch.tensor([self.penalty(f) for f in flops], dtype=torch.float64)
        net = self.supernet.train()
        self.opt_w.zero_grad(set_to_none=True)
        if s.recompute:  # score without graphs, then run again the architectures that carry the weight
            with torch.no_grad():
                ll = torch.stack([-F.cross_entropy(net(x, sp), y, reduction="sum") for sp in specs])
            losses = None
        else:  # one forward per architecture, every graph kept until the weighted backward
            losses = [F.cross_entropy(net(x, sp), y, reduction="sum") for sp in specs]
            ll = -torch.stack([loss.detach() for loss in losses])
        packed = self._sum(torch.cat([ll.double().cpu(), torch.tensor([float(y.numel())], dtype=torch.float64)]))
        ll, clips = packed[:-1], float(packed[-1])
        v = posterior_weights(ll)

        # weights: -sum_k v_k l_k / clips (with recompute: over the architectures holding KEPT_WEIGHT of v)
        if losses is not None:
            kept = list(range(len(rows)))
            sum(float(v[k]) * losses[k] for k in kept).div(clips).backward()
            weighted_ce = sum(float(v[k]) * float(losses[k].detach()) for k in kept)
        else:
            order = sorted(range(len(rows)), key=lambda k: -float(v[k]))
            kept, mass = [], 0.0
            for k in order:
                kept.append(k)
                mass += float(v[k])
                if mass >= KEPT_WEIGHT:
                    break
            weighted_ce = 0.0
            for k in kept:
                loss = F.cross_entropy(net(x, specs[k]), y, reduction="sum")
                (float(v[k]) * loss / clips).backward()
                weighted_ce += float(v[k]) * float(loss.detach())
        if self.all_reduce is not None:
            for p in self.supernet.parameters():
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                p.grad = self.all_reduce(p.grad)
        self.opt_w.step()
        self.sched.step()

        # alpha: Eq. 1-3 through the surrogate (its statistics are logged in the warm-up too)
        lp = self.dist.log_prob(index, variables)
        value, terms = surrogate(lp, ll, penalty, beta=s.beta, epsilon=s.epsilon)
        if update_arch:
            self.opt_a.zero_grad(set_to_none=True)
            value.backward()
            self.opt_a.step()
        self.total_steps += 1
        data_nll = terms.data_nll / clips
        return {"data_nll": data_nll, "loss": data_nll + terms.cost_term, "cost_term": terms.cost_term,
                "penalty": terms.cost, "weighted_ce": self._sum(torch.tensor(weighted_ce)).item() / clips,
                "sampled_gflops": sum(flops) / len(flops) / 1e9, "weight_max": max(terms.weights),
                "trained_archs": float(len(kept))}

    # -- one epoch -------------------------------------------------------------------------------------
    def run_epoch(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                  on_step: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, Any]:
        """Train one epoch on ``batches`` ((clips, labels) on the engine's device); returns its history row."""
        s, epoch = self.settings, self.epoch
        part, first, _ = s.part_of(epoch)
        if part == "dense+fusion" and not self.fixed:
            mode = self.dist.mode()
            self.fixed = {v: mode[v] for v in self.variables["sparse"]}
        update = s.updates_arch(epoch)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        expect_gen = torch.Generator().manual_seed(self.seed * 1_000_033 + epoch)
        torch.manual_seed(self.seed * 7919 + epoch)  # dropout
        t0, cpu0 = time.perf_counter(), time.process_time()
        sums: dict[str, float] = {}
        steps = 0
        self._calibration = []
        for x, y in batches:
            stats = self.train_step(x, y, update_arch=update, variables=self.variables[part], generator=generator)
            stats["entropy"] = self.dist.entropy()
            stats["expected_gflops"] = self.expected_flops(s.expected_draws, expect_gen) / 1e9
            for k, val in stats.items():
                sums[k] = sums.get(k, 0.0) + val
            steps += 1
            self._calibration = (self._calibration + [(x, y)])[-CALIBRATION_BATCHES:]
            if on_step is not None:
                on_step(self.total_steps, stats)
        mode = self.dist.mode()
        mode_flops = self.space.flops(mode)
        with torch.no_grad():
            mode_lp = float(self.dist.log_prob(torch.tensor([mode])).item())
        row: dict[str, Any] = {"epoch": epoch + 1, "step": epoch + 1, "total_iterations": self.total_steps,
                               "part": part, "arch_updates": int(update), "steps": steps,
                               "lr": self.opt_w.param_groups[0]["lr"]}
        row |= {k: v / max(1, steps) for k, v in sums.items()}
        row |= {"entropy": self.dist.entropy(), "mode_gflops": mode_flops / 1e9, "mode_log_prob": mode_lp,
                "best": mode_lp, "mode_in_band": int(s.t_min <= mode_flops <= s.t_max),
                "mode_penalty": self.penalty(mode_flops), "train_time_s": time.perf_counter() - t0,
                "cpu_s": time.process_time() - cpu0}
        return row

    @torch.no_grad()
    def validate(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
        """Top-1 and loss of the most probable architecture (BN statistics re-estimated for it on the epoch's
        last training batches first: the shared statistics mix every architecture's)."""
        spec, net = self.spec(self.dist.mode()), self.supernet
        bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm3d)]
        if self._calibration:
            momenta = [m.momentum for m in bns]
            for m in bns:
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the calibration batches
            net.train()
            for x, _ in self._calibration:
                net(x, spec)
            for m, mom in zip(bns, momenta):
                m.momentum = mom
        net.eval()
        t0 = time.perf_counter()
        correct = total = loss = 0.0
        for x, y in batches:
            logits = net(x, spec)
            correct += float((logits.argmax(1) == y).sum())
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            total += y.numel()
        sums = self._sum(torch.tensor([correct, loss, total], dtype=torch.float64)).tolist()
        if sums[2] == 0:
            return {}
        return {"val_top1": 100.0 * sums[0] / sums[2], "val_loss": sums[1] / sums[2],
                "val_time_s": time.perf_counter() - t0}

    def end_epoch(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        self.epoch += 1

    # -- state -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"supernet": self.supernet.state_dict(), "alpha": self.dist.alpha.detach().cpu().clone(),
                "opt_w": self.opt_w.state_dict(), "sched": self.sched.state_dict(), "opt_a": self.opt_a.state_dict(),
                "epoch": self.epoch, "total_steps": self.total_steps, "history": self.history,
                "fixed": dict(self.fixed), "settings": self.settings.to_dict(), "sizes": self.space.sizes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["sizes"]) != list(self.space.sizes):
            raise ValueError(f"checkpoint of another space (variables {state['sizes']} vs {self.space.sizes})")
        self.supernet.load_state_dict(state["supernet"])
        with torch.no_grad():
            self.dist.alpha.copy_(state["alpha"])
        self.opt_w.load_state_dict(state["opt_w"])
        self.sched.load_state_dict(state["sched"])
        self.opt_a.load_state_dict(state["opt_a"])
        self.epoch, self.total_steps = int(state["epoch"]), int(state["total_steps"])
        self.history = list(state["history"])
        self.fixed = {int(k): int(v) for k, v in state["fixed"].items()}


def mode_summary(space: TwoStreamSpace, alpha: torch.Tensor) -> dict[str, Any]:
    """Probabilities of every variable's choices under ``alpha`` (for distribution.json)."""
    dist = ArchDistribution(space.sizes)
    with torch.no_grad():
        dist.alpha.copy_(alpha)
    probs = dist.probs()
    return {v.name: {"choices": [list(c) if isinstance(c, tuple) else c for c in v.choices],
                     "probs": [round(p, 6) for p in pr]} for v, pr in zip(space.variables, probs)} | {
        "_entropy": dist.entropy(), "_mode": list(dist.mode()), "_mode_log_prob": math.fsum(
            math.log(pr[j]) for pr, j in zip(probs, dist.mode()))}
