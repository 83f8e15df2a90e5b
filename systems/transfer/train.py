"""``python -m systems.transfer.train``: config.yaml's fit (pretrain's backbone, frozen, on digits 5-9), or flags."""

from shared.cli import SystemCLI
from systems.transfer.module import TransferLearner

# data fact -> model argument
LINKS = {"num_classes": "num_classes", "dims": "image_shape", "mean": "mean", "std": "std"}


def main(args: list[str] | None = None, run: bool = True) -> SystemCLI:
    return SystemCLI(TransferLearner, "transfer", LINKS, args, run)


if __name__ == "__main__":
    main()
