"""``polyloop.bridge`` in mixed mode: every native future type into every other.

One check per source type (an asyncio ``Future`` and ``Task``, a Tornado coroutine's
future, a ``Deferred``, a coroutine on Twisted's runner, a ``Greenlet``, an
``AsyncResult``, a ``concurrent.futures.Future`` completed from a worker thread, a
future of an asyncio loop in another thread, polyloop futures and tasks of each of
the four sessions, a coroutine), each bridged into every target (``to_asyncio``,
``to_tornado``, ``to_deferred``, ``future`` on each session, ``wait`` in a greenlet,
``to_greenlet``) four ways: a result, an error (its type and traceback kept), the
source cancelled (the target shows its own side's cancellation type) and the target
cancelled (the source is cancelled, where it can be).

The verdicts read each target the native way (an asyncio task awaiting it, Tornado's
``add_future``, ``Deferred.addCallbacks``, a greenlet's ``get``), never through the
bridge, so a bridge cannot grade itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import polyloop

from .._registry import SkipCheck, check
from ..referee import waiting_for
from ._util import bounded

__all__: list[str] = []

VALUE = ("the result", 42)
KINDS = ("result", "error", "cancel source", "cancel target")
#: Seconds a target may take to complete (it takes well under a millisecond).
WAIT = 5.0
FRAMEWORKS = ("asyncio", "tornado", "twisted", "gevent")


class Boom(Exception):
    """The error every source fails with."""


def _raise_boom() -> None:
    raise Boom("from the source")


def boom() -> Boom:
    """A ``Boom`` with a traceback through ``_raise_boom``."""
    try:
        _raise_boom()
    except Boom as exc:
        return exc
    raise AssertionError("unreachable")


def mixed_sessions() -> dict[str, polyloop.Session]:
    try:
        import polyloop_mixed

        return polyloop_mixed.sessions()
    except (ImportError, RuntimeError) as exc:
        raise SkipCheck(
            f"bridges need the four frameworks in one thread (--mixed): {exc}"
        ) from None


# --- sources: make() the native object, complete(kind) it, was_cancelled() ---


def settle(gate: Any, kind: str, cancel: Callable[[], object]) -> None:
    """Complete ``gate`` with ``VALUE`` or a ``Boom``, or for a cancellation call
    ``cancel()``. ``gate``: a future (asyncio, Tornado, polyloop, concurrent), a
    ``Deferred`` or a gevent ``AsyncResult``."""
    if kind not in ("result", "error"):
        cancel()
        return
    exc = boom()
    if hasattr(gate, "errback"):  # a Deferred
        from twisted.python.failure import Failure

        if kind == "result":
            gate.callback(VALUE)
        else:
            gate.errback(Failure(exc))
    elif hasattr(gate, "rawlink"):  # an AsyncResult: the traceback goes in apart
        if kind == "result":
            gate.set(VALUE)
        else:
            gate.set_exception(exc, (Boom, exc, exc.__traceback__))
    elif kind == "result":
        gate.set_result(VALUE)
    else:
        gate.set_exception(exc)


class Source:
    """A native object to bridge (``make()``), completed through its ``gate`` (a result
    or an error) or by ``cancel()``; by default the object is its own gate."""

    name = ""
    #: Whether cancelling the target must cancel it (an AsyncResult has no one to stop).
    cancellable = True
    obj: Any
    gate: Any

    def make(self) -> Any:
        raise NotImplementedError

    def complete(self, kind: str) -> None:
        settle(self.gate, kind, self.cancel)

    def cancel(self) -> None:
        self.obj.cancel()

    def was_cancelled(self) -> bool:
        return bool(self.obj.cancelled())

    def close(self) -> None:
        """Release what ``make`` started (a thread)."""


class AsyncioFuture(Source):
    name = "asyncio.Future"

    def make(self) -> Any:
        self.obj = self.gate = asyncio.get_running_loop().create_future()
        return self.obj


class AsyncioTask(Source):
    name = "asyncio.Task"

    def make(self) -> Any:
        loop = asyncio.get_running_loop()
        self.gate = gate = loop.create_future()

        async def body() -> Any:
            return await gate

        self.obj = loop.create_task(body())
        return self.obj


class TornadoCoroutine(Source):
    name = "tornado gen.coroutine"

    def make(self) -> Any:
        from tornado import gen
        from tornado.concurrent import Future

        self.gate = gate = Future()

        @gen.coroutine  # type: ignore[untyped-decorator,misc]
        def body() -> Any:
            value = yield gate
            return value

        self.obj = body()
        return self.obj


class Deferred(Source):
    name = "Deferred"

    def make(self) -> Any:
        from twisted.internet.defer import Deferred

        self.cancels = 0

        def canceller(d: Any) -> None:
            self.cancels += 1

        self.obj = self.gate = Deferred(canceller)
        return self.obj

    def was_cancelled(self) -> bool:
        return self.cancels == 1


class TwistedCoroutine(Source):
    name = "coroutine on Twisted's runner"

    def make(self) -> Any:
        from twisted.internet.defer import CancelledError, Deferred

        self.gate = gate = Deferred()
        self.saw_cancel = False

        async def body() -> Any:
            try:
                return await gate
            except CancelledError:
                self.saw_cancel = True
                raise

        self.obj = Deferred.fromCoroutine(body())
        return self.obj

    def was_cancelled(self) -> bool:
        return self.saw_cancel


class Greenlet(Source):
    name = "gevent.Greenlet"

    def make(self) -> Any:
        import gevent
        from gevent.event import AsyncResult

        self.gate = AsyncResult()
        self.obj = gevent.spawn(self.gate.get)
        return self.obj

    def cancel(self) -> None:
        self.obj.kill(block=False)

    def was_cancelled(self) -> bool:
        import gevent

        return bool(self.obj.dead and isinstance(self.obj.value, gevent.GreenletExit))


class AsyncResult(Source):
    name = "gevent AsyncResult"
    cancellable = False

    def make(self) -> Any:
        from gevent.event import AsyncResult

        self.obj = self.gate = AsyncResult()
        return self.obj

    def cancel(self) -> None:
        import gevent

        self.obj.set_exception(gevent.GreenletExit())  # how gevent code says "killed"

    def was_cancelled(self) -> bool:
        return False


class ThreadFuture(Source):
    """A ``concurrent.futures.Future`` completed (or cancelled) from a worker thread."""

    name = "concurrent.futures.Future (other thread)"

    def make(self) -> Any:
        self.obj = self.gate = concurrent.futures.Future()
        return self.obj

    def complete(self, kind: str) -> None:
        _in_os_thread(lambda: settle(self.gate, kind, self.obj.cancel))


class OtherLoopFuture(Source):
    """A future of an asyncio loop running in another thread."""

    name = "asyncio.Future (loop in another thread)"

    def make(self) -> Any:
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self.loop.call_soon(started.set)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        started.wait(10)
        self.obj = self.gate = self.loop.create_future()
        return self.obj

    def complete(self, kind: str) -> None:
        self.loop.call_soon_threadsafe(settle, self.gate, kind, self.obj.cancel)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class PolyloopFuture(Source):
    def __init__(self, session: polyloop.Session, framework: str) -> None:
        self.session = session
        self.name = f"polyloop.Future of the {framework} session"

    def make(self) -> Any:
        self.obj = self.gate = self.session.create_future()
        return self.obj


class PolyloopTask(Source):
    def __init__(self, session: polyloop.Session, framework: str) -> None:
        self.session = session
        self.name = f"polyloop.Task of the {framework} session"

    def make(self) -> Any:
        self.gate = gate = self.session.create_future()

        async def body() -> Any:
            return await gate

        self.obj = self.session.spawn(body())
        return self.obj


class Coroutine(Source):
    name = "coroutine"

    def make(self) -> Any:
        self.gate = gate = polyloop.current_backend().create_future()
        self.saw_cancel = False

        async def body() -> Any:
            try:
                return await gate
            except polyloop.Cancelled:
                self.saw_cancel = True
                raise

        return body()

    def cancel(self) -> None:
        self.gate.cancel()

    def was_cancelled(self) -> bool:
        return self.saw_cancel


def _in_os_thread(fn: Callable[[], None]) -> None:
    from ..referee import os_threads

    start_new_thread, _, _ = os_threads()
    start_new_thread(fn, ())


# --- targets: make the bridge, read it natively, cancel it ---
#
# Each ``bridge(source_object, seen)`` returns a cancel function and arranges for
# ``seen(outcome)`` to be called once, with ("result", value), ("error", exc) or
# ("cancelled", the exception type the target's side reports).

Seen = Callable[[tuple[str, Any]], None]
Target = Callable[[Any, Seen], Callable[[], object]]


def _read_future(f: Any) -> tuple[str, Any]:
    if f.cancelled():
        try:
            f.result()
        except BaseException as exc:
            return "cancelled", type(exc)
        return "cancelled", None
    exc = f.exception()
    return ("error", exc) if exc is not None else ("result", f.result())


def to_asyncio(x: Any, seen: Seen) -> Callable[[], object]:
    fut = polyloop.bridge.to_asyncio(x)
    if not isinstance(fut, asyncio.Future):
        raise AssertionError(f"to_asyncio gave {type(fut).__name__}, not an asyncio.Future")

    async def reader() -> None:
        try:
            seen(("result", await fut))
        except asyncio.CancelledError:
            seen(("cancelled", asyncio.CancelledError) if fut.cancelled() else ("?", fut))
        except BaseException as exc:
            seen(("error", exc))

    asyncio.get_running_loop().create_task(reader())
    return fut.cancel


def to_tornado(x: Any, seen: Seen) -> Callable[[], object]:
    from tornado.concurrent import Future
    from tornado.ioloop import IOLoop

    import polyloop_tornado

    fut = polyloop_tornado.to_tornado(x)
    if not isinstance(fut, Future):
        raise AssertionError(f"to_tornado gave {type(fut).__name__}, not a Tornado Future")
    IOLoop.current().add_future(fut, lambda f: seen(_read_future(f)))
    return fut.cancel


def to_deferred(x: Any, seen: Seen) -> Callable[[], object]:
    from twisted.internet.defer import Deferred

    import polyloop_twisted

    d = polyloop_twisted.to_deferred(x)
    if not isinstance(d, Deferred):
        raise AssertionError(f"to_deferred gave {type(d).__name__}, not a Deferred")

    def failed(failure: Any) -> None:
        from twisted.internet.defer import CancelledError

        if failure.check(CancelledError, asyncio.CancelledError):
            seen(("cancelled", failure.type))
        else:
            seen(("error", failure.value))

    d.addCallbacks(lambda v: seen(("result", v)), failed)
    return d.cancel


def to_future_on(session: polyloop.Session) -> Target:
    def target(x: Any, seen: Seen) -> Callable[[], object]:
        made: list[polyloop.Future[Any]] = []

        def make() -> None:
            made.append(polyloop.bridge.future(x))

        session.context.run(make)
        fut = made[0]
        if not isinstance(fut, polyloop.Future):
            raise AssertionError(f"future() gave {type(fut).__name__}, not a polyloop.Future")

        async def reader() -> None:
            try:
                seen(("result", await fut))
            except polyloop.Cancelled:
                seen(("cancelled", polyloop.Cancelled) if fut.cancelled() else ("?", fut))
            except BaseException as exc:
                seen(("error", exc))

        session.spawn(reader())
        return fut.cancel

    return target


def _read_greenlet(g: Any, seen: Seen) -> None:
    import gevent

    if g.successful():
        value = g.value
        if isinstance(value, gevent.GreenletExit):
            seen(("cancelled", type(value)))
        else:
            seen(("result", value))
    elif isinstance(g.exception, polyloop.Cancelled):
        seen(("cancelled", type(g.exception)))
    else:
        seen(("error", g.exception))


def wait_in_greenlet(x: Any, seen: Seen) -> Callable[[], object]:
    import gevent

    import polyloop_gevent

    g = gevent.spawn(polyloop_gevent.wait, x)
    g.rawlink(lambda g: _read_greenlet(g, seen))
    return lambda: g.kill(block=False)


def to_greenlet(x: Any, seen: Seen) -> Callable[[], object]:
    import gevent

    import polyloop_gevent

    g = polyloop_gevent.to_greenlet(x)
    if not isinstance(g, gevent.Greenlet):
        raise AssertionError(f"to_greenlet gave {type(g).__name__}, not a Greenlet")
    g.rawlink(lambda g: _read_greenlet(g, seen))
    return lambda: g.kill(block=False)


def targets(
    sessions: dict[str, polyloop.Session],
) -> Iterator[tuple[str, Target, tuple[Any, Any]]]:
    """(name, target, the cancellation types its side shows when the source is
    cancelled and when it is cancelled itself)."""
    import gevent
    from twisted.internet.defer import CancelledError

    yield "to_asyncio", to_asyncio, (asyncio.CancelledError,) * 2
    yield "to_tornado", to_tornado, (asyncio.CancelledError,) * 2
    yield "to_deferred", to_deferred, (CancelledError,) * 2
    for name in FRAMEWORKS:
        yield f"future() on {name}", to_future_on(sessions[name]), (polyloop.Cancelled,) * 2
    # A greenlet blocked in wait() on a cancelled source gets polyloop.Cancelled; the
    # waiting greenlet killed ends as gevent says "killed", GreenletExit.
    yield "wait() in a greenlet", wait_in_greenlet, (polyloop.Cancelled, gevent.GreenletExit)
    yield "to_greenlet", to_greenlet, (gevent.GreenletExit,) * 2


# --- the verdict ---


async def cross(session: polyloop.Session, make_source: Callable[[], Source]) -> None:
    import gevent

    sessions = mixed_sessions()
    failures: list[str] = []
    # Greenlets here fail with Boom and Cancelled on purpose: not for the hub to print.
    hub = gevent.get_hub()
    hub.NOT_ERROR, not_error = (*hub.NOT_ERROR, Boom, polyloop.Cancelled), hub.NOT_ERROR
    try:
        await _cross(session, make_source, sessions, failures)
    finally:
        hub.NOT_ERROR = not_error
    if failures:
        raise AssertionError(f"{len(failures)} bridge case(s) failed:\n  " + "\n  ".join(failures))


async def _cross(
    session: polyloop.Session,
    make_source: Callable[[], Source],
    sessions: dict[str, polyloop.Session],
    failures: list[str],
) -> None:
    for target_name, target, cancel_types in targets(sessions):
        for kind in KINDS:
            cancel_type = cancel_types[kind == "cancel target"]
            source = make_source()
            case = f"{source.name} -> {target_name}, {kind}"
            try:
                problem = await _one(session, source, target, kind, cancel_type, case)
            except _NeverCompleted as exc:
                failures.append(f"{case}: {exc}")
                failures.append("(the cases after it were not run)")
                return
            finally:
                source.close()
            if problem:
                failures.append(f"{case}: {problem}")


NEVER_COMPLETED = (
    "the target never completed (rule: a bridged future completes when its source does,"
    " and is cancelled when it is cancelled)"
)


class _NeverCompleted(Exception):
    """A target that did not complete within ``WAIT`` seconds (``bounded``'s verdict)."""


async def _one(
    session: polyloop.Session,
    source: Source,
    target: Target,
    kind: str,
    cancel_type: Any,
    case: str,
) -> str | None:
    done: polyloop.Future[tuple[str, Any]] = session.create_future()

    def seen(outcome: tuple[str, Any]) -> None:
        if done.done():
            extra.append(outcome)
        else:
            done.set_result(outcome)

    extra: list[tuple[str, Any]] = []
    cancel = target(source.make(), seen)
    await session.sleep(0)
    if kind == "cancel target":
        cancel()
    else:
        source.complete(kind)
    with waiting_for(f"{case}: the target to complete"):
        try:
            got_kind, got = await bounded(session, done, WAIT, NEVER_COMPLETED)
        except AssertionError as exc:
            raise _NeverCompleted(str(exc)) from None
    problem = _judge(kind, got_kind, got, cancel_type)
    if problem is None and kind == "cancel target" and source.cancellable:
        for _ in range(200):
            if source.was_cancelled():
                break
            await session.sleep(0.005)
        else:
            problem = "cancelling the target did not cancel the source"
    await session.sleep(0)
    if problem is None and extra:
        problem = f"the target completed twice: {extra}"
    return problem


def _judge(kind: str, got_kind: str, got: Any, cancel_type: Any) -> str | None:
    if kind == "result":
        if got_kind != "result" or got is not VALUE:
            return f"expected the result {VALUE!r} itself, got {got_kind} {got!r}"
        return None
    if kind == "error":
        if got_kind != "error" or not isinstance(got, Boom):
            return f"expected the source's Boom, got {got_kind} {got!r}"
        frames = [f.name for f in traceback.extract_tb(got.__traceback__)]
        if "_raise_boom" not in frames:
            return f"the error lost its traceback (frames: {frames})"
        return None
    if got_kind != "cancelled":
        return f"expected a cancellation, got {got_kind} {got!r}"
    if got is not cancel_type:
        name = getattr(got, "__module__", "") + "." + getattr(got, "__name__", repr(got))
        own = f"{cancel_type.__module__}.{cancel_type.__name__}"
        return f"the target's side saw {name}, not its own {own}"
    return None


def _register(category_name: str, make: Callable[[], Source], doc: str) -> None:
    async def bridge_check(session: polyloop.Session) -> None:
        await cross(session, make)

    slug = "from_" + "".join("_" + c.lower() if c.isupper() else c for c in category_name)
    slug = slug.replace("__", "_").replace("from__", "from_")
    bridge_check.__name__ = bridge_check.__qualname__ = f"check_{slug}"
    bridge_check.__doc__ = doc
    check("bridges", name=slug, clauses=["mixed.bridges"], timeout=60, mixed_only=True)(
        bridge_check
    )


for _cls in (
    AsyncioFuture, AsyncioTask, TornadoCoroutine, Deferred, TwistedCoroutine, Greenlet,
    AsyncResult, ThreadFuture, OtherLoopFuture, Coroutine,
):  # fmt: skip
    _register(
        _cls.__name__,
        _cls,
        f"{_cls.name} into every target: result, error, cancelled either side.",
    )


def _session_source(kind: type[Source], framework: str) -> Callable[[], Source]:
    def make() -> Source:
        source: Source = kind(mixed_sessions()[framework], framework)  # type: ignore[call-arg]
        return source

    return make


for _framework in FRAMEWORKS:
    for _cls in (PolyloopFuture, PolyloopTask):
        _register(
            f"{_cls.__name__}_{_framework}",
            _session_source(_cls, _framework),
            f"A {_cls.__name__} of the {_framework} session into every target.",
        )
