"""The ``fusion`` strategy: gate relaxation, the KL regulariser's gradient, the template's gating, the analysis,
the strategy's checks, and the main job end to end in quick mode (template on Ray Train -> probabilities ->
Opt on the backbone -> training)."""
import csv
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from e3d.strategy import Budget, Clip, RequestError, SearchRequest, get_strategy
from e3d.fusion import analysis
from e3d.fusion.template import (FusionLayer, TemplateNet, TemplateSettings, concrete_drop, kl_regulariser,
                                      posterior)


# -- the gates ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.15, 0.6])
def test_concrete_samples_approach_bernoulli_as_tau_goes_to_zero(p):
    """Eq. S13: P(e > 1/2) = p at every temperature; as tau -> 0 the samples become 0/1 with mean p."""
    g = torch.Generator().manual_seed(0)
    logit = torch.full((20_000,), math.log(p / (1 - p)), dtype=torch.float64)
    n = logit.numel()
    sigma = math.sqrt(p * (1 - p) / n)
    distance = []
    for tau in (2.0, 0.5, 0.1, 0.01):
        e = concrete_drop(logit, tau, generator=g)
        assert float((e > 0.5).double().mean()) == pytest.approx(p, abs=5 * sigma)
        distance.append(float(torch.minimum(e, 1 - e).mean()))  # how far from {0, 1}
    assert distance == sorted(distance, reverse=True) and distance[0] > 0.15 and distance[-1] < 0.01
    e = concrete_drop(logit, 0.01, generator=g)
    assert float(e.mean()) == pytest.approx(p, abs=5 * sigma + 0.01)
    # per-example samples: (batch, *shape), independent across the batch
    batch = concrete_drop(torch.zeros(3, 2), 0.1, batch=5, generator=g)
    assert batch.shape == (5, 3, 2) and len({round(float(v), 6) for v in batch[:, 0, 0]}) == 5


def test_regulariser_gradient_matches_autograd_on_a_tiny_case():
    """The closed-form gradient (Eq. 5) of Eq. S12 against autograd of the plain expression, w.r.t. the
    weights and the gate logits."""
    torch.manual_seed(0)
    ws = [torch.randn(2, 3, 1, 3, 3, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    logit = torch.randn(3, dtype=torch.float64, requires_grad=True)
    k = 0.7

    def sq(w_list):
        return torch.stack([w.pow(2).sum() for w in w_list])

    ours = kl_regulariser(sq(ws), torch.sigmoid(logit), k)
    g_ours = torch.autograd.grad(ours, ws + [logit])
    p = torch.sigmoid(logit)
    plain = ((1 - p) * k ** 2 / 2 * sq(ws) + p * torch.log(p)).sum()
    g_plain = torch.autograd.grad(plain, ws + [logit])
    assert float(ours.detach()) == pytest.approx(float(plain.detach()), rel=1e-12)
    for a, b in zip(g_ours, g_plain):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    for w, pi, g in zip(ws, p.detach(), g_ours[:3]):  # dR/dw = (1 - p) k^2 w
        assert torch.allclose(g, (1 - pi) * k ** 2 * w.detach())
    assert torch.autograd.gradcheck(lambda s, q: kl_regulariser(s, q, k), (sq(ws).detach().requires_grad_(),
                                                                           p.detach().requires_grad_()))


def test_fusion_layer_gates_each_input_and_unit_exactly():
    """Gating an input's channels before one conv per unit equals summing per-input convs; all units dropped
    leaves nothing (the residual operation: the features pass on through the concatenation only)."""
    torch.manual_seed(1)
    layer = FusionLayer([4, 3], 5, k=3, kt=3, init_drop=0.3).eval()
    xs = [torch.randn(2, 4, 3, 6, 6), torch.randn(2, 3, 3, 6, 6)]
    keep = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]])  # input 0: S and half S+ST; input 1: ST only
    out = layer(xs, keep)
    h = torch.relu(layer.bn(torch.cat(xs, 1)))
    h0, h1 = h[:, :4], h[:, 4:]
    zero0, zero1 = torch.zeros_like(h0), torch.zeros_like(h1)
    expect = (layer.s(torch.cat([h0, zero1], 1)) + layer.st(torch.cat([zero0, h1], 1))
              + 0.5 * (layer.sst_s(torch.cat([h0, zero1], 1)) + layer.sst_st(torch.cat([h0, zero1], 1))))
    assert torch.allclose(out, expect, atol=1e-5)
    assert float(layer(xs, torch.zeros(2, 3)).detach().abs().max()) == 0.0
    per_example = torch.stack([keep, torch.zeros(2, 3)])  # (B, inputs, units)
    both = layer(xs, per_example)
    assert torch.allclose(both[0], out[0], atol=1e-5) and float(both[1].detach().abs().max()) == 0.0
    with torch.no_grad():
        sq = layer.sq_norms()  # ||w_{i,u}||^2: the unit's weights on input i's channels
        expect_sq = layer.sst_s.weight[:, 4:].pow(2).sum() + layer.sst_st.weight[:, 4:].pow(2).sum()
    assert float(sq[1, 2]) == pytest.approx(float(expect_sq), rel=1e-6)


