"""``python -m systems.classifier.train``: fit with config.yaml; or ``fit|validate|test|predict`` and flags."""

from shared.cli import SystemCLI
from systems.classifier.module import Classifier

# data fact -> model argument
LINKS = {"num_classes": "num_classes", "dims": "image_shape", "mean": "mean", "std": "std"}


def main(args: list[str] | None = None, run: bool = True) -> SystemCLI:
    return SystemCLI(Classifier, "classifier", LINKS, args, run)


if __name__ == "__main__":
    main()
