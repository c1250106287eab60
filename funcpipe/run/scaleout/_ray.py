"""Ray, imported lazily: starting or joining a cluster, the board actors, and shared policy through them.

Nothing here is imported before a run asks for ``executor: ray``, so the
base install works without Ray; a missing Ray names the extra to install.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time
from collections.abc import Callable, Hashable, Sequence
from types import ModuleType
from typing import Any

from funcpipe.errors import RunError
from funcpipe.policy.breaker import TransitionListener
from funcpipe.policy.clock import Clock
from funcpipe.policy.models import CircuitBreaker, RateLimit
from funcpipe.run.scaleout._breakers import SharedBreaker
from funcpipe.run.scaleout._leases import LeasedLimiter

__all__ = ["ActorRef", "RaySharedPolicy", "import_ray", "start_ray"]

ActorRef = Any
"""A Ray actor handle (Ray ships no type for it)."""

LOOPBACK = "127.0.0.1"


def import_ray() -> ModuleType:
    """The ``ray`` module, or a `RunError` naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise RunError(
            "the ray executor needs Ray, which is not installed: pip install 'funcpipe-runner[ray]'"
        ) from None
    return ray


def start_ray(address: str | None, num_cpus: int | None) -> bool:
    """Join the cluster at ``address``, or start a local instance bound to loopback; say whether we started it.

    A Ray already initialised in this process (a notebook's, a test's) is
    used as it is, and left running.

    Raises:
        RunError: Ray is missing, or the cluster cannot be reached or started.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    # Nothing leaves the machine unless the user points at a cluster.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        else:
            ray.init(
                num_cpus=num_cpus,
                include_dashboard=False,
                _node_ip_address=LOOPBACK,
                log_to_driver=False,
                logging_level="ERROR",
            )
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError...
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise RunError(f"cannot start or reach {where}: {type(exc).__name__}: {exc}") from None
    return True


def stop_ray() -> None:
    """Shut down the Ray this process started."""
    import_ray().shutdown()


def cluster_cpus() -> int:
    """The CPUs the cluster offers (at least 1)."""
    cpus = import_ray().cluster_resources().get("CPU", 1)
    return max(1, int(cpus))


def make_actor(cls: type, *args: object) -> ActorRef:
    """An actor of the plain class ``cls`` (it takes no CPU: it only keeps shared state)."""
    ray = import_ray()
    return ray.remote(num_cpus=0)(cls).remote(*args)


def awaitable(ref: Any) -> asyncio.Future[Any]:
    """A Ray object reference as a future of the running loop."""
    future: concurrent.futures.Future[Any] = ref.future()
    return asyncio.wrap_future(future)


class RaySharedPolicy:
    """`funcpipe.policy.shared.SharedPolicy` through the policy board actor.

    Args:
        board: the `funcpipe.run.scaleout._boards.PolicyBoard` actor.
    """

    def __init__(self, board: ActorRef) -> None:
        self._board = board

    def limiter(self, scope: str, limit: RateLimit, clock: Clock) -> LeasedLimiter:
        """A limiter whose starts the board grants, shared by every worker calling ``scope``."""
        board = self._board

        async def grant(key: Hashable, costs: Sequence[int], lead: float, slack: int) -> Sequence[float]:
            ref = board.grant.remote(scope, limit, key, list(costs), lead, slack)
            starts: Sequence[float] = await awaitable(ref)
            return starts

        def pause(key: Hashable, seconds: float) -> None:
            board.pause.remote(scope, limit, key, seconds)

        return LeasedLimiter(grant, pause, clock, time.time)

    def breaker(
        self, scope: str, config: CircuitBreaker, clock: Clock, on_transition: TransitionListener
    ) -> SharedBreaker:
        """A breaker that opens for every worker when the board's breaker of ``scope`` opens."""
        board = self._board

        def tell(code: str | None, counted: bool, answer: Callable[[float], None]) -> None:
            loop = asyncio.get_running_loop()
            future: concurrent.futures.Future[float] = board.record.remote(scope, config, code, counted).future()

            def heard(done: concurrent.futures.Future[float]) -> None:
                if not done.cancelled() and done.exception() is None:
                    loop.call_soon_threadsafe(answer, done.result())

            future.add_done_callback(heard)

        return SharedBreaker(config, clock, tell, on_transition)
