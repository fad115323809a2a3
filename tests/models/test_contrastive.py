"""The plain-PyTorch contrastive loop on the real tiny zoo: the loss falls, validation reports its metrics."""

from __future__ import annotations

import torch

from raywse.data.graphify import load_graphs
from raywse.data.labels import ZooLabels
from raywse.models.contrastive import ContrastiveConfig, train_contrastive
from raywse.models.encoder import EncoderConfig, NeuralGraphEncoder


def test_contrastive_training_lowers_the_loss(tiny_zoo, tiny_graphs):
    data = ZooLabels.from_zoo(tiny_zoo).label(load_graphs(tiny_graphs))
    config = ContrastiveConfig(batch_tasks=4, models_per_task=4, lr=3e-3)
    torch.manual_seed(0)
    encoder = NeuralGraphEncoder(EncoderConfig(depth=2, hidden=32, embed_dim=32, fingerprint_dim=0))  # learned only
    history, states = [], []
    train_contrastive(
        encoder, data, data, config, 10, lambda metrics, state: (history.append(metrics), states.append(state))
    )
    losses = [m["loss"] for m in history]
    # an epoch is 4 noisy steps: compare the last three epochs with the first two (measured: 3.58 vs 4.35)
    assert sum(losses[-3:]) / 3 < 0.9 * sum(losses[:2]) / 2, losses
    assert set(history[-1]) >= {"val_precision@10", "val_mAP", "val_kendall_tau", "epoch"}
    assert [s["epoch"] for s in states] == list(range(10))


def test_resume_continues_after_the_reported_epoch(tiny_zoo, tiny_graphs):
    data = ZooLabels.from_zoo(tiny_zoo).label(load_graphs(tiny_graphs)[:24])
    config = ContrastiveConfig(batch_tasks=2, models_per_task=4)
    states = []
    train_contrastive(NeuralGraphEncoder(EncoderConfig(depth=1, hidden=16)), data, data, config, 2,
                      lambda metrics, state: states.append(state))  # fmt: skip
    epochs = []
    train_contrastive(NeuralGraphEncoder(EncoderConfig(depth=1, hidden=16)), data, data, config, 4,
                      lambda metrics, state: epochs.append(metrics["epoch"]), resume=states[-1])  # fmt: skip
    assert epochs == [2, 3]


def _gather_rank(rank: int, init_file: str, results) -> None:
    import torch.distributed as dist

    from raywse.models.contrastive import gather_across_ranks

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    z = (torch.arange(6.0).reshape(3, 2) + 10 * rank).requires_grad_()
    everything, labels = gather_across_ranks(z, torch.full((3,), rank))
    (everything**2).sum().backward()  # the same loss of all rows on both ranks
    results.put((rank, everything.detach().tolist(), labels.tolist(), z.grad.tolist(), z.detach().tolist()))
    dist.destroy_process_group()


def test_gather_across_ranks_returns_every_row_and_sums_each_ranks_gradient(tmp_path):
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    results = context.Queue()
    procs = [context.Process(target=_gather_rank, args=(r, str(tmp_path / "init"), results)) for r in range(2)]
    for p in procs:
        p.start()
    got = sorted(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    rows = got[0][4] + got[1][4]
    for rank, everything, labels, grad, z in got:
        assert everything == rows and labels == [0, 0, 0, 1, 1, 1]
        # d/dz of the loss on both ranks: 2 z each, summed over the 2 ranks
        assert grad == [[4 * v for v in row] for row in z], rank
