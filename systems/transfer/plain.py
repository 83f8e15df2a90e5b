"""The transfer system's training step in plain PyTorch: what ``TransferLearner`` (module.py) does in
``training_step`` and ``configure_optimizers``, with nothing but torch and this folder's model.py.

    python -m systems.transfer.plain   # a new head on the backbone pretrain exported, config.yaml's data

``train`` is also the plain loop that ``python -m benchmarks.parity`` times against the Trainer; both end
with the same weights. What the LightningModule adds: staged unfreezing (a parameter group joining mid-fit,
on resume and under DDP too), weights by torchvision name or from a checkpoint, metrics and logging,
checkpoints that resume exactly, devices and processes.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from systems.transfer.model import BNPolicy, Standardize, build_backbone, set_modes

CONFIG = Path(__file__).with_name("config.yaml")


def train(
    normalize: nn.Module,
    backbone: nn.Module,
    head: nn.Module,
    batches: Iterable[Sequence[torch.Tensor]],
    device: torch.device,
    *,
    lr: float,
    backbone_lr: float,
    weight_decay: float,
    bn_policy: BNPolicy = "frozen",
    channels_last: bool = False,
    autocast_dtype: torch.dtype | None = None,
    on_step: Callable[[], None] = lambda: None,
) -> list[torch.Tensor]:
    """Train ``head``, and whatever of ``backbone`` requires grad, on ``(images, labels)`` batches from the
    host; return the loss of each batch.

    Frozen as in the module: the backbone's frozen stages in eval mode and BatchNorm as ``bn_policy`` says,
    its features computed without a graph while none of it trains, only trainable parameters in AdamW.
    """
    for net in (normalize, backbone, head):
        net.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    head.train()
    set_modes(backbone, bn_policy)
    trainable = [p for p in backbone.parameters() if p.requires_grad]
    groups = [{"name": "head", "params": list(head.parameters()), "lr": lr}]
    if trainable:
        groups.append({"name": "backbone", "params": trainable, "lr": backbone_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=weight_decay)
    # float16 scales the loss so that small gradients survive; for other dtypes the scaler passes through
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)
    losses = []
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(
            device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None, cache_enabled=False
        ):
            x = normalize(x)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.set_grad_enabled(bool(trainable)):  # frozen: no graph through the backbone
                features = backbone(x)
            loss = F.cross_entropy(head(features), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss.detach())
        on_step()
    return losses


@torch.no_grad()
def accuracy(nets: nn.Sequential, batches: Iterable[Sequence[torch.Tensor]], device: torch.device) -> float:
    """The share of the images in ``batches`` that ``nets`` classify right, in eval mode."""
    nets.eval()
    right = total = 0
    for x, y in batches:
        right += (nets(x.to(device)).argmax(dim=1).cpu() == y).sum().item()
        total += len(y)
    return right / total


def main(argv: Sequence[str] | None = None) -> None:
    """Train a new head on the frozen backbone with config.yaml's data and TransferLearner's hyper-parameters (their
    defaults: the one place they are written), printing each epoch's training loss, then the accuracies."""
    import inspect

    import yaml

    from datamodules import DigitsDataModule  # a LightningDataModule, used here only for its loaders
    from systems.transfer.module import TransferLearner
    from systems.transfer.weights import PRETRAINED_BACKBONE, load_weights

    config = yaml.safe_load(CONFIG.read_text())
    hp = {name: p.default for name, p in inspect.signature(TransferLearner).parameters.items()}
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--epochs", type=int, default=config["trainer"]["max_epochs"])
    parser.add_argument("--weights", default=PRETRAINED_BACKBONE, help="the backbone's file (or random)")
    args = parser.parse_args(argv)

    torch.manual_seed(42)  # what seed_everything gives the Trainer's runs
    data = DigitsDataModule(**config["data"]["init_args"])
    data.setup("fit")
    normalize = Standardize(data.mean, data.std)
    backbone, width = build_backbone(hp["arch"])
    head = nn.Sequential(nn.Dropout(hp["dropout"]), nn.Linear(width, data.num_classes))
    backbone.requires_grad_(False)
    if Path(args.weights).is_file():
        load_weights(backbone, hp["arch"], args.weights)
    else:
        print(f"No backbone at {args.weights} (pretrain writes one): random weights")
    loader = data.train_dataloader()

    def epochs() -> Iterator[Sequence[torch.Tensor]]:
        for epoch in range(args.epochs):
            loader.sampler.set_epoch(epoch)  # what the Trainer does: each epoch's shuffle has its own seed
            yield from loader

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    settings = {k: hp[k] for k in ("lr", "backbone_lr", "weight_decay", "bn_policy", "channels_last")}
    losses = train(normalize, backbone, head, epochs(), device, **settings)
    for epoch, loss in enumerate(torch.stack(losses).view(args.epochs, -1).mean(dim=1).tolist()):
        print(f"epoch {epoch}: training loss {loss:.4f}")
    nets = nn.Sequential(normalize, backbone, head)
    val, test = accuracy(nets, data.val_dataloader(), device), accuracy(nets, data.test_dataloader(), device)
    print(f"validation accuracy {val:.4f}, test accuracy {test:.4f}")


if __name__ == "__main__":
    main()
