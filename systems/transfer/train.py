"""``python -m systems.transfer.train``: fit with config.yaml; or ``fit|validate|test|predict`` and flags. The
default transfers the backbone ``python -m systems.transfer.pretrain`` wrote, frozen, to digits 5-9."""

from shared.cli import SystemCLI
from systems.transfer.module import TransferLearner

# data fact -> model argument
LINKS = {"num_classes": "num_classes", "dims": "image_shape", "mean": "mean", "std": "std"}


def main(args: list[str] | None = None, run: bool = True) -> SystemCLI:
    return SystemCLI(TransferLearner, "transfer", LINKS, args, run)


if __name__ == "__main__":
    main()
