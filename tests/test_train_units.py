"""Training pieces that need no Ray: recipe and schedule, resource policy, metrics, optimizer, reports."""
import math

import numpy as np
import pytest
import torch

from e3d import zoo
from e3d.model import build_model
from pipeline.train.candidates import run_names
from pipeline.train.data import TensorSource, steps_per_epoch
from pipeline.train.evaluate import Meter, ViewAccumulator, topk_correct
from pipeline.train.optim import apply_init, make_optimizer, make_scheduler, param_groups
from pipeline.train.recipe import PRESETS, Recipe
from pipeline.train.report import CandidateResult, format_table, table_csv, write_summary
from pipeline.train.resources import ClusterSnapshot, plan_resources


# -- recipe (Table 10) and the scaling rule ---------------------------------------------------------------
def test_paper_presets_are_table_10():
    s, k = Recipe.paper("sthsth"), Recipe.paper("K400")
    assert (s.epochs, s.batch_size, s.reference_lr, s.warmup_epochs) == (128, 32, 0.8, 10)
    assert (k.epochs, k.batch_size, k.reference_lr, k.warmup_epochs) == (256, 16, 0.4, 15)
    for r in (s, k):
        assert (r.momentum, r.weight_decay, r.sync_bn) == (0.9, 5e-5, True)
        # 8 GPUs x batch per GPU reproduces the printed learning rate
        assert r.lr_for(8) == pytest.approx(r.reference_lr)
    with pytest.raises(ValueError, match="no paper recipe"):
        Recipe.paper("imagenet")
    assert set(PRESETS) == {"sthsth", "k400"}


def test_linear_scaling_rule_and_scaled_warmup():
    r = Recipe.paper("sthsth").scaled(epochs=4, batch_size=8)
    assert r.lr_for(1) == pytest.approx(0.8 * 8 / 256)
    assert r.lr_for(4) == pytest.approx(0.8 * 32 / 256)
    assert r.warmup_epochs == pytest.approx(10 * 4 / 128)  # the warm-up keeps its fraction of the run
    assert r.scaled(lr=0.1).lr_for(3) == 0.1  # an absolute lr pins it
    assert r.scaled(epochs=8, warmup_epochs=2).warmup_epochs == 2  # an explicit warm-up wins
    assert r.scaled(init="torch", label_smoothing=0.1).init == "torch"
    assert r.params(2)["recipe.peak_lr"] == pytest.approx(0.8 * 16 / 256)
    assert Recipe.from_dict(r.to_dict()) == r
    with pytest.raises(ValueError, match="unknown recipe field"):
        Recipe.from_dict({"epochz": 3})


@pytest.mark.parametrize("bad", [dict(epochs=0), dict(batch_size=0), dict(momentum=1.0), dict(weight_decay=-1),
                                 dict(warmup_epochs=200), dict(label_smoothing=1.0), dict(reference_lr=0)])
def test_recipe_validation(bad):
    with pytest.raises(ValueError, match="bad recipe"):
        Recipe(**bad)


def test_schedule_warmup_then_cosine():
    r = Recipe(epochs=10, warmup_epochs=2, warmup_start_factor=0.1, final_lr_factor=0.0)
    assert r.lr_factor(0) == pytest.approx(0.1)
    assert r.lr_factor(1) == pytest.approx(0.55)  # linear warm-up
    assert r.lr_factor(2) == pytest.approx(1.0)  # peak at the end of the warm-up
    assert r.lr_factor(6) == pytest.approx(0.5)  # half-way through the cosine
    assert r.lr_factor(10) == pytest.approx(0.0)
    assert r.lr_factor(99) == pytest.approx(0.0)
    after = [r.lr_factor(2 + 0.1 * i) for i in range(81)]
    assert all(a >= b for a, b in zip(after, after[1:]))  # non-increasing after the warm-up
    assert Recipe(epochs=3, warmup_epochs=0).lr_factor(0) == 1.0


