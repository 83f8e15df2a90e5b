"""Image classifier: device- and dtype-safe modules, torchmetrics, scheduler intervals, tuning."""

from systems.classifier.module import Classifier

__all__ = ["Classifier"]
