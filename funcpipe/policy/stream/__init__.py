"""Stream-level policies: bounded concurrency, batching and fairness.

`apply_stream_policy` maps an external call over a stream and
`apply_batch_policy` maps a batch call over batches of it. For each item the
parts apply in the order of DESIGN.md::

    fairness: deficit round robin across keys, among the items waiting
      └ batching: up to ``size`` items, or those waiting ``max_wait`` after the first
          └ bounded concurrency: at most ``policy.concurrency`` calls in flight
              └ the call-level policy, `PolicyRuntime.apply` (deadline, retry, limiter, breaker, timeout)

Every input ``Err`` passes straight through: it never waits for a worker.

How it runs: when the returned stream is first pulled it starts, inside
itself, one reader task, a fixed pool of ``workers`` worker tasks (never a
task per item) and, when needed, a timer for ``max_wait`` and a watcher for
``shutdown``. Closing or cancelling the stream cancels and awaits every one of
them, then closes its input, so nothing outlives it. With one worker and
neither batching nor fairness no task is started at all.

``workers`` is ``policy.concurrency`` (default 1), each running one call at a
time. When the policy retries, the runtime takes a call slot per attempt and
an item backing off between attempts holds none (DESIGN.md), so there are
twice as many workers: items that wait out a backoff leave the slots to
others, and the runtime still bounds the calls in flight.

Poison items. One bad item must not take its batch with it. When a batch
call fails with a code that may blame its items and that the policy does not
retry (`funcpipe.policy.batching.split_codes`: ``BAD_INPUT``, ``DB_ERROR``,
``SERVICE_SPECIFIC``, ``USER_CODE``, less the policy's ``retry.on``), its
worker splits it in halves and calls each, depth first, recursively: a part
that succeeds gives its items their results, a single item that fails is a
poison item and gets the error of its own call. Each part is a call under
the policy like any other (rate limit, breaker, retry, timeout). A part that
fails for its items is not counted as a failure by the breaker, so one poison
item is counted once, by its own call, not once per level. A part failing
with any other code (``AUTH``, ``FATAL_DB``, ``CIRCUIT_OPEN``, or a retried
code whose attempts ran out) stops the search: it and every item not yet
answered fail with that error. An error whose meta sets ``whole_call``
(`funcpipe.policy.batching.WHOLE_CALL`) is never split. For ``k`` poison
items among ``n`` this costs at most ``1 + 2k·ceil(log2 n)`` calls, and never
more than ``2n - 1`` (`funcpipe.policy.batching.split_bound`); each split
emits a ``split`` event.

Memory: the reader stops pulling its input (backpressure) while ``window``
items are held, read but not yet consumed downstream, where ``window`` is
``buffer + 2 * workers * size``. ``buffer``, the items waiting for a worker,
defaults to ``size * max(2, workers)``, and to at least 64 with fairness,
where one key may hold at most half of it.

The package, one job per module:

- ``_api``: `apply_stream_policy` and `apply_batch_policy`, which read the
  policy once and choose the engine's parts;
- ``_calls``: the call for one item, and the batch call with its poison split out;
- ``_engine``: the reader, the worker pool, the timer and the consumer, with
  a plain stream's queue handled inline (the path most stages run);
- ``_waiting``: how items wait for a worker with batching or fairness, over
  `funcpipe.policy.batching.WaitingItems`;
- ``_emit``: results in input order, per lane, or as they complete.
"""

from __future__ import annotations

from funcpipe.policy.fairness import field_key, resolve_field
from funcpipe.policy.stream._api import apply_batch_policy, apply_stream_policy

__all__ = ["apply_batch_policy", "apply_stream_policy", "field_key", "resolve_field"]
