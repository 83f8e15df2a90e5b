"""Downloads that fail fast offline: every connection bounded in time, one sentence naming the fix, and no
empty folders left behind. Data sets and model weights both come this way."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    """Bound every connect and read, so that a closed network fails in seconds instead of hanging."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def fetch_or_explain(
    fetch: Callable[[], object],
    missing: Callable[[str], Exception],
    folder: Path,
    timeout: float,
    allowed: bool = True,
) -> None:
    """Run ``fetch`` (a download into ``folder``) with every connection bounded by ``timeout`` seconds.

    When downloading is not ``allowed`` or fails, raise ``missing(reason)``, one sentence that names the
    fix, and remove the folders the attempt made (a failed download leaves no empty ``data/MNIST/raw``). The
    library's whole account of the failure is the exception's cause: ``SYSTEMS_TRACEBACK=1`` shows it.
    """
    if not allowed:
        raise missing("download is off (data.download=false)")
    made = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        with socket_timeout(timeout):
            fetch()
    except (OSError, RuntimeError) as error:
        for path in made:  # deepest first
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        # the library's last line names the cause; the rest of its story stays in the chained exception
        cause = (str(error).strip().splitlines() or [type(error).__name__])[-1].strip("<>")
        raise missing(f"it could not be downloaded (no network? {cause})") from error
