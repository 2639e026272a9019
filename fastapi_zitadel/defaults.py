"""The default instance, and ``require_*`` bound to it at request time: for routes declared
before the app is configured (``Depends(require_role("admin"))`` in a router module,
``set_default_zitadel(zitadel)`` when the app is built, or ``ZITADEL_*`` variables)."""

from ._fastapi.defaults import (
    DefaultZitadel,
    default_zitadel,
    get_default_zitadel,
    require_any_role,
    require_any_scope,
    require_role,
    require_scope,
    set_default_zitadel,
)

__all__ = [
    "DefaultZitadel",
    "default_zitadel",
    "get_default_zitadel",
    "require_any_role",
    "require_any_scope",
    "require_role",
    "require_scope",
    "set_default_zitadel",
]
