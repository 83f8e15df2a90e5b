"""Errors and exit statuses. A mistake (a flag, a config value, a data file, a checkpoint): one sentence naming the
fix, status 2. Ctrl-C, SIGTERM: 130, 143, and where the state is saved. A failed write: one sentence, 1. A bug: its
traceback, 1. ``SYSTEMS_TRACEBACK=1`` shows every traceback."""

from __future__ import annotations

import argparse
import errno
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch.distributed as dist
from pytorch_lightning.utilities.exceptions import MisconfigurationException, SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_only

# the signals that stop training at a batch boundary and save its state (SIGUSR1: SLURM's warning before a time limit)
NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM", signal.SIGUSR1: "SIGUSR1"}
WRITE_FAILURES = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


class UserError(ValueError):
    """A mistake the user can fix, in one sentence that names the fix."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


def epochs_to_train(trainer: Any) -> int:
    """``trainer.max_epochs``, for a schedule sized in epochs."""
    fix = "set --trainer.max_epochs to the number of epochs to train (1 or more)"
    require(
        (trainer.max_epochs or 0) >= 1,
        f"The schedule is sized by max_epochs, which is {trainer.max_epochs}: {fix}.",
    )
    return trainer.max_epochs


class Interrupted(Exception):
    """A signal of ``NAMES`` stopped training at a batch boundary; ``saved`` is the checkpoint to resume from,
    ``then`` what happens next where not the user's resume (a requeued SLURM job's)."""

    def __init__(self, signum: int, saved: str | None = None) -> None:
        super().__init__(NAMES.get(signum, f"signal {signum}"))
        self.signum, self.saved, self.then = signum, saved, None


def outcome(error: BaseException) -> tuple[int, str] | None:
    """The exit status and message for ``error``; None for a bug, whose traceback the user should see."""
    chain = [error]  # jsonargparse and Lightning wrap the user's errors
    while (e := chain[-1]).__cause__ or (e.__context__ and not e.__suppress_context__):
        if (cause := e.__cause__ or e.__context__) in chain:
            break
        chain.append(cause)
    if isinstance(error, SystemExit) and not any(isinstance(e, KeyboardInterrupt) for e in chain):
        return None  # the parser's own exit (--help), not Lightning's after a Ctrl-C
    for e in chain:
        if isinstance(e, Interrupted) and e.saved:
            resume = e.then or f"resume with `fit --ckpt_path={e.saved}` and the same flags"
            return 128 + e.signum, f"Stopped by {e}: the state is saved in {e.saved}; {resume}."
        if isinstance(e, Interrupted):
            return 128 + e.signum, f"Stopped by {e}: nothing was trained, nothing saved."
        if isinstance(e, UserError | MisconfigurationException):
            return 2, f"error: {e}"
        if isinstance(e, argparse.ArgumentError):  # the parser's: an unknown key, a value of the wrong type
            return 2, f"error: {e.message}\n(--help lists every option with its type)"
    for e in chain:  # a collective whose other side is gone: gloo's words, or NCCL's error
        if isinstance(e, dist.DistBackendError) or re.search("Connection (closed|reset) by peer", str(e)):
            resume = "resume with `fit --ckpt_path=last` and the same flags"
            return 1, f"error: another process of this run was lost (killed, or its machine): {resume}."
    for e in reversed(chain):  # the first failure, not those that followed it in clean-up
        if isinstance(e, OSError) and e.errno in WRITE_FAILURES:
            fix = "Free space or fix the folder's permissions; the checkpoints written are whole (last.ckpt too)"
            return 1, f"error: {e.strerror} ({e.filename or 'a file'}). {fix}."
    for e in chain:  # stopped where nothing could be saved
        if isinstance(e, SIGTERMException | KeyboardInterrupt):
            signum = signal.SIGTERM if isinstance(e, SIGTERMException) else signal.SIGINT
            return 128 + signum, f"Stopped by {NAMES[signum]}; nothing was saved."
    return None


@contextmanager
def reported(on_bad_input: Callable[[], None] = lambda: None) -> Iterator[None]:
    """What ends a command early as its message and exit status; ``on_bad_input`` removes what it wrote."""
    try:
        yield
    except BaseException as error:
        if (result := outcome(error)) is None or os.environ.get("SYSTEMS_TRACEBACK"):
            raise
        if result[0] == 2:
            on_bad_input()
        if not isinstance(error, Interrupted) or rank_zero_only.rank == 0:  # under DDP every process stops
            print(result[1], file=sys.stderr, flush=True)
        raise SystemExit(result[0]) from None
