"""``python -m systems.seq2seq.train``: fit with config.yaml; or ``fit|validate|test|predict`` and flags."""

from shared.cli import SystemCLI
from systems.seq2seq.module import Seq2Seq


def main(args: list[str] | None = None, run: bool = True) -> SystemCLI:
    return SystemCLI(Seq2Seq, "seq2seq", {"vocab_size": "vocab_size"}, args, run)  # data -> model argument


if __name__ == "__main__":
    main()
