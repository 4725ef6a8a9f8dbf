"""The job context: which job the running code belongs to, kept in a ContextVar.

A ContextVar gives every thread its own value and every asyncio task a copy of the
context it was created in, which is exactly the isolation docs/design.md §3 (invariant 6) asks
for. Plain threads start with an empty context; ``bind_job`` carries the current one in.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import os
import random
import threading
import time
from collections.abc import Callable, Generator, Mapping
from contextvars import ContextVar
from types import TracebackType
from typing import Any, ClassVar, ParamSpec, TypeVar, cast

import attrs

__all__ = [
    "HEADER_JOB_ID",
    "HEADER_JOB_NAME",
    "HEADER_PARENT_JOB_ID",
    "HEADER_ROOT_JOB_ID",
    "MAX_JOB_ID_LENGTH",
    "JobContext",
    "JobScope",
    "bind_job",
    "current_job",
    "new_job_id",
    "validate_job_id",
]

MAX_JOB_ID_LENGTH = 100  # the width of the varchar(100) job columns
MAX_JOB_NAME_LENGTH = 200  # names are labels like "import-album", not data

HEADER_JOB_ID = "llamalog-job-id"
HEADER_PARENT_JOB_ID = "llamalog-parent-job-id"
HEADER_ROOT_JOB_ID = "llamalog-root-job-id"
HEADER_JOB_NAME = "llamalog-job-name"

P = ParamSpec("P")
R = TypeVar("R")


def _validate_name(name: object) -> None:
    """``ValueError`` unless ``name`` is a job name the API would take."""
    if not isinstance(name, str):
        raise ValueError(f"job name must be a str, not {type(name).__name__}")
    if len(name) > MAX_JOB_NAME_LENGTH:
        raise ValueError(f"job name is longer than {MAX_JOB_NAME_LENGTH} characters")
    if "\x00" in name:
        raise ValueError("job name must not contain NUL characters")


def validate_job_id(value: object, what: str = "job_id") -> str:
    """Return ``value`` if it is a valid job id, else raise ``ValueError`` naming the problem."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} must not be empty")
    if len(value) > MAX_JOB_ID_LENGTH:
        raise ValueError(
            f"{what} is {len(value)} characters long; at most {MAX_JOB_ID_LENGTH} are allowed"
        )
    if "\x00" in value:
        raise ValueError(f"{what} must not contain NUL characters")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{what} contains a lone surrogate, not valid Unicode") from None
    return value


# The last id's time fields (48 bits of milliseconds, 12 of sub-millisecond), so that the
# next id can be made larger even when the clock has not moved (or stepped back).
_last_stamp = 0
_stamp_lock = threading.Lock()
_time_ns = time.time_ns  # module-level so that tests can freeze the clock


# This process's id, kept because os.getpid() is a system call and every job asks for it.
_pid = os.getpid()


def _reset_after_fork() -> None:
    global _stamp_lock, _pid  # noqa: PLW0603 - the child's own, never shared with the parent
    # Another thread may have held the lock at fork(); the child has only this thread.
    _stamp_lock = threading.Lock()
    _pid = os.getpid()


def current_pid() -> int:
    """``os.getpid()``, without the system call (updated in forked children)."""
    return _pid


os.register_at_fork(after_in_child=_reset_after_fork)


def new_job_id() -> str:
    """A UUIDv7-style id: 48 bits of Unix milliseconds, then sub-millisecond time, then random.

    The 12 bits after the version carry the fraction of the millisecond (RFC 9562,
    method 3). Within a process every id's time fields are larger than the previous
    id's: when the clock has not advanced by a 4096th of a millisecond (or went back),
    the previous value plus one is used (RFC 9562, 6.2), so ids sort in creation order.
    ``random`` is reseeded in forked children by the standard library, so children
    never repeat their parent's ids.
    """
    global _last_stamp  # noqa: PLW0603 - one counter per process, guarded by the lock
    ms, sub_ms = divmod(_time_ns(), 1_000_000)
    stamp = (ms & 0xFFFF_FFFF_FFFF) << 12 | (sub_ms * 4096) // 1_000_000
    with _stamp_lock:
        if stamp <= _last_stamp:
            stamp = _last_stamp + 1  # a full 4096 carries into the milliseconds
        _last_stamp = stamp
    value = (stamp >> 12) << 80 | 0x7 << 76 | (stamp & 0xFFF) << 64
    value |= 0b10 << 62 | random.getrandbits(62)
    raw = value.to_bytes(16)  # the 8-4-4-4-12 text of str(uuid.UUID(int=value)), faster
    return f"{raw[:4].hex()}-{raw[4:10].hex('-', 2)}-{raw[10:].hex()}"


