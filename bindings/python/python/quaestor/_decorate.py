"""`@load.request()`: count every call of a function as one request of a service."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def counted(request: Any, func: F) -> F:
    """`func`, each call of which runs inside `with request:` (`async with` for coroutine
    functions, so the request lasts until the coroutine is done)."""
    if not callable(func):
        raise TypeError(f"request() decorates a function, not {type(func).__name__}")
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def counted_coroutine(*args: Any, **kwargs: Any) -> Any:
            async with request:
                return await func(*args, **kwargs)

        return counted_coroutine  # type: ignore[return-value]

    @functools.wraps(func)
    def counted_call(*args: Any, **kwargs: Any) -> Any:
        with request:
            return func(*args, **kwargs)

    return counted_call  # type: ignore[return-value]
