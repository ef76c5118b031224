"""robobus: an event-driven message bus for brain-and-cerebellum multi-robot collaboration.

One distribution, one top-level package. The repository's folders install beneath it:
``robobus.schemas`` (the contract), ``robobus.bus`` (transport) and ``robobus.skills``,
the agents ``robobus.brain_agent``, ``robobus.edge_agent`` and ``robobus.memory_store``, and
the product itself here: ``robobus.cli``, ``robobus.launch``, ``robobus.secure`` and
``robobus.testing``. Importing this package loads only structlog, to keep the library quiet:

The library logs with structlog, whose default prints every line, debug included, on stdout.
Unless the application configured structlog before importing robobus, warnings and errors go to
stderr and debug and info lines are dropped at the call (a no-op method, no formatting). An
application that wants them configures structlog itself, before its first robobus call (loggers
are cached on first use); the ``robobus`` commands do (stderr, ``--log-level``).
"""

import logging as _logging
import sys as _sys

import structlog as _structlog

__version__ = "0.1.0"

if not _structlog.is_configured():
    _structlog.configure(
        processors=[_structlog.contextvars.merge_contextvars,
                    _structlog.processors.add_log_level,
                    _structlog.processors.TimeStamper(fmt="iso", utc=True),
                    _structlog.processors.KeyValueRenderer(key_order=["timestamp", "level",
                                                                      "event"])],
        wrapper_class=_structlog.make_filtering_bound_logger(_logging.WARNING),
        logger_factory=_structlog.PrintLoggerFactory(file=_sys.stderr),
        cache_logger_on_first_use=True,
    )