def test_scheduler_follows_recipe_per_iteration():
    model = torch.nn.Linear(3, 2)
    r = Recipe(epochs=4, warmup_epochs=1, warmup_start_factor=0.01, batch_size=2)
    opt = make_optimizer(model, r, lr=0.4)
    sched = make_scheduler(opt, r, steps_per_epoch=5)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.004)
    assert lrs[5] == pytest.approx(0.4)  # step 5 = epoch 1 = end of warm-up
    assert lrs[19] == pytest.approx(0.4 * r.lr_factor(19 / 5))
    assert max(lrs) == pytest.approx(0.4)


def test_weight_decay_groups():
    model = build_model(zoo.get("E3D-init-S").with_input(4, 32).with_num_classes(3))
    r = Recipe()
    decay, no_decay = param_groups(model, r)
    assert decay["weight_decay"] == 5e-5 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    n = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for g in (decay, no_decay) for p in g["params"]) == n
    assert len(param_groups(model, Recipe(decay_norm_and_bias=True))) == 1
    opt = make_optimizer(model, r, lr=0.1)
    assert opt.defaults["momentum"] == 0.9


# -- resources ---------------------------------------------------------------------------------------------
def _fits(plan, cpus, gpus=0):
    assert plan.concurrent * plan.cpus_per_candidate <= cpus
    assert plan.concurrent * plan.num_workers * plan.gpus_per_worker <= gpus
    assert plan.data_cpus >= 1  # Ray Data always has a CPU


def test_two_cpus_one_worker_and_a_cpu_for_data():
    plan = plan_resources(2, cluster=ClusterSnapshot.of({"CPU": 2}))
    assert (plan.concurrent, plan.num_workers, plan.cpus_per_worker, plan.data_cpus) == (1, 1, 1, 1)
    assert not plan.use_gpu and plan.torch_threads == 1
    _fits(plan, 2)


def test_cpu_cluster_runs_candidates_concurrently():
    plan = plan_resources(3, cluster=ClusterSnapshot.of({"CPU": 16}))
    assert plan.concurrent == 3 and plan.num_workers == 1
    _fits(plan, 16)
    assert plan_resources(3, cluster=ClusterSnapshot.of({"CPU": 16}), max_concurrent=1).concurrent == 1
    assert plan_resources(8, cluster=ClusterSnapshot.of({"CPU": 4})).concurrent == 2
    one = plan_resources(1, cluster=ClusterSnapshot.of({"CPU": 16}))
    assert one.cpus_per_worker + one.data_cpus == 16 and one.data_cpus == 4
    # more CPUs than the largest node: one worker per node-sized chunk
    multi = plan_resources(1, cluster=ClusterSnapshot.of({"CPU": 48}, node_cpus=[16, 16, 16]))
    assert multi.num_workers == 3 and multi.cpus_per_worker <= 16
    _fits(multi, 48)


def test_gpu_cluster_one_gpu_per_worker():
    plan = plan_resources(2, cluster=ClusterSnapshot.of({"CPU": 32, "GPU": 8}))
    assert (plan.concurrent, plan.num_workers, plan.gpus_per_worker) == (2, 4, 1)
    assert plan.use_gpu and plan.cpus_per_worker == 1 and plan.data_cpus == 12
    _fits(plan, 32, 8)
    few = plan_resources(5, cluster=ClusterSnapshot.of({"CPU": 8, "GPU": 2}))
    assert few.concurrent == 2 and few.num_workers == 1
    _fits(few, 8, 2)


def test_one_cpu_cluster_does_not_starve_data():
    plan = plan_resources(2, cluster=ClusterSnapshot.of({"CPU": 1}))
    assert plan.cpus_per_worker == 0 and plan.data_cpus == 1 and plan.concurrent == 1
    with pytest.raises(ValueError):
        plan_resources(0, cluster=ClusterSnapshot.of({"CPU": 4}))
    with pytest.raises(ValueError, match="do not fit"):
        plan_resources(1, cluster=ClusterSnapshot.of({"CPU": 4}), workers=8)


# -- metrics -----------------------------------------------------------------------------------------------
def test_topk_correct():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 2, 1])
    assert topk_correct(logits, labels, (1, 2, 5)) == {1: 1, 2: 2, 5: 3}