@attrs.frozen
class JobContext:
    """One job: its id, name and place in the hierarchy.

    ``root_job_id`` is the id of the outermost job of the tree (its own id for a
    root job); ``parent_job_id`` is the job directly above it, ``None`` for a root.

    ``entity`` is what the job works on (``logger.job(name, entity=...)``), a ``(type, id)``
    pair of strs; ``details`` the context every event of the job carries in its own
    details (the job's keywords over those of the enclosing job). Neither travels in
    headers, and neither takes part in comparing two contexts.
    """

    job_id: str = attrs.field(validator=lambda _i, _a, v: validate_job_id(v))
    name: str | None = None
    parent_job_id: str | None = attrs.field(default=None)
    root_job_id: str = attrs.field()
    entity: tuple[str, str] | None = attrs.field(default=None, eq=False, repr=False)
    details: Mapping[str, Any] | None = attrs.field(default=None, eq=False, repr=False)

    @root_job_id.default
    def _root_defaults_to_self(self) -> str:
        # A job with a parent is never its own root: without word of the parent's root,
        # the parent is taken as the root (as the backfill takes a parent it knows no
        # more of, docs/design.md section 4, rule 3).
        return self.job_id if self.parent_job_id is None else self.parent_job_id

    @parent_job_id.validator
    def _check_parent(self, _attribute: object, value: str | None) -> None:
        if value is not None:
            validate_job_id(value, "parent_job_id")
            if value == self.job_id:
                raise ValueError(f"a job cannot be its own parent: {value!r:.110}")

    @root_job_id.validator
    def _check_root(self, _attribute: object, value: str) -> None:
        validate_job_id(value, "root_job_id")

    def child(self, name: str | None = None, job_id: str | None = None) -> JobContext:
        """The context of a job started inside this one (it keeps this job's ``details``)."""
        if job_id is None:
            return _checked_already(
                new_job_id(), name, self.job_id, self.root_job_id, None, self.details
            )
        return JobContext(
            job_id=job_id,
            name=name,
            parent_job_id=self.job_id,
            root_job_id=self.root_job_id,
            details=self.details,
        )

    #: The header names ``to_headers`` writes and the ``from_*headers`` methods read.
    HEADERS: ClassVar[tuple[str, ...]] = (
        HEADER_JOB_ID,
        HEADER_PARENT_JOB_ID,
        HEADER_ROOT_JOB_ID,
        HEADER_JOB_NAME,
    )

    def to_headers(self) -> dict[str, str]:
        """Plain string headers that carry this job to another process or a queue message."""
        headers = {HEADER_JOB_ID: self.job_id, HEADER_ROOT_JOB_ID: self.root_job_id}
        if self.parent_job_id is not None:
            headers[HEADER_PARENT_JOB_ID] = self.parent_job_id
        if self.name is not None:
            headers[HEADER_JOB_NAME] = self.name
        return headers

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> JobContext:
        """Rebuild a context from ``to_headers()`` output (keys are matched case-insensitively).

        ``TypeError`` unless ``headers`` is a mapping; ``ValueError`` when the job id header
        is missing, an id or the name is invalid (as at the API: not a str, too long, NUL),
        the job would be its own parent, or a root other than the job itself is named
        without a parent (``to_headers()`` never writes that: a job under a root has a
        parent). A parent without a root is taken as the root.
        """
        if not isinstance(headers, Mapping):
            raise TypeError(f"headers must be a mapping, not {type(headers).__name__}")
        lowered = {str(key).lower(): value for key, value in headers.items()}
        if HEADER_JOB_ID not in lowered:
            raise ValueError(f"headers carry no {HEADER_JOB_ID!r}")
        job_id = lowered[HEADER_JOB_ID]
        name = lowered.get(HEADER_JOB_NAME)
        if name is not None:
            _validate_name(name)
        return _from_header_values(
            job_id,
            name,
            lowered.get(HEADER_PARENT_JOB_ID),
            lowered.get(HEADER_ROOT_JOB_ID),
        )

    @classmethod
    def from_untrusted_headers(
        cls, headers: object, *, on_refused: Callable[[str], object] | None = None
    ) -> JobContext | None:
        """The job carried by headers that another process wrote, or ``None``; never raises.

        For task-queue integrations: a message's headers or options come from whoever
        could publish to the queue. Only the four ``HEADERS`` are read (case-insensitively);
        ``None`` when ``headers`` is not a mapping, carries no job id, or carries what
        ``from_headers`` refuses (an invalid id, a job that is its own parent, a root
        without a parent). A job name longer than the limit is cut, since it is only a
        label; the task then still runs under its parent rather than as a root.

        ``on_refused`` is called with the reason when headers that carry a job id are
        refused, so that an integration can say why a task lost the parent its message
        named (the integrations warn once per such message).
        """
        if not isinstance(headers, Mapping):
            return None
        try:
            found = {
                lowered: value
                for key, value in headers.items()
                if isinstance(key, str) and (lowered := key.lower()) in cls.HEADERS
            }
        except (TypeError, ValueError, AttributeError):
            return None  # a mapping that cannot even be iterated: no job to be had
        job_id = found.get(HEADER_JOB_ID)
        if job_id is None:
            return None
        name = found.get(HEADER_JOB_NAME)
        if isinstance(name, str):
            name = name[:MAX_JOB_NAME_LENGTH]
            if "\x00" in name:
                name = None  # only a label: the task keeps its parent without it
        else:
            name = None
        try:  # the validators check every id, whatever its type
            return _from_header_values(
                job_id, name, found.get(HEADER_PARENT_JOB_ID), found.get(HEADER_ROOT_JOB_ID)
            )
        except (TypeError, ValueError) as exc:
            if on_refused is not None:
                on_refused(str(exc))
            return None


