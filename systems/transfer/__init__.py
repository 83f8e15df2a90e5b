"""Transfer learning: a frozen pretrained ResNet, a trainable head, a BatchNorm policy, staged unfreezing."""

from systems.transfer.module import TransferLearner

__all__ = ["TransferLearner"]
