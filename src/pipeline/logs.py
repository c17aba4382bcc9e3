"""Logging for a stage run by Snakemake: to the rule's log file, and errors in one line.

:func:`logged` sends the ``pipeline`` loggers to a file (and stderr), and when
the stage fails writes the error's one-sentence message first, then the
traceback, so ``snakemake`` shows users what went wrong without digging.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def logged(path: str | os.PathLike | None) -> Iterator[logging.Logger]:
    """Log ``pipeline.*`` at INFO to ``path`` (and stderr) for the duration of the block."""
    logger = logging.getLogger("pipeline")
    logger.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    file_handler = None
    if path is not None:
        os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
        file_handler = logging.FileHandler(path, mode="w")
        handlers.append(file_handler)
    for handler in handlers:
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    try:
        yield logger
    except Exception as err:
        logger.error("%s: %s", type(err).__name__, err)
        if file_handler is not None:
            file_handler.stream.write("".join(traceback.format_exception(err)))
        raise
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.flush()
        if file_handler is not None:
            file_handler.close()
