"""How a run ends when it does not finish: one sentence for a mistake, a status a scheduler can read.

| what happened | exit status | what the user sees |
| --- | --- | --- |
| a mistake in a flag, a config, a data file or a checkpoint (``UserError``, Lightning's own refusals) | 2 | one sentence naming the fix; nothing is left behind |
| a failed write (full disk, read-only folder) | 1 | one sentence: which file, what went wrong |
| Ctrl-C | 130 | where the state was saved and how to resume |
| SIGTERM (a cluster's pre-emption) | 143 | the same |
| a bug | 1 | the traceback |

``SYSTEMS_TRACEBACK=1`` in the environment shows the traceback of every failure, mistakes included.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

TRACEBACK_VARIABLE = "SYSTEMS_TRACEBACK"
BAD_INPUT, FAILED = 2, 1
# what a shell reports for a process ended by these signals (128 + the signal's number)
SIGNAL_STATUS = {signal.SIGINT: 128 + signal.SIGINT, signal.SIGTERM: 128 + signal.SIGTERM}
SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}
# write and read failures that are the machine's, not the program's
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


class UserError(ValueError):
    """A mistake the user can fix (a flag, a config value, a data file, a checkpoint), said in one sentence
    that names the fix. The command line prints it without a traceback and exits with status 2."""


def require(condition: bool, message: str) -> None:
    """Raise ``UserError(message)`` unless ``condition`` holds: one line per check where arguments are read."""
    if not condition:
        raise UserError(message)


def epochs_to_train(trainer: Any) -> int:
    """``trainer.max_epochs`` for a schedule sized in epochs; the one guard for it, with one message."""
    epochs = trainer.max_epochs
    require(
        epochs is not None and epochs >= 1,
        f"The learning-rate schedule is sized by trainer.max_epochs, which is {epochs}: set "
        "--trainer.max_epochs to the number of epochs to train (1 or more).",
    )
    return epochs


class Interrupted(Exception):
    """Training stopped at a batch boundary because of Ctrl-C or SIGTERM; ``saved`` is the file to resume
    from (None when there was nothing to save yet)."""

    def __init__(self, signum: int, saved: str | None = None) -> None:
        super().__init__(SIGNAL_NAMES.get(signum, f"signal {signum}"))
        self.signum = signum
        self.saved = saved


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error, then what caused it, innermost last (jsonargparse and Lightning wrap the user's errors)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)


def outcome(error: BaseException) -> tuple[int, str] | None:
    """The exit status and message for ``error``, or None for a bug, whose traceback the user should see."""
    from pytorch_lightning.utilities.exceptions import MisconfigurationException, SIGTERMException

    chain = list(_chain(error))
    for link in chain:
        if isinstance(link, Interrupted):
            where = (
                f"the state is saved in {link.saved}; resume with `fit --ckpt_path={link.saved}` and the same "
                "flags (or --ckpt_path=last)"
                if link.saved
                else "nothing was trained yet, so nothing was saved"
            )
            return SIGNAL_STATUS.get(link.signum, FAILED), f"Stopped by {link}: {where}."
    for link in chain:
        if isinstance(link, UserError):
            return BAD_INPUT, f"error: {link}"
        if isinstance(
            link, argparse.ArgumentError
        ):  # the parser's: an unknown key, a value of the wrong type
            return BAD_INPUT, f"error: {link.message}\n(--help lists every option with its type)"
    for link in reversed(chain):  # the first failure, not the ones that followed it during clean-up
        if isinstance(link, OSError) and link.errno in _ENVIRONMENT_ERRNOS:
            name = link.filename or "a file"
            return FAILED, (
                f"error: {link.strerror} ({name}). Free space or fix the folder's permissions; checkpoints "
                "already written are whole, and last.ckpt among them holds the last good state."
            )
    if isinstance(error, SIGTERMException):  # Lightning's own SIGTERM handling, outside training
        return SIGNAL_STATUS[signal.SIGTERM], "Stopped by SIGTERM; nothing was saved."
    if any(isinstance(link, KeyboardInterrupt) for link in chain):
        return SIGNAL_STATUS[signal.SIGINT], "Stopped by Ctrl-C; nothing was saved."
    if isinstance(error, SystemExit):
        return None  # the parser's own exit (status 2 after its message, 0 after --help)
    for link in chain:
        if isinstance(link, MisconfigurationException):
            return BAD_INPUT, f"error: {link}"
    return None


def _first_process() -> bool:
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    return rank_zero_only.rank == 0


@contextmanager
def reported(on_bad_input: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Turn what ends a command early into its message and exit status (see the module's table); a bug keeps
    its traceback. ``on_bad_input`` removes what the failed command wrote before the mistake was found."""
    try:
        yield
    except BaseException as error:
        result = outcome(error)
        if result is None or os.environ.get(TRACEBACK_VARIABLE):
            raise
        status, message = result
        if status == BAD_INPUT:
            on_bad_input()
        if not isinstance(error, Interrupted) or _first_process():  # under DDP every process stops
            print(message, file=sys.stderr, flush=True)
        raise SystemExit(status) from None
