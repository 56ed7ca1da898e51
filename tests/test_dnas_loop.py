"""The search loop's pieces without Ray: warm-up, the architecture step (Eq. 5), the checkpoint round trip."""
import numpy as np
import pytest
import torch

from e3d.dnas.space import table1_space
from e3d.strategies.dnas import DnasSettings
from pipeline.dnas.loop import search_epoch, setup
from pipeline.train.checkpoint import load_state, save_state


class Shard:
    """What a Ray Data shard offers the loop: ``iter_batches`` of numpy ``clip``/``label``."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def iter_batches(self, batch_size, batch_format="numpy", prefetch_batches=1):
        for i in range(0, len(self.x), batch_size):
            yield {"clip": self.x[i:i + batch_size], "label": self.y[i:i + batch_size]}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(**settings):
    space = table1_space(4, 16, 2, width_mult=0.125, width_divisor=4, max_stack=[0, 1, 1, 0, 1, 0])
    s = DnasSettings(epochs=3, warmup_epochs=1, batch_size=4, arch_lr=0.05, **settings).to_dict()
    return {"space": space.to_dict(), "settings": s, "steps_per_epoch": 2, "seed": 0}


def _data(seed, n=8):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(size=(n, 3, 4, 16, 16)).astype(np.float32) + y[:, None, None, None, None]
    return Shard(x, y)


def _flat(params):
    return torch.cat([p.detach().reshape(-1) for p in params])


def test_warmup_trains_weights_only_then_both_alternate():
    state = setup(_config())
    w0, a0 = _flat(state.core.parameters()), _flat(state.arch.parameters())
    warm = search_epoch(state, _data(0), _data(1, n=4), epoch=0)
    assert warm["phase"] == "warmup" and warm["arch_steps"] == 0 and warm["steps"] == 2
    assert torch.equal(_flat(state.arch.parameters()), a0) and not torch.equal(_flat(state.core.parameters()), w0)
    search = search_epoch(state, _data(0), _data(1, n=4), epoch=1)
    # one architecture step per weight step while the (smaller) architecture part lasts
    assert search["phase"] == "search" and search["steps"] == 2 and search["arch_steps"] == 1
    assert not torch.equal(_flat(state.arch.parameters()), a0)
    assert search["arch_loss"] > search["arch_ce"] > 0 and search["cpu_s"] > 0


def test_a_large_flops_weight_drives_the_search_to_cheaper_networks():
    """Eq. 5 with lambda large: every stack layer's skip weight and the expected FLOPs move the right way."""
    state = setup(_config(lam=50.0))
    with torch.no_grad():
        before = float(state.flops(*state.arch.weights()))
    for epoch in (1, 2):
        search_epoch(state, _data(0), _data(1), epoch=epoch)
    alpha_w, beta_w = state.arch.weights()
    assert float(state.flops(alpha_w, beta_w).detach()) < before
    for a in alpha_w:
        if a.numel():
            assert (a[:, -1] > 0.25).all()  # skip (the last op) above its start 1/4 in every stack layer


def test_checkpoint_round_trip_resumes_the_same_search(tmp_path):
    config = _config()
    state = setup(config)
    search_epoch(state, _data(0), _data(1), epoch=0)
    search_epoch(state, _data(0), _data(1), epoch=1)
    state.history = [{"epoch": 1}, {"epoch": 2}]
    save_state(tmp_path, state.state_dict(2), {"epoch": 2})
    resumed = setup(config | {"seed": 123})  # other initial weights: everything must come from the file
    resumed.load_state_dict(load_state(tmp_path))
    assert resumed.start_epoch == 2 and resumed.history == state.history
    assert resumed.scheduler.last_epoch == state.scheduler.last_epoch == 4
    for a, b in ((state.core.parameters(), resumed.core.parameters()), (state.arch.parameters(), resumed.arch.parameters())):
        assert torch.equal(_flat(a), _flat(b))
    # the next epoch on the same batches is the same epoch for both
    search_epoch(state, _data(0), _data(1), epoch=2)
    search_epoch(resumed, _data(0), _data(1), epoch=2)
    torch.testing.assert_close(_flat(resumed.arch.parameters()), _flat(state.arch.parameters()))
    torch.testing.assert_close(_flat(resumed.core.parameters()), _flat(state.core.parameters()))
