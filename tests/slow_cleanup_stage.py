"""A user-written stage that takes its time to clean up once its call has ended (as one saving a
transcript would), loaded by ``--pipeline slow_cleanup_stage:create`` in the CLI tests.

It writes ``$CLEANUP_MARKER`` when its cleanup is done, ``$CLEANUP_SECONDS`` after the call
ended, so a test can tell whether an action's result waited for it.
"""

from __future__ import annotations

import os

import trio

from engine.media.stage import CallContext, Stage


class SlowCleanup(Stage):
    """Listens until the call ends, then cleans up for a while (shielded: it is not cut short)."""

    async def run(self, call: CallContext) -> None:
        try:
            async for _frame in call:
                pass
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(float(os.environ.get("CLEANUP_SECONDS", "3")))
                await trio.Path(os.environ["CLEANUP_MARKER"]).write_text("done")


def create() -> Stage:
    return SlowCleanup()
