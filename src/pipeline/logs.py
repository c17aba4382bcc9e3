"""Logging for a stage run by Snakemake: to the rule's log file, and a failure in one sentence.

:func:`logged` sends the ``pipeline`` loggers to a file (and stderr). When the
stage fails it writes the error and its traceback to the log file, then prints
the error's one-sentence message (``ValueError: ...``) to stderr as the job's
very last output and exits with status 1, so that no Python traceback follows
the sentence in what ``snakemake`` shows (Snakemake runs a ``script:`` in its
own Python process, so the exit ends only the job). A block that succeeds ends
its log with ``done in X.XX s``, the job's elapsed seconds (read back by
:mod:`pipeline.summary`).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATEFMT = "%Y-%m-%d %H:%M:%S"


@contextmanager
def logged(path: str | os.PathLike | None) -> Iterator[logging.Logger]:
    """Log ``pipeline.*`` at INFO to ``path`` (and stderr) for the duration of the block.

    A block that finishes logs ``done in X.XX s`` (wall-clock seconds of the
    block) as its last line. An exception escaping the block is written, with
    its traceback, to ``path``; then ``Type: message`` is printed to stderr and the process
    exits with status 1 (:class:`SystemExit`) instead of printing a traceback.
    """
    logger = logging.getLogger("pipeline")
    logger.setLevel(logging.INFO)
    fmt = logging.Formatter(FORMAT, DATEFMT)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if path is not None:
        os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
        handlers.append(logging.FileHandler(path, mode="w"))
    for handler in handlers:
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    start = time.perf_counter()
    try:
        yield logger
    except Exception as err:
        _detach(logger, handlers)
        sentence = f"{type(err).__name__}: {err}"
        if path is not None:
            with open(path, "a", encoding="utf-8") as log_file:
                log_file.write(f"{time.strftime(DATEFMT)} ERROR {logger.name}: {sentence}\n")
                log_file.write("".join(traceback.format_exception(err)))
        sys.stdout.flush()
        print(sentence, file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    else:
        logger.info("done in %.2f s", time.perf_counter() - start)
    finally:
        _detach(logger, handlers)


def _detach(logger: logging.Logger, handlers: list[logging.Handler]) -> None:
    """Remove and close the block's handlers (again harmlessly)."""
    for handler in handlers:
        logger.removeHandler(handler)
        handler.flush()
        handler.close()
