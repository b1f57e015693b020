"""Builds the real adapters from the settings, once per process, on first use.

The Azure Functions adapters in ``functions/`` call :func:`engine`; tests and benchmarks build
an :class:`~shared.engine.Engine` themselves from whatever adapters they need.
"""

from __future__ import annotations

import threading
from datetime import timedelta

from shared.engine import Engine
from shared.outbound import RequestsSender, new_session
from shared.settings import Settings
from shared.signing import CallbackSigner
from shared.store.table import TableStore
from shared.triggers import Workflows

INLINE_BUDGET = timedelta(seconds=30)
_lock = threading.Lock()
_engine: Engine | None = None
_workflows: Workflows | None = None


def build_engine(settings: Settings) -> Engine:
    """Wire an engine to Table Storage and ``requests`` as the settings describe."""
    session = new_session()
    return Engine(
        store=TableStore(settings.table_service_client(), settings.table_prefix),
        sender=RequestsSender(
            session,
            timeout_seconds=settings.http_timeout.total_seconds(),
            max_body_bytes=settings.max_body_bytes,
            allow_private_network=settings.allow_private_network,
        ),
        signer=CallbackSigner(settings.signing_keys),
        max_body_bytes=settings.max_body_bytes,
        public_base_url=settings.public_base_url,
        max_wait=settings.max_wait,
        # The lease must outlast the longest stretch between two writes: the inline budget
        # plus one outbound call that takes its full timeout.
        lease=max(timedelta(minutes=5), INLINE_BUDGET + 2 * settings.http_timeout),
        inline_budget=INLINE_BUDGET,
        workflow_cache=settings.workflow_cache,
    )


def engine() -> Engine:
    """The process-wide engine, built from the environment on first call."""
    return workflows().engine


def workflows() -> Workflows:
    """The process-wide workflow registry (and, through it, the engine), built on first call."""
    global _engine, _workflows
    if _workflows is None:
        with _lock:
            if _workflows is None:
                _engine = _engine or build_engine(Settings.from_env())
                _workflows = Workflows(_engine)
    return _workflows


def use(engine: Engine) -> None:
    """Make ``engine`` the process-wide one (benchmarks instrument their own)."""
    global _engine, _workflows
    with _lock:
        _engine, _workflows = engine, Workflows(engine)


def reset() -> None:
    """Forget the process-wide engine (tests that change the environment call this)."""
    global _engine, _workflows
    with _lock:
        _engine = _workflows = None
