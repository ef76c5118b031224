"""robobus: an event-driven message bus for brain-and-cerebellum multi-robot collaboration.

One distribution, one top-level package. The repository's folders install beneath it:
``robobus.schemas`` (the contract), ``robobus.bus`` (transport) and ``robobus.skills``,
the agents ``robobus.brain_agent``, ``robobus.edge_agent`` and ``robobus.memory_store``, and
the product itself here: ``robobus.cli``, ``robobus.launch``, ``robobus.secure`` and
``robobus.testing``. Importing this package loads nothing else.
"""

__version__ = "0.1.0"
