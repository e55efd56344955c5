"""The training machinery in workers on the tiny experiment: today's defaults to the bit, a resumed schedule,
a pretrained trunk, and router state that two gloo ranks hold alike (no Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from gemlab.engine.checkpoint import SHARED_FILE, read_checkpoint, write_checkpoint
from gemlab.engine.config import ConfigError, as_plain
from gemlab.engine.prepare import planner_inputs_digest
from gemlab.engine.worker import Worker
from gemlab.models.common import trunk_parameters
from helpers import tiny
from test_engine_equivalence import _free_port, _process_group

META = {"plan_fingerprint": None, "num_experts": 2, "identity_digest": "d"}


def _worker(run, rank: int = 0, world: int = 1) -> Worker:
    return Worker(as_plain(run.cfg), run.plan, run.table, rank, world)


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    other = b.state_dict()
    for key, value in a.state_dict().items():
        assert torch.equal(value, other[key]), key


@pytest.mark.slow
def test_the_defaults_train_exactly_as_the_adamw_gemlab_always_used(digits_dir, tmp_path):
    run = tiny(digits_dir, tmp_path)
    new, old = _worker(run), _worker(run)
    trainer = run.cfg.trainer
    old.optimizer = torch.optim.AdamW(old.model.parameters(), lr=trainer.lr, weight_decay=trainer.weight_decay)
    for step in range(1, 4):
        stats = new.step(step)
        old_stats = old.backward(step)  # the step before this machinery: backward, then AdamW at a fixed lr
        old.optimizer.step()
        assert stats == old_stats, step
    _assert_same_weights(new.model, old.model)


@pytest.mark.slow
def test_a_resumed_run_continues_its_schedule_and_optimizer_state(digits_dir, tmp_path):
    schedule = ["trainer.optimizer=sgd", "trainer.warmup_steps=2", "trainer.schedule=cosine", "trainer.decay_steps=3"]
    run = tiny(digits_dir, tmp_path, "router=relu", "trainer.backbone_lr_scale=0.5", *schedule)
    straight, first = _worker(run), _worker(run)
    for step in range(1, 6):
        straight.step(step)
    for step in range(1, 3):
        first.step(step)
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    write_checkpoint(folder, first.model, first.optimizer, first.role, {**META, "step": 2}, [])
    resumed = _worker(run)
    step, _ = read_checkpoint(folder, resumed.model, resumed.optimizer, META)
    assert step == 2 and any("momentum_buffer" in s for s in resumed.optimizer.state.values())
    for step in range(3, 6):
        resumed.step(step)
    _assert_same_weights(straight.model, resumed.model)
    lrs = [g["lr"] for g in resumed.optimizer.param_groups]
    assert lrs == [g["lr"] for g in straight.optimizer.param_groups]
    assert lrs == pytest.approx([0.5 * 0.002 * 0.25, 0.002 * 0.25])  # step 5: (1 + cos(2π/3)) / 2 = 1/4


@pytest.mark.slow
def test_training_starts_from_the_trunk_of_a_checkpoint_file(digits_dir, tmp_path):
    run = tiny(digits_dir, tmp_path, "router=topk")
    trained = _worker(run)
    for step in range(1, 3):
        trained.step(step)
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    write_checkpoint(folder, trained.model, trained.optimizer, trained.role, {**META, "step": 2}, [])
    pretrained = tiny(digits_dir, tmp_path / "b", "router=topk", f"trainer.init_from={folder / SHARED_FILE}")
    assert planner_inputs_digest(pretrained.cfg) != planner_inputs_digest(run.cfg)  # a plan reads the loaded stem
    started = _worker(pretrained)
    fresh = _worker(run).model.state_dict()
    trunk = {n for n, _ in trunk_parameters(started.model)}
    assert trunk
    for key, value in started.model.state_dict().items():
        assert torch.equal(value, trained.model.state_dict()[key] if key in trunk else fresh[key]), key
    partial = tmp_path / "partial.pt"
    torch.save({k: v for k, v in trained.model.state_dict().items() if k != "position"}, partial)
    with pytest.raises(ConfigError, match=r"trainer\.init_from=.*partial\.pt.*missing \['position'\]"):
        tiny(digits_dir, tmp_path / "c", "router=topk", f"trainer.init_from={partial}")


def _router_state_rank(rank: int, world: int, port: int, cfg: dict, out: str) -> None:
    """Three steps on one rank, recording the synchronised statistics before and after their mean, and the
    model's floating-point state after every step."""
    with _process_group(rank, world, port):
        worker = Worker(cfg, None, None, rank, world)
        sync = worker.router_state
        local, averaged, states = [], [], []
        for step in range(1, 4):
            worker.backward(step)
            worker.schedule.apply(worker.optimizer, step)
            worker.optimizer.step()
            local.append([t.clone() for t in sync.tensors])
            sync.average()
            averaged.append([t.clone() for t in sync.tensors])
            sync.update()
            states.append({k: v.clone() for k, v in worker.model.state_dict().items() if v.is_floating_point()})
        torch.save({"local": local, "averaged": averaged, "states": states}, Path(out) / f"rank{rank}.pt")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("router", "sizes"), [("relu", ["moe.num_experts=4", "router.k=2"]), ("confidence", [])], ids=["relu", "dqroute"]
)
def test_router_state_is_the_worlds_on_every_rank(digits_dir, tmp_path, router, sizes):
    """Two data-parallel gloo ranks see different batches, yet after every step each synchronised statistic is
    their mean x = (x_0 + x_1) / 2 on both, and the whole model state is equal on both; REMoE's λ follows the
    world's sparsity: λ_{i+1} = λ_i α^sign(τ − S_i), S_i the zero-gate share of both ranks' batches."""
    run = tiny(digits_dir, tmp_path, f"router={router}", *sizes)  # relu: 4 experts, so some gates are zero
    cfg = as_plain(run.cfg)
    mp.spawn(_router_state_rank, args=(2, _free_port(), cfg, str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for step in range(3):
        local = [r["local"][step] for r in ranks]
        assert local[0] and any(not torch.equal(a, b) for a, b in zip(*local, strict=True))  # the ranks differ
        for r in ranks:
            for mine, theirs, mean in zip(*local, r["averaged"][step], strict=True):
                torch.testing.assert_close(mean, (mine + theirs) / 2)
        for key, value in ranks[0]["states"][step].items():
            assert torch.equal(value, ranks[1]["states"][step][key]), (step, key)
    if router != "relu":
        return
    options, experts = cfg["router"], cfg["moe"]["num_experts"]
    target, lam = 1 - options["k"] / experts, options["l1_weight"]
    (key,) = [k for k in ranks[0]["states"][0] if k.endswith("l1_weight")]  # the tiny ViT's one MoE layer
    for step in range(3):
        zeros, total = (sum(float(r["local"][step][0][i]) for r in ranks) for i in (0, 1))
        sparsity = zeros / total
        lam *= options["alpha"] ** ((target > sparsity) - (target < sparsity))
        assert ranks[0]["states"][step][key].item() == pytest.approx(lam, rel=1e-6), step