def test_template_layout_and_modes():
    t = TemplateSettings(blocks=2, layers_per_block=3, growth=4, stem=8)
    net = TemplateNet(t, num_classes=3)
    assert net.layout() == [(1, 1, 1), (2, 1, 2), (3, 1, 3), (4, 2, 1), (5, 2, 2), (6, 2, 3)]
    x = torch.randn(2, 3, 4, 20, 20)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))  # expected gates: deterministic
    net.train()
    assert not torch.equal(net(x), net(x))  # sampled gates
    p = net.drop_probabilities()
    assert [q.shape for q in p] == [(1, 3), (2, 3), (3, 3)] * 2 and all(torch.allclose(q, torch.tensor(0.2)) for q in p)
    assert float(posterior(torch.tensor(0.25))) == 0.5


# -- analysis -------------------------------------------------------------------------------------------------
def test_analysis_opt_mapping_and_files(tmp_path):
    # 4 layers; S+ST sure early, S mid, ST late (posterior 1 - sqrt(p))
    post = [[0.1, 0.2, 0.9], [0.2, 0.1, 0.8], [0.9, 0.3, 0.2], [0.1, 0.95, 0.3]]
    drop_p = [np.array([[(1 - v) ** 2 for v in row]] * (i + 1)) for i, row in enumerate(post)]
    layout = [(i + 1, 1, i + 1) for i in range(4)]
    m = analysis.layer_marginals(drop_p)
    assert np.allclose(m, post)
    assert analysis.opt_layers(m) == ["S+ST", "S+ST", "S", "ST"]
    assert analysis.block_layers([1, 1, 2], 4) == [[0], [1], [2, 3]]
    assert analysis.block_layers([2, 6], 4) == [[0, 0], [1, 1, 2, 2, 3, 3]]
    assert analysis.map_strategy(m, [1, 1, 2], "block") == [["S+ST"], ["S+ST"], ["S", "ST"]]
    per_stage = analysis.map_strategy(m, [1, 1, 2])
    assert per_stage[:2] == ["S+ST", "S+ST"]
    best = analysis.strategy_log_prob(m, [1, 1, 2], per_stage)
    for u in analysis.UNITS:  # Opt is the most probable stage-wise network
        assert analysis.strategy_log_prob(m, [1, 1, 2], [u] * 3) <= best
    q = analysis.exclusive(m)
    assert q[0, 2] == pytest.approx(0.9 * 0.9 * 0.8)
    rows = analysis.read_probabilities(analysis.write_probabilities(tmp_path / "p.csv", layout, drop_p))
    assert len(rows) == 3 * (1 + 2 + 3 + 4) and {r["unit"] for r in rows} == {"S", "ST", "S+ST"}
    assert next(r for r in rows if r["layer"] == 4 and r["input"] == 3 and r["unit"] == "ST")["probability"] == \
        pytest.approx(0.95)
    with (tmp_path / "p.csv").open() as f:
        assert next(csv.reader(f))[:4] == ["layer", "input", "unit", "probability"]
    assert "| 3 | 1 | 0.900 | 0.300 | 0.200 | S |" in analysis.layer_table(layout, m)
    assert analysis.plot_heatmap(tmp_path / "h.png", layout, drop_p).stat().st_size > 1000