def test_meter_summary_and_tensor_roundtrip():
    m = Meter()
    m.update(torch.tensor([[2.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 0]), loss_sum=1.5)
    s = Meter.from_tensor(m.as_tensor()).summary("val")
    assert s == {"val_loss": 0.75, "val_top1": 50.0, "val_top5": 100.0, "val_samples": 2}


def test_multiview_averages_softmax_not_votes():
    acc = ViewAccumulator(num_classes=3)
    # video 0 (label 2): two views mildly prefer class 0, one view is confident in class 2.
    # Majority vote says 0; the averaged softmax says 2.
    logits = torch.log(torch.tensor([[0.40, 0.25, 0.35], [0.40, 0.25, 0.35], [0.02, 0.03, 0.95]]))
    acc.add(logits, [2, 2, 2], [0, 0, 0])
    # video 1 (label 1): views come in two batches
    acc.add(torch.log(torch.tensor([[0.1, 0.6, 0.3]])), torch.tensor([1]), torch.tensor([1]))
    acc.add(torch.log(torch.tensor([[0.5, 0.2, 0.3]])), torch.tensor([1]), torch.tensor([1]))
    ids, avg, labels = acc.video_probs()
    assert ids == [0, 1] and labels.tolist() == [2, 1]
    np.testing.assert_allclose(avg[0], [0.82 / 3, 0.53 / 3, 1.65 / 3], atol=1e-6)
    np.testing.assert_allclose(avg[1], [0.3, 0.4, 0.3], atol=1e-6)
    res = acc.result()
    assert res["mv_top1"] == 100.0 and res["mv_videos"] == 2 and res["mv_views_per_video"] == 2.5
    # a per-view majority vote would have got video 0 wrong
    assert np.bincount(logits.argmax(1).numpy()).argmax() == 0
    acc.add(torch.log(torch.tensor([[0.9, 0.05, 0.05]] * 4)), [1] * 4, [1] * 4)  # video 1 now averages to class 0
    assert acc.result()["mv_top1"] == 50.0 and acc.result()["mv_top5"] == 100.0
    assert ViewAccumulator(3).result()["mv_videos"] == 0


def test_multiview_merge_equals_single_pass():
    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.normal(size=(30, 5)), dtype=torch.float32)
    vids = torch.tensor(np.repeat(np.arange(10), 3))
    labels = torch.tensor(np.repeat(rng.integers(0, 5, 10), 3))
    whole = ViewAccumulator(5)
    whole.add(logits, labels, vids)
    a, b = ViewAccumulator(5), ViewAccumulator(5)
    a.add(logits[:13], labels[:13], vids[:13])  # split mid-video, like two workers' shards
    b.add(logits[13:], labels[13:], vids[13:])
    merged = ViewAccumulator.from_state(a.state()).merge(ViewAccumulator.from_state(b.state()))
    assert merged.result() == whole.result()
    np.testing.assert_allclose(merged.video_probs()[1], whole.video_probs()[1])
    with pytest.raises(ValueError, match="labels"):
        whole.add(logits[:1], torch.tensor([(int(labels[0]) + 1) % 5]), vids[:1])


# -- data and reports --------------------------------------------------------------------------------------
def test_tensor_source_and_steps():
    src = TensorSource.synthetic(num_classes=3, n_train=30, n_val=9, frames=4, size=16)
    assert (src.num_classes, src.n_train, src.n_val, src.frames, src.size) == (3, 30, 9, 4, 16)
    assert np.bincount(src.train_y).tolist() == [10, 10, 10]
    assert src.fingerprint() == TensorSource.synthetic(num_classes=3, n_train=30, n_val=9, frames=4,
                                                       size=16).fingerprint()
    assert src.fingerprint() != TensorSource.synthetic(num_classes=3, n_train=30, n_val=9, frames=4, size=16,
                                                       seed=1).fingerprint()
    with pytest.raises(ValueError):
        TensorSource(np.zeros((2, 3, 4, 8, 9)), [0, 1], np.zeros((0, 3, 4, 8, 8)), [])
    assert steps_per_epoch(30, 1, 8) == 4 and steps_per_epoch(30, 4, 8) == 1 and steps_per_epoch(65, 2, 8) == 4


