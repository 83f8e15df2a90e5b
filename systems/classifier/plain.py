"""The classifier's training without Lightning: ``python -m systems.classifier.plain``.

``train`` is the loop the Trainer runs for ``Classifier`` (``module.py``): its body is ``training_step``,
the optimizer and schedule before it are ``configure_optimizers`` (with ``scheduler_interval="step"``),
and mixed precision is what ``Trainer(precision=...)`` adds. The benchmarks time both and check that they
end with the same weights (``benchmarks/parity.py``). What the LightningModule adds beyond this loop:
validation, checkpoints, logging, the skipped non-finite batch, devices and processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy


def train(
    net: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    device: torch.device,
    num_classes: int,
    lr: float,
    weight_decay: float,
    total_steps: int,
    autocast_dtype: torch.dtype | None = None,
    on_step: Callable[[], None] = lambda: None,
) -> list[torch.Tensor]:
    """AdamW and a cosine schedule stepped every batch over ``total_steps``; the loss of every batch."""
    net.to(device).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    accuracy = MulticlassAccuracy(num_classes).to(device)
    # float16 scales the loss so that small gradients survive; for other dtypes the scaler passes through
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)
    losses = []
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(
            device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None, cache_enabled=False
        ):
            logits = net(x)
            loss = F.cross_entropy(logits, y)
        accuracy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
        losses.append(loss.detach())
        on_step()
    return losses


def main(epochs: int = 10, batch_size: int = 64) -> float:
    """Train on scikit-learn's bundled digits (80% of them) and return the accuracy on the rest."""
    from sklearn.datasets import load_digits

    from systems.classifier.model import ConvNet, TypeAsNormalize

    torch.manual_seed(42)
    digits = load_digits()
    images = torch.from_numpy(digits.images).float().unsqueeze(1) / 16.0
    labels = torch.from_numpy(digits.target)
    order = torch.randperm(len(labels))
    train_idx, test_idx = order[: len(order) * 4 // 5], order[len(order) * 4 // 5 :]
    data = torch.utils.data.TensorDataset(images[train_idx], labels[train_idx])
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True)
    net = ConvNet(TypeAsNormalize([images.mean()], [images.std()]), in_channels=1, num_classes=10)
    batches = (batch for _ in range(epochs) for batch in loader)
    losses = train(
        net,
        batches,
        device=torch.device("cpu"),
        num_classes=10,
        lr=3e-3,
        weight_decay=1e-4,
        total_steps=epochs * len(loader),
    )
    net.eval()
    with torch.no_grad():
        accuracy = (net(images[test_idx]).argmax(1) == labels[test_idx]).float().mean().item()
    print(f"{len(losses)} steps, last loss {losses[-1].item():.3f}, test accuracy {accuracy:.3f}")
    return accuracy


if __name__ == "__main__":
    main()