# -- the strategy ---------------------------------------------------------------------------------------------
REQUEST = SearchRequest(budget=Budget(flops=0.08e9, layers=41), clip=Clip(8, 56))


@pytest.mark.parametrize("options,field,message", [
    ({"epoch": 3}, "options.epoch", "unknown option 'epoch'"),
    ({"tau": 0}, "options.tau", "'tau' must be a positive number"),
    ({"blocks": 1.5}, "options.blocks", "must be a positive integer"),
    ({"init_drop": 1.2}, "options.init_drop", "must be in \\(0, 1\\)"),
    ({"kt": 9}, "options.kt", "exceeds the clip's 8 frames"),
    ({"variants": ["S", "T"]}, "options.variants", "variants is a list among"),
    ({"granularity": "layer"}, "options.granularity", "'stage' or 'block'"),
    ({"backbone": "nope"}, "options.backbone", "neither 'evolution', 'table8'"),
    ({"backbone": "X3D-S"}, "options.backbone", "family 'x3d'"),
    ({"backbone_population": 0}, "options.backbone_population", "backbone search"),
    ({"backbone": "E3D-S"}, "budget.layers", "83 layers > limit 41"),
])
def test_check_names_the_option(options, field, message):
    with pytest.raises(RequestError, match=message) as err:
        get_strategy("fusion").check(replace(REQUEST, options=options))
    assert err.value.field == field


def test_backbones_fit_the_budget_with_s_plus_st_everywhere():
    from e3d.cost import cost
    from e3d.fusion.backbone import fit_budget, fused

    strategy = get_strategy("fusion")
    for name, grow in (("table8", True), ("E3D-S", False)):
        request = replace(REQUEST, budget=Budget(flops=0.08e9), options={"backbone": name})
        strategy.check(request)
        spec, info = strategy.backbone(request)
        heaviest = cost(fused(spec, ["S+ST"] * len(spec.stages), "x"))
        assert heaviest.flops <= REQUEST.budget.flops
        assert (info["width_factor"] > 1) == grow  # Table 8 grows into the budget, E3D-S at 8x56^2 shrinks
        assert all(s.out % 8 == 0 and s.bottleneck % 8 == 0 for s in spec.stages)
    evo, info = strategy.backbone(replace(REQUEST, options={"backbone_iterations": 300, "backbone_population": 16}))
    assert info["backbone_kernels"] and evo.family == "e3d"
    with pytest.raises(ValueError, match="does not fit"):
        fit_budget(spec, Budget(flops=1e5), grow=False)


def test_candidates_opt_first_and_distinct_networks():
    strategy = get_strategy("fusion")
    request = replace(REQUEST, options={"backbone": "table8", "variants": ["S", "ST", "S+ST", "E3D"]})
    backbone, info = strategy.backbone(request)
    n = 8
    st_everywhere = np.array([[0.1, 0.9, 0.2]] * n)  # the template says ST everywhere
    cands = strategy.candidates(request, backbone, st_everywhere, "stage", ["S", "ST", "S+ST", "E3D"], info)
    assert cands[0].info["variant"] == "opt" and cands[0].info["fusion"] == ["ST"] * 5
    # Opt = ST everywhere = the Table 8 backbone's own 3x3x3 kernels: one network, trained once
    assert sorted(cands[0].info["same_as"]) == ["E3D", "ST"]
    assert [c.info["variant"] for c in cands[1:]] == ["S+ST", "S"] or [c.info["variant"] for c in cands[1:]] == \
        ["S", "S+ST"]
    assert [c.score for c in cands[1:]] == sorted((c.score for c in cands[1:]), reverse=True)
    assert all(c.score <= cands[0].score for c in cands)
    sst = next(c for c in cands if c.info["variant"] == "S+ST")
    assert sst.spec.family == "e3d-fused" and sst.spec.stages[0].get("fusion") == "S+ST" and sst.flops > cands[0].flops