def _from_header_values(job_id: Any, name: str | None, parent: Any, root: Any) -> JobContext:
    """A context from the values headers carry; without a root, the class's own default
    decides it (the parent, else the job itself)."""
    if root is None:
        return JobContext(job_id=job_id, name=name, parent_job_id=parent)
    context = JobContext(job_id=job_id, name=name, parent_job_id=parent, root_job_id=root)
    if parent is None and root != job_id:
        # A job under a root has a parent; headers that hide it would place the job's
        # children under a job whose own place nobody can check (to_headers() always
        # writes the parent of a job that is not a root).
        raise ValueError(
            f"headers name root {root!r:.110} but no parent for job {job_id!r:.110}: "
            "a job that is not the root needs its parent"
        )
    return context


_new_instance = object.__new__
_set_field = object.__setattr__  # how attrs itself sets the fields of a frozen class


def _checked_already(  # noqa: PLR0917 - one argument per field, on the hot path
    job_id: str,
    name: str | None,
    parent_job_id: str | None,
    root_job_id: str,
    entity: tuple[str, str] | None = None,
    details: Mapping[str, Any] | None = None,
) -> JobContext:
    """A ``JobContext`` of ids that are known to be valid, without running the validators.

    Entering a job is on the hot path, and its ids are always valid already: a generated
    one, one that ``JobScope`` checked, or those of a context whose validators ran.
    """
    context = _new_instance(JobContext)
    _set_field(context, "job_id", job_id)
    _set_field(context, "name", name)
    _set_field(context, "parent_job_id", parent_job_id)
    _set_field(context, "root_job_id", root_job_id)
    _set_field(context, "entity", entity)
    _set_field(context, "details", details)
    return context


_current: ContextVar[JobContext | None] = ContextVar("llamalogger_job", default=None)
# The process in which the current job was entered (0: none was).
_entered_in_pid: ContextVar[int] = ContextVar("llamalogger_job_pid", default=0)

# One entry of a JobScope: the tokens that undo it, its context and when it was entered
# (microseconds since 2000-01-01 UTC, as records keep time). Only the outermost job of a
# process sets the pid, so only its entry has a pid token.
_Entry = tuple[contextvars.Token[JobContext | None], JobContext, contextvars.Token[int] | None, int]

