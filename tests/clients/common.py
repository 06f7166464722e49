"""What the Python client scenarios share: the step names, the names and values each client
uses, and the `STEP <name> ok|FAIL <reason>|n/a <why>` lines that matrix.sh reads.

Diagnostics (full tracebacks, broker error texts) go to stderr, which matrix.sh keeps in a
log and prints when a step fails.
"""

import sys
import time
import traceback

STEPS = ["create_topic", "produce", "consume_group", "commit", "list_offsets",
         "alter_config", "bad_input"]
PARTITIONS = 3
RECORDS = 100
RETENTION = "3600000"
BAD_RETENTION = "not-a-number"


class StepFailed(Exception):
    """A check that did not hold; its text is the one-line reason."""


class Scenario:
    """The names one client uses and the result of each step."""

    def __init__(self, client):
        self.client = client
        self.topic = f"{client}-t"
        self.group = f"{client}-g"
        self.values = [f"{client}-{i}" for i in range(RECORDS)]
        self.failed = False

    def report(self, step, result, reason=""):
        line = f"STEP {step} {result}"
        if reason:
            line += " " + " ".join(str(reason).split())[:300]
        print(line, flush=True)
        if result == "FAIL":
            self.failed = True

    def _failed(self, step, exc):
        if isinstance(exc, StepFailed):
            reason = str(exc)
        else:
            reason = f"{type(exc).__name__}: {exc}"
        print(f"--- {self.client} {step}:", file=sys.stderr)
        traceback.print_exception(exc, file=sys.stderr)
        self.report(step, "FAIL", reason or type(exc).__name__)

    def run(self, step, fn):
        """Runs one synchronous step; an exception or a `StepFailed` is its FAIL."""
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - every failure is reported, not raised
            self._failed(step, exc)
        else:
            self.report(step, "ok")

    async def arun(self, step, coro_fn, timeout):
        """Runs one asyncio step within `timeout` seconds."""
        import asyncio

        try:
            await asyncio.wait_for(coro_fn(), timeout)
        except asyncio.TimeoutError:
            self.report(step, "FAIL", f"no result within {timeout} s")
        except Exception as exc:  # noqa: BLE001
            self._failed(step, exc)
        else:
            self.report(step, "ok")

    def exit(self):
        sys.exit(1 if self.failed else 0)

    # The checks every client makes.

    def check_values(self, got):
        """`got`: the (key, value) string pairs consumed; must be the records produced."""
        bad_keys = [(k, v) for k, v in got if k != v]
        if bad_keys:
            raise StepFailed(f"key differs from value, e.g. {bad_keys[0]!r}")
        values = [v for _, v in got]
        if len(values) != RECORDS or set(values) != set(self.values):
            missing = sorted(set(self.values) - set(values))
            extra = sorted(set(values) - set(self.values))
            dup = len(values) - len(set(values))
            raise StepFailed(f"consumed {len(values)} records: {len(missing)} missing "
                             f"{missing[:3]}, {len(extra)} unexpected {extra[:3]}, "
                             f"{dup} duplicated")

    @staticmethod
    def check_committed(offsets):
        """`offsets`: {partition: committed offset} of the topic."""
        if sorted(offsets) != list(range(PARTITIONS)) or sum(offsets.values()) != RECORDS:
            raise StepFailed(f"committed offsets {dict(sorted(offsets.items()))}: expected "
                             f"partitions 0..{PARTITIONS - 1} summing to {RECORDS}")

    @staticmethod
    def check_offsets(earliest, latest):
        """`earliest`, `latest`: {partition: offset}."""
        if sorted(earliest) != list(range(PARTITIONS)) or any(earliest.values()):
            raise StepFailed(f"earliest offsets {dict(sorted(earliest.items()))}, expected 0 "
                             f"on each of {PARTITIONS} partitions")
        if sorted(latest) != list(range(PARTITIONS)) or sum(latest.values()) != RECORDS:
            raise StepFailed(f"latest offsets {dict(sorted(latest.items()))}: expected "
                             f"{PARTITIONS} partitions summing to {RECORDS}")


def poll_until(what, fn, deadline_s, interval_s=0.2):
    """Calls `fn` until it returns a true value, for at most `deadline_s` seconds; returns
    that value, or raises StepFailed naming `what` (a string, or a function giving one) and
    the last result or error."""
    end = time.monotonic() + deadline_s
    last = None
    while True:
        try:
            result = fn()
            if result:
                return result
            last = result
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= end:
            what = what() if callable(what) else what
            raise StepFailed(f"{what} not within {deadline_s} s (last: {last})")
        time.sleep(interval_s)


async def apoll_until(what, coro_fn, deadline_s, interval_s=0.2):
    """`poll_until` for a coroutine function."""
    import asyncio

    end = time.monotonic() + deadline_s
    last = None
    while True:
        try:
            result = await coro_fn()
            if result:
                return result
            last = result
        except Exception as exc:  # noqa: BLE001
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= end:
            what = what() if callable(what) else what
            raise StepFailed(f"{what} not within {deadline_s} s (last: {last})")
        await asyncio.sleep(interval_s)
