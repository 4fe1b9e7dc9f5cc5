"""One pass over the data: the loop's arithmetic (losses, accuracy, gradient accumulation) and forwards
in pieces.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pyimagesearch.engine import NonFiniteLoss, check_finite, evaluate, extract_features, train_one_epoch
from pyimagesearch.session import epoch_record
from pyimagesearch.utils.runtime import Compute

CPU = Compute(torch.device("cpu"))


def _data(n: int = 10, features: int = 4, classes: int = 3, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, features, generator=generator),
                         torch.randint(0, classes, (n,), generator=generator))


def _frozen_body(seen: list[int]) -> nn.Module:
    """A small conv body in eval mode, with BatchNorm statistics that are not the identity; it
    records the size of every batch it runs."""
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    body[1].running_mean.uniform_(-1, 1)
    body[1].running_var.uniform_(0.5, 2)
    body.register_forward_pre_hook(lambda module, inputs: seen.append(len(inputs[0])))
    return body.eval().requires_grad_(False)


def test_evaluate_weights_each_sample_once_with_a_ragged_last_batch():
    data = _data(n=10)
    model = nn.Linear(4, 3)
    metrics = evaluate(model, DataLoader(data, batch_size=4), nn.CrossEntropyLoss(), CPU, progress=False)
    x, y = data.tensors
    with torch.no_grad():
        logits = model(x)
    assert metrics["count"] == 10
    assert abs(metrics["loss"] - nn.functional.cross_entropy(logits, y).item()) < 1e-6
    assert metrics["accuracy"] == (logits.argmax(1) == y).sum().item() / 10
    # balanced accuracy: each present class's recall, averaged (what scikit-learn's score computes)
    recalls = [((logits.argmax(1) == y) & (y == c)).sum().item() / (y == c).sum().item() for c in y.unique().tolist()]
    assert abs(metrics["balanced_accuracy"] - sum(recalls) / len(recalls)) < 1e-12


def test_train_loss_is_the_mean_of_per_batch_losses_weighted_by_batch_size():
    data = _data(n=10)
    model = nn.Linear(4, 3)
    seen = []

    class Recording(nn.CrossEntropyLoss):
        def forward(self, logits, target):
            loss = super().forward(logits, target)
            seen.append((loss.item(), target.numel()))
            return loss

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    metrics = train_one_epoch(model, DataLoader(data, batch_size=4), Recording(), optimizer, CPU, progress=False)
    expected = sum(loss * n for loss, n in seen) / sum(n for _, n in seen)
    assert [n for _, n in seen] == [4, 4, 2]
    assert abs(metrics["loss"] - expected) < 1e-9 and metrics["count"] == 10
    assert isinstance(metrics["loss"], float)  # no tensor keeping the autograd graph alive


def test_accumulating_two_half_batches_equals_one_full_batch():
    data = _data(n=8)
    torch.manual_seed(0)
    full, halves = nn.Linear(4, 3), nn.Linear(4, 3)
    halves.load_state_dict(full.state_dict())
    loss_fn = nn.CrossEntropyLoss()
    train_one_epoch(full, DataLoader(data, batch_size=8), loss_fn, torch.optim.SGD(full.parameters(), lr=0.5),
                    CPU, progress=False)
    train_one_epoch(halves, DataLoader(data, batch_size=4), loss_fn, torch.optim.SGD(halves.parameters(), lr=0.5),
                    CPU, grad_accum_steps=2, progress=False)
    for a, b in zip(full.parameters(), halves.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_no_gradient_is_carried_into_the_next_epoch():
    data = _data(n=6)
    model = nn.Linear(4, 3)
    steps = []
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    original_step = optimizer.step

    def step(*args, **kwargs):
        steps.append(model.weight.grad.clone())
        return original_step(*args, **kwargs)

    optimizer.step = step
    # 3 batches with accumulation 2: a full step, then a flushed half step at the end of the epoch
    train_one_epoch(model, DataLoader(data, batch_size=2), nn.CrossEntropyLoss(), optimizer, CPU,
                    grad_accum_steps=2, progress=False)
    assert len(steps) == 2
    assert model.weight.grad is None  # zeroed after the last step, nothing left for the next epoch


def test_the_scripts_epoch_loop_records_one_history_entry_per_epoch():
    """The loop the training scripts run: a training pass, a validation pass, one record."""
    data = _data(n=12)
    model = nn.Linear(4, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    history = []
    for epoch in range(3):
        train = train_one_epoch(model, DataLoader(data, batch_size=4), nn.CrossEntropyLoss(), optimizer, CPU,
                                progress=False)
        val = evaluate(model, DataLoader(data, batch_size=5), nn.CrossEntropyLoss(), CPU, progress=False)
        check_finite(train, val, epoch + 1)
        history.append(epoch_record(epoch, train, val, optimizer, 0.1, model, resumed=False, stopped_early=epoch == 2))
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert all(r["val_count"] == 12 and r["trainable_params"] == 15 and r["lr"] == 0.05 for r in history)
    assert "resumed" not in history[0] and history[2]["stopped_early"] is True and "stopped_early" not in history[1]
    with pytest.raises(NonFiniteLoss, match="epoch 4"):
        check_finite(train, {**val, "loss": float("nan")}, 4)


def test_gradient_accumulation_all_reduces_only_before_a_step(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        model = nn.parallel.DistributedDataParallel(nn.Linear(4, 3))
        all_reduces = []

        def count(state, bucket):
            all_reduces.append(bucket.index())
            future = torch.futures.Future()
            future.set_result(bucket.buffer())
            return future

        model.register_comm_hook(None, count)
        train_one_epoch(model, DataLoader(_data(n=10), batch_size=2), nn.CrossEntropyLoss(),
                        torch.optim.SGD(model.parameters(), lr=0.1), CPU, grad_accum_steps=2, progress=False)
        # five batches, steps after batches 2 and 4 and the flush after 5: one all-reduce per step
        assert len(all_reduces) == 3
    finally:
        dist.destroy_process_group()


def test_an_empty_share_of_a_small_validation_set_is_not_an_error():
    """Under torchrun with more processes than validation images, a process gets no images."""
    empty = DataLoader(TensorDataset(torch.empty(0, 3, 4, 4), torch.empty(0, dtype=torch.long)), batch_size=4)
    features, labels = extract_features(nn.Flatten(), empty, CPU, progress=False)
    assert len(features) == 0 and len(labels) == 0
    metrics = evaluate(nn.Linear(48, 3), DataLoader(TensorDataset(features, labels), batch_size=4),
                       nn.CrossEntropyLoss(), CPU, progress=False)
    assert metrics["count"] == 0


def test_forwards_without_autograd_run_in_chunks_with_the_same_results():
    generator = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(10, 3, 8, 8, generator=generator), torch.randint(0, 3, (10,), generator=generator))
    loader = DataLoader(data, batch_size=8)
    whole, chunked = Compute(torch.device("cpu")), Compute(torch.device("cpu"), forward_chunk=3)
    seen: list[int] = []
    body = _frozen_body(seen)
    model = nn.Sequential(body, nn.Linear(4, 3)).eval()

    features_whole, labels = extract_features(body, loader, whole, progress=False)
    assert seen == [8, 2]
    seen.clear()
    features_chunked, labels_chunked = extract_features(body, loader, chunked, progress=False)
    assert seen == [3, 3, 2, 2]  # a batch of 8 in pieces of at most 3, then the ragged batch
    assert torch.allclose(features_whole, features_chunked, atol=1e-6) and torch.equal(labels, labels_chunked)

    metrics_whole = evaluate(model, loader, nn.CrossEntropyLoss(), whole, progress=False)
    seen.clear()
    metrics_chunked = evaluate(model, loader, nn.CrossEntropyLoss(), chunked, progress=False)
    assert seen == [3, 3, 2, 2]
    assert metrics_whole["count"] == metrics_chunked["count"] == 10
    assert abs(metrics_whole["loss"] - metrics_chunked["loss"]) < 1e-6
    assert metrics_whole["accuracy"] == metrics_chunked["accuracy"]


def test_the_frozen_body_runs_in_chunks_and_the_head_trains_on_whole_batches():
    generator = torch.Generator().manual_seed(2)
    data = TensorDataset(torch.randn(10, 3, 8, 8, generator=generator), torch.randint(0, 3, (10,), generator=generator))
    seen: list[int] = []
    body = _frozen_body(seen)
    heads = []
    for compute in (Compute(torch.device("cpu")), Compute(torch.device("cpu"), forward_chunk=3)):
        torch.manual_seed(0)
        head = nn.Linear(4, 3)
        head_batches: list[int] = []
        head.register_forward_pre_hook(lambda module, inputs, batches=head_batches: batches.append(len(inputs[0])))
        train_one_epoch(head, DataLoader(data, batch_size=8), nn.CrossEntropyLoss(),
                        torch.optim.SGD(head.parameters(), lr=0.5), compute, feature_fn=body, progress=False)
        assert head_batches == [8, 2]  # one optimizer step per loader batch, chunked or not
        heads.append(head)
    assert seen == [8, 2, 3, 3, 2, 2]
    for whole, chunked in zip(heads[0].parameters(), heads[1].parameters()):
        assert torch.allclose(whole, chunked, atol=1e-6)
