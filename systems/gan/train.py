"""``python -m systems.gan.train``: fit with config.yaml; or ``fit|validate|test|predict`` and flags."""

from shared.cli import SystemCLI
from systems.gan.module import GAN


def main(args: list[str] | None = None, run: bool = True) -> SystemCLI:
    return SystemCLI(GAN, "gan", {"dims": "image_shape"}, args, run)  # data fact -> model argument


if __name__ == "__main__":
    main()