def _result(name, **kw):
    base = dict(name=name, run_name=name, spec={}, trained_spec={}, flops=int(1.9e9), params=3_300_000,
                stentr=202.86, input="13x160x160", train_input="8x64x64", epochs=4, val_top1=80.0,
                mv_top1=83.3, mv_top5=100.0, train_time_s=123.4,
                history=[{"epoch": 1, "train_loss": 1.3, "val_loss": 1.2, "train_top1": 40, "val_top1": 50},
                         {"epoch": 2, "train_loss": 0.9, "val_loss": 0.8, "train_top1": 70, "val_top1": 80}])
    return CandidateResult(**(base | kw))


def test_summary_table_and_files(tmp_path):
    results = [_result("E3D-S"), _result("X3D-S", stentr=math.inf, error="TrainingFailedError: boom")]
    table = format_table(results)
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["candidate", "GFLOPs", "params(M)", "STEntr"]
    assert "1.900" in lines[2] and "202.86" in lines[2] and "83.3" in lines[2] and "123" in lines[2]
    assert "FAILED: TrainingFailedError: boom" in lines[3]
    csv_text = table_csv(results)
    assert csv_text.splitlines()[0].startswith("candidate,gflops,mparams,stentr")
    paths = write_summary(results, tmp_path)
    assert {p.name for p in paths} == {"summary.csv", "summary.json", "summary.txt", "curves.png"}
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert CandidateResult.from_dict(results[0].to_dict()) == results[0]


def test_run_names_are_stable_distinct_and_extendable():
    src = TensorSource.synthetic(num_classes=2, n_train=8, n_val=2, frames=4, size=16)
    base, other = zoo.get("E3D-init-S"), zoo.get("X3D-S")
    r = Recipe().scaled(epochs=2, batch_size=4)
    names = run_names([base, other, base], src, r, (2, 3))
    assert names[0].startswith("E3D-init-S-") and names[1].startswith("X3D-S-")
    assert names[2] == names[0] + "-2"  # the same spec twice: two runs
    assert run_names([base], src, r.scaled(epochs=5), (2, 3)) == names[:1]  # more epochs: the same run resumes
    assert run_names([base], src, r.scaled(lr=0.3), (2, 3)) != names[:1]  # another recipe: another run
    assert run_names([base], src, r, (1, 3)) != names[:1]
    other_data = TensorSource.synthetic(num_classes=2, n_train=8, n_val=2, frames=4, size=16, seed=9)
    assert run_names([base], other_data, r, (2, 3)) != names[:1]
    fresh = run_names([base], src, r, (2, 3), resume=False)[0]
    assert fresh.startswith(names[0] + "-") and fresh != names[0]


def test_init_schemes():
    from e3d.model import InvertedBottleneck

    spec = zoo.get("E3D-init-S").with_input(4, 32).with_num_classes(3)

    def gammas(model):
        return [b.project[1].weight.detach() for b in model.modules() if isinstance(b, InvertedBottleneck)]

    def convs(model):
        return [m.weight.detach().clone() for m in model.modules() if isinstance(m, torch.nn.Conv3d)]

    torch.manual_seed(0)
    kept = apply_init(build_model(spec), "model")
    torch.manual_seed(0)
    reference = build_model(spec)
    assert all(torch.equal(a, b) for a, b in zip(convs(kept), convs(reference)))  # "model" changes nothing
    assert all(float(g.abs().sum()) == 0 for g in gammas(kept))  # zero-gamma residual branches
    unit = apply_init(build_model(spec), "model-unit-gamma")
    assert all(torch.all(g == 1) for g in gammas(unit))
    fresh = apply_init(build_model(spec), "torch")
    assert all(torch.all(g == 1) for g in gammas(fresh))
    linear = fresh.classifier.fc.weight.detach()
    bound = 1 / math.sqrt(linear.shape[1])  # PyTorch's default Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert float(linear.abs().max()) <= bound and float(linear.std()) > 0.5 * bound / math.sqrt(3)
    with pytest.raises(ValueError, match="init must be one of"):
        Recipe(init="xavier")
    with pytest.raises(ValueError, match="unknown init"):
        apply_init(build_model(spec), "xavier")
