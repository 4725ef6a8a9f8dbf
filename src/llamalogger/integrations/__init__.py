"""Glue between llamalogger and the libraries workers already use: one module per library.

* ``llamalogger.integrations.structlog``: ``add_job_context``, a processor that puts the
  current job's ids into every event dict, and ``PersistToLlamaLog``, a processor that also
  stores events in ``llama_log``: with their ``category``, plain lines as ``NOTED``.
* ``llamalogger.integrations.logging``: ``LlamaLogHandler``, a stdlib ``logging.Handler``
  that stores records in ``llama_log``: with the ``category`` given via ``extra=``, plain
  lines as ``NOTED``.
* ``llamalogger.integrations.celery``: ``instrument(app, logger)`` (extra ``celery``).
* ``llamalogger.integrations.rq``: ``LlamaWorker``, ``LlamaQueue``, ``job_meta`` (extra ``rq``).
* ``llamalogger.integrations.dramatiq``: ``LlamaMiddleware`` (extra ``dramatiq``).

Importing this package imports llamalogger itself and nothing else: none of these modules
and none of their libraries, so one integration never imports another's library. What is
defined here is what the logging integrations share. The task-queue ones use only the
public API (``LlamaLogger.task_job`` and friends), which is how other queues can be added.
"""

from __future__ import annotations

import inspect

from llamalogger import Category, LlamaLogger

__all__: list[str] = []

# Keyword names that LlamaLogger.log() binds itself (entity, related, level): a detail of
# such a name cannot go through **details, so the integrations store it with a trailing
# underscore. Read from the signature so that it follows log() if that ever changes.
_LOG_KEYWORDS: frozenset[str] = frozenset(
    name
    for name, parameter in inspect.signature(LlamaLogger.log).parameters.items()
    if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
)


def _detail_key(key: str) -> str:
    """``key`` as it can be passed to ``LlamaLogger.log(**details)``."""
    return f"{key}_" if key in _LOG_KEYWORDS else key


def _is_private(key: object) -> bool:
    """Whether a details key is private: a str starting with ``_``. Libraries put their own
    bookkeeping in such keys (urllib3's ``__urllib3-retry-warning`` extra, structlog's
    ``_record``); both logging integrations leave them out of ``details``."""
    return type(key) is str and key[:1] == "_"


def _default_category(value: Category | str | None) -> Category | None:
    """``value`` as a ``Category``; ``ValueError`` at construction for an unknown name.

    Shared by both integrations: a bad ``default_category`` is a configuration mistake,
    so it fails when the processor or handler is built, not at the first event.
    """
    if value is None:
        return None
    try:
        return Category.parse(value)
    except ValueError as exc:
        raise ValueError(f"default_category: {exc}") from None