# -- the main job ---------------------------------------------------------------------------------------------
@pytest.mark.slow  # the supernet strategy's job end to end (a supernet and a candidate: two Ray Train runs, ~60 s idle); `make test-slow`, run by CI
def test_main_job_quick_runs_fusion_end_to_end(tmp_path):
    """Quick mode: the template trains one epoch on the synthetic data (Ray Train), the probability file and
    heatmap land in the out dir and in the search run, and the job trains the Opt candidate."""
    ray = pytest.importorskip("ray")
    import mlflow

    from pipeline.search_and_train import JobConfig, demo_request, quick, run_job

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        config = quick(JobConfig(out_dir=str(tmp_path), strategy="fusion", request=demo_request("fusion")))
        result = run_job(config, verbose=False)
    finally:
        ray.shutdown()
    search = tmp_path / "search"
    outcome = result.outcome
    t = outcome.settings["template"]
    assert t["blocks"] * t["layers_per_block"] == 4 and outcome.settings["recipe"]["epochs"] == 1
    with (search / "fusion_probabilities.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * (1 + 2) * 2  # (layer, input, unit): 2 blocks of 2 layers
    assert {(int(r["layer"]), int(r["input"])) for r in rows} == {(1, 0), (2, 0), (2, 1), (3, 0), (4, 0), (4, 1)}
    probs = [float(r["probability"]) for r in rows]
    assert all(0 < p < 1 for p in probs) and len(set(probs)) > 1  # learned: no longer all at the initial value
    assert all(float(r["probability"]) == pytest.approx(1 - math.sqrt(float(r["drop_p"])), abs=2e-6) for r in rows)
    assert (search / "fusion_heatmap.png").stat().st_size > 1000
    strategy = json.loads((search / "fusion_strategy.json").read_text())
    assert strategy["candidates"][0]["variant"] == "opt" and len(strategy["opt_layers"]) == 4
    best = outcome.best
    assert best.spec.family == "e3d-fused" and best.flops <= 0.03e9 and len(outcome.history) == 1
    assert outcome.history[0]["best"] == pytest.approx(best.score)
    cand = result.candidates[0]
    assert cand.ok and cand.epochs == 1 and cand.spec["family"] == "e3d-fused"
    mlflow.set_tracking_uri(result.tracking_uri)
    runs = mlflow.search_runs(experiment_names=["e3d-search-and-train"])
    run = runs[runs["tags.mlflow.runName"] == "search-fusion"].iloc[0]
    assert run["status"] == "FINISHED" and run["params.strategy"] == "fusion"
    assert 0 < float(run["metrics.fusion.L01.S"]) < 1 and 0 < float(run["metrics.fusion.L04.SST"]) < 1
    assert 0 <= float(run["metrics.val_top1"]) <= 100
    artifacts = {a.path for a in mlflow.MlflowClient(result.tracking_uri).list_artifacts(run["run_id"], "fusion")}
    assert {"fusion/fusion_probabilities.csv", "fusion/fusion_heatmap.png"} <= artifacts


@pytest.mark.slow  # three Ray Train runs
def test_search_resumes_the_template_from_its_checkpoint(tmp_path, ray_cluster):
    """A second search on the same out dir with more epochs continues from the first's last epoch (its rows
    are kept, not retrained); the same request again trains nothing."""
    from e3d.strategy import SearchContext
    from pipeline.context import RayTrainer
    from pipeline.train.data import TensorSource

    source = TensorSource.synthetic(num_classes=2, n_train=8, n_val=4, frames=4, size=40, seed=3)
    options = {"backbone": "table8", "blocks": 1, "layers_per_block": 2, "growth": 4, "stem": 8, "batch_size": 4}
    request = SearchRequest(budget=Budget(flops=0.03e9), clip=Clip(4, 40), num_classes=2, out_dir=str(tmp_path),
                            options=options | {"epochs": 1})
    context = SearchContext(dataset=source, trainer=RayTrainer(), progress=False)
    first = get_strategy("fusion").search(request, context)
    longer = replace(request, options=options | {"epochs": 2})
    second = get_strategy("fusion").search(longer, context)
    assert len(first.history) == 1 and len(second.history) == 2
    assert second.history[0] == first.history[0]  # epoch 1 read from the checkpoint, timings included
    again = get_strategy("fusion").search(longer, context)
    assert again.history == second.history and again.best.score == second.best.score
