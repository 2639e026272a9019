"""The optional extras, and the one line that says how to install a missing one.

fastapi-zitadel is not on PyPI yet, so a hint naming only the PyPI form would send a user to an
index that does not have it: every hint also says how to install the extra from a clone of the
repository or from a wheel built from one. (``fastapi_zitadel.testing``,
which uses only the public API, words its own hint for the ``testing`` extra the same way;
``tests/test_extras.py`` holds every hint to this form.)
"""

from __future__ import annotations

from types import ModuleType

__all__ = ["install_hint", "redis_asyncio"]


def install_hint(extra: str) -> str:
    """How to install ``extra``: from a clone, from a wheel, and (once published) from PyPI."""
    return (
        f"the {extra!r} extra: pip install '.[{extra}]' in a clone of fastapi-zitadel, or "
        f"pip install 'fastapi_zitadel-<version>-py3-none-any.whl[{extra}]' with a wheel "
        f"built from one (not on PyPI yet; then: pip install 'fastapi-zitadel[{extra}]')"
    )


def redis_asyncio() -> ModuleType:
    """``redis.asyncio``, imported when a Redis tier or feed is made, not with the package:
    the import costs 0.1 to 0.17 s of start-up that an app without Redis should not pay."""
    from fastapi_zitadel._exceptions import ConfigurationError

    try:
        import redis.asyncio
    except ImportError:
        raise ConfigurationError(
            f"redis_url needs the redis client, {install_hint('redis')}"
        ) from None
    return redis.asyncio
