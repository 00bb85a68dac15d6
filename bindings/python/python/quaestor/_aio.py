"""Resolving the asyncio futures of quaestor's awaitables (called on the event loop's thread)."""

import asyncio
from typing import Any


def _resolve(future: "asyncio.Future[Any]", ok: bool, value: Any) -> None:
    if future.done():  # cancelled meanwhile
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