# Called as a job's block is left, while the job is still current: its context, the
# exception leaving it (or None) and when it was entered.
OnExit = Callable[[JobContext, BaseException | None, int], object]

_PG_EPOCH_US = 946_684_800_000_000  # as _records.PG_EPOCH_US: _context imports no record code


def _now_us() -> int:
    return _time_ns() // 1000 - _PG_EPOCH_US


def current_job() -> JobContext | None:
    """The job the calling code runs in, or ``None`` outside any job."""
    return _current.get()


def bind_job(fn: Callable[P, R]) -> Callable[P, R]:
    """Wrap ``fn`` so that it runs in (a copy of) the caller's current context.

    Threads do not inherit context variables; use this to carry the current job into
    ``threading.Thread(target=bind_job(work))`` or ``executor.submit(bind_job(work), x)``.
    Each call runs in its own copy, so concurrent calls never share a context.
    """
    snapshot = contextvars.copy_context()

    @functools.wraps(fn)
    def run_in_job(*args: P.args, **kwargs: P.kwargs) -> R:
        return snapshot.copy().run(fn, *args, **kwargs)

    return run_in_job


class JobScope:
    """What ``LlamaLogger.job()`` returns: a context manager and a decorator.

    As a context manager it enters a new job (a root job, or a child of the enclosing
    job or of an explicit ``parent``) and restores the previous context on exit, however
    the block is left. As a decorator, every call of the function runs in a job of its
    own; sync functions, ``async def`` functions and generator functions are supported.
    """

    __slots__ = (
        "_details",
        "_entered",
        "_entity",
        "_job_id",
        "_name",
        "_on_exit",
        "_on_outermost_exit",
        "_parent",
    )

    def __init__(  # noqa: PLR0917 - built by LlamaLogger, not by users
        self,
        name: str | None,
        job_id: str | None,
        parent: JobContext | None,
        on_outermost_exit: Callable[[], object] | None = None,
        on_exit: OnExit | None = None,
        entity: tuple[str, str] | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        if job_id is not None:
            validate_job_id(job_id)
        if parent is not None and not isinstance(parent, JobContext):
            raise TypeError(
                f"parent must be a JobContext (see JobContext.from_headers), "
                f"not {type(parent).__name__}"
            )
        if parent is not None and job_id is not None and parent.job_id == job_id:
            raise ValueError(f"a job cannot be its own parent: {job_id!r:.110}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"job name must be a str, not {type(name).__name__}")
        if name is not None and len(name) > MAX_JOB_NAME_LENGTH:
            raise ValueError(f"job name is longer than {MAX_JOB_NAME_LENGTH} characters")
        self._name = name
        self._on_outermost_exit = on_outermost_exit
        # Called while the job is still current, however the block is left: the logger
        # records a FAILED event there when an exception leaves the job.
        self._on_exit = on_exit
        self._job_id = job_id
        self._parent = parent
        self._entity = entity  # checked by the logger
        self._details = details or None
        # The active entries, keyed by the id of the context each one set: the same scope
        # object may be entered recursively, or by several asyncio tasks whose blocks end
        # in any order, and each exit must undo its own entry.
        self._entered: dict[int, _Entry] = {}

    def _new_context(self) -> JobContext:
        # Every id here is valid already: __init__ checked ours, so did the enclosing job's.
        job_id = new_job_id() if self._job_id is None else self._job_id
        enclosing = self._parent if self._parent is not None else _current.get()
        if enclosing is not None and enclosing.job_id == job_id:
            raise ValueError(f"a job cannot be its own parent: {job_id!r:.110}")
        details = self._details
        if enclosing is None:
            return _checked_already(job_id, self._name, None, job_id, self._entity, details)
        if enclosing.details:
            details = {**enclosing.details, **details} if details else enclosing.details
        return _checked_already(
            job_id,
            self._name,
            enclosing.job_id,
            enclosing.root_job_id,
            self._entity,
            details,
        )

    def __enter__(self) -> JobContext:
        context = self._new_context()
        # The outermost job of *this* process: a forked child inherits its parent's
        # current job, but its own first job is where its work ends.
        pid_token = _entered_in_pid.set(_pid) if _entered_in_pid.get() != _pid else None
        self._entered[id(context)] = (_current.set(context), context, pid_token, _now_us())
        return context

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        entry = self._entered.pop(id(_current.get()), None)
        if entry is None:
            # The block is left while another job is current here: a generator suspended
            # inside the block is closed from some other thread, task or context. That
            # context belongs to someone else, so it is left alone. (The entry stays in
            # the dict: which one it was cannot be told, and forgetting the wrong one
            # would break another task's exit.)
            return
        token, context, pid_token, started_at = entry
        if self._on_exit is not None:
            try:
                self._on_exit(context, exc, started_at)
            finally:
                self._restore(token, pid_token)
        else:
            self._restore(token, pid_token)
        if pid_token is not None and self._on_outermost_exit is not None:
            self._on_outermost_exit()

    @staticmethod
    def _restore(
        token: contextvars.Token[JobContext | None], pid_token: contextvars.Token[int] | None
    ) -> None:
        try:
            _current.reset(token)
            if pid_token is not None:
                _entered_in_pid.reset(pid_token)
        except ValueError:
            # Our job is current, but in a copy of the context the block was entered in
            # (a task created inside the block): restore the values it replaced.
            _current.set(token.old_value if token.old_value is not token.MISSING else None)
            if pid_token is not None:
                _entered_in_pid.set(
                    pid_token.old_value if pid_token.old_value is not pid_token.MISSING else 0
                )

    async def __aenter__(self) -> JobContext:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def _fresh(self) -> JobScope:
        return JobScope(
            self._name,
            self._job_id,
            self._parent,
            self._on_outermost_exit,
            self._on_exit,
            self._entity,
            self._details,
        )

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        if inspect.isasyncgenfunction(fn):
            raise TypeError(
                "async generator functions cannot be decorated with job(); "
                "use `with logger.job(...)` inside the generator instead"
            )
        if inspect.iscoroutinefunction(fn):
            return cast(Callable[P, R], self._wrap_coroutine(fn))
        if inspect.isgeneratorfunction(fn):
            return cast(Callable[P, R], self._wrap_generator(fn))

        @functools.wraps(fn)
        def run_in_job(*args: P.args, **kwargs: P.kwargs) -> R:
            with self._fresh():
                return fn(*args, **kwargs)

        return run_in_job

    def _wrap_coroutine(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        @functools.wraps(fn)
        async def run_in_job(*args: P.args, **kwargs: P.kwargs) -> Any:
            with self._fresh():
                return await fn(*args, **kwargs)

        return run_in_job

    def _wrap_generator(
        self, fn: Callable[P, Generator[Any, Any, Any]]
    ) -> Callable[P, Generator[Any, Any, Any]]:
        @functools.wraps(fn)
        def run_in_job(*args: P.args, **kwargs: P.kwargs) -> Generator[Any, Any, Any]:
            # Each step of the generator runs in a private context that holds the job, so
            # the job is current while the generator body runs and never leaks to the
            # consumer between yields (a plain `with` around `yield` would leak it).
            private = contextvars.copy_context()
            scope = self._fresh()
            private.run(scope.__enter__)
            inner = private.run(fn, *args, **kwargs)
            try:
                result = yield from _StepInContext(inner, private)
            except BaseException as exc:
                # Leaving the job in its own context records a failure and restores it.
                private.run(scope.__exit__, type(exc), exc, exc.__traceback__)
                raise
            private.run(scope.__exit__, None, None, None)
            return result

        return run_in_job

    def __repr__(self) -> str:
        return f"<JobScope name={self._name!r} job_id={self._job_id!r}>"


class _StepInContext(Generator[Any, Any, Any]):
    """A generator that forwards every step of ``inner`` into ``context``."""

    __slots__ = ("_context", "_inner")

    def __init__(self, inner: Generator[Any, Any, Any], context: contextvars.Context) -> None:
        self._inner = inner
        self._context = context

    def send(self, value: Any) -> Any:
        return self._context.run(self._inner.send, value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        if val is None and tb is None:
            return self._context.run(self._inner.throw, typ)
        return self._context.run(self._inner.throw, typ, val, tb)

    def close(self) -> None:
        self._context.run(self._inner.close)
