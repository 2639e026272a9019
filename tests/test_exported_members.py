"""The public surface changes only on purpose (as httpx pins its own)."""

from __future__ import annotations

import inspect
import types
import typing
from pathlib import Path

import pytest
from fastapi import Depends, FastAPI

import fastapi_zitadel
import fastapi_zitadel.cache
import fastapi_zitadel.config
import fastapi_zitadel.defaults
import fastapi_zitadel.testing
import fastapi_zitadel.types
from fastapi_zitadel import ConfigurationError, ZitadelIntrospection
from fastapi_zitadel.config import ZitadelConfig

ISSUER = "https://zitadel.example.test"


ROOT = [
    "Actor",
    "AuthenticationError",
    "ClientCredentialsRejected",
    "ConfigurationError",
    "ExchangedToken",
    "IdentityProviderError",
    "IdentityProviderUnavailable",
    "InsufficientScopeError",
    "InvalidRequestError",
    "InvalidTokenError",
    "IssuerMismatch",
    "KeyFileError",
    "MissingTokenError",
    "Organization",
    "Principal",
    "ServiceAccountAuth",
    "TokenEndpointUnavailable",
    "TokenExchange",
    "TokenExchangeRejected",
    "TokenRequestRejected",
    "WrongKeyTypeError",
    "ZitadelCredentials",
    "ZitadelError",
    "ZitadelIntrospection",
    "ZitadelMiddleware",
    "ZitadelUser",
]
SUBMODULES = {
    fastapi_zitadel.cache: [
        "CacheBinding",
        "CacheEntry",
        "CacheKey",
        "IntrospectionCache",
        "MemoryCache",
        "RedisCache",
        "SharedCacheUnavailable",
        "SuspectToken",
    ],
    fastapi_zitadel.config: [
        "KeyFileSource",
        "ZitadelConfig",
        "ZitadelKeyFile",
        "ZitadelSettings",
        "load_key_file",
    ],
    fastapi_zitadel.defaults: [
        "DefaultZitadel",
        "default_zitadel",
        "get_default_zitadel",
        "require_any_role",
        "require_any_scope",
        "require_role",
        "require_scope",
        "set_default_zitadel",
    ],
    fastapi_zitadel.types: [
        "CircuitState",
        "ClientIdentity",
        "IntrospectedDependency",
        "MetricsSnapshot",
        "OptionalDependency",
        "PrincipalDependency",
        "PrincipalLoader",
        "REVOCATION_EVENTS",
    ],
}


def test_exported_members() -> None:
    assert sorted(fastapi_zitadel.__all__) == ROOT
    for name in fastapi_zitadel.__all__:
        assert hasattr(fastapi_zitadel, name), name
    for module, names in SUBMODULES.items():
        assert sorted(module.__all__) == names, module.__name__
        for name in names:
            assert hasattr(module, name), (module.__name__, name)


def test_a_name_that_left_the_root_says_where_it_went() -> None:
    for module, names in SUBMODULES.items():
        for name in names:
            assert name not in fastapi_zitadel.__all__
            with pytest.raises(AttributeError, match=f"from {module.__name__} import {name}"):
                getattr(fastapi_zitadel, name)


def test_testing_exported_members() -> None:
    assert sorted(fastapi_zitadel.testing.__all__) == [
        "AccessToken",
        "ApiApplication",
        "ConnectionDropped",
        "Delivery",
        "Event",
        "Fault",
        "LoopbackServer",
        "PortInUse",
        "Project",
        "StandInEvents",
        "StandInOrganization",
        "StandInProject",
        "Target",
        "User",
        "WebApplication",
        "ZitadelStandIn",
        "base_url",
        "bind_socket",
        "fixed_principal",
        "override_principal",
    ]
    # Nothing in testing shadows a public name with another meaning.
    public = set(fastapi_zitadel.__all__).union(*SUBMODULES.values())
    assert not set(fastapi_zitadel.testing.__all__) & public


def test_standin_shows_only_its_set_up_api() -> None:
    """The endpoints' shared helpers (client authentication, minting, the event record) stay
    inside the stand-in: a test sets it up with these members and no others."""
    standin = fastapi_zitadel.testing.ZitadelStandIn()
    try:
        members = sorted(name for name in dir(standin) if not name.startswith("_"))
    finally:
        standin.close()
    assert members == [
        "actions",
        "add_api_app",
        "add_grant",
        "add_org",
        "add_project",
        "add_service_user",
        "add_target",
        "add_user",
        "add_web_app",
        "admin_id",
        "admin_token",
        "app",
        "change_grant",
        "clear_faults",
        "clock",
        "close",
        "deactivate_grant",
        "deactivate_user",
        "deliveries",
        "directory",
        "events",
        "grant_roles",
        "id_token",
        "impersonation",
        "inject",
        "instance_id",
        "introspection_calls",
        "issue_token",
        "issuer",
        "jwks_calls",
        "lock_user",
        "personal_access_token",
        "published_key_ids",
        "reactivate_grant",
        "reactivate_user",
        "received_assertions",
        "remove_grant",
        "remove_user",
        "revoke",
        "rotate_signing_key",
        "serve",
        "service_token",
        "session_id",
        "set_execution",
        "sign_jwt",
        "sign_out",
        "signing_key_id",
        "terminate_session",
        "token_calls",
        "token_info",
        "track_jti",
        "transport",
        "unlock_user",
        "wait_for_deliveries",
    ]


def test_every_setting_is_a_typed_keyword() -> None:
    """The constructor's keywords are exactly the settings (plus the components)."""
    parameters = inspect.signature(ZitadelIntrospection.__init__).parameters
    components = {
        "http_client",
        "cache",
        "clock",
        "monotonic",
        "principal_loader",
        "principal_class",
    }
    settings = set(parameters) - {"self", "config", *components}
    assert settings == set(ZitadelConfig.model_fields)
    assert all(p.kind is not inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    hints = typing.get_type_hints(ZitadelIntrospection.__init__)
    assert set(ZitadelConfig.model_fields) <= set(hints)


def _public_members(cls: type) -> list[str]:
    return [name for name in vars(cls) if not name.startswith("_")]


def test_public_members_return_public_types() -> None:
    """Every public member of the main classes returns something public (the root or one of
    its public submodules)."""
    public = {getattr(fastapi_zitadel, name) for name in fastapi_zitadel.__all__}
    public |= {getattr(module, name) for module, names in SUBMODULES.items() for name in names}
    # httpx: ServiceAccountAuth is an httpx.Auth, its flows yield httpx requests.
    allowed_modules = {
        "builtins",
        "typing",
        "collections",
        "datetime",
        "fastapi",
        "starlette",
        "httpx",
    }
    for cls in (
        ZitadelIntrospection,
        fastapi_zitadel.types.OptionalDependency,
        fastapi_zitadel.types.IntrospectedDependency,
        fastapi_zitadel.Principal,
        fastapi_zitadel.ServiceAccountAuth,
        fastapi_zitadel.TokenExchange,
    ):
        for name in _public_members(cls):
            member = getattr(cls, name)
            function = member.fget if isinstance(member, property) else member
            if not callable(function):
                continue
            returned = typing.get_type_hints(function).get("return")
            for part in _parts(returned):
                module = getattr(part, "__module__", "builtins").split(".")[0]
                assert part in public or module in allowed_modules or part is type(None), (
                    f"{cls.__name__}.{name} returns {part!r}, which is not public"
                )


def _parts(hint: object) -> list[object]:
    args = typing.get_args(hint)
    if not args:
        return [hint] if hint is not None else []
    origin = typing.get_origin(hint)
    found: list[object] = [] if origin in (typing.Union, types.UnionType, None) else [origin]
    for arg in args:
        if not isinstance(arg, (list, type(Ellipsis))):
            found += _parts(arg)
    return found


@pytest.mark.parametrize(
    "factory", ["require_scope", "require_any_scope", "require_role", "require_any_role"]
)
def test_requirements_need_something_to_check(app_key_path: Path, factory: str) -> None:
    zitadel = ZitadelIntrospection(ISSUER, key_file=app_key_path)
    with pytest.raises(ConfigurationError, match=f"{factory} needs at least one"):
        getattr(zitadel, factory)()
    with pytest.raises(ConfigurationError, match=f"{factory} needs at least one"):
        getattr(fastapi_zitadel.defaults, factory)()
    with pytest.raises(ConfigurationError, match="non-empty strings"):
        getattr(zitadel, factory)("")


def test_removed_names_are_gone() -> None:
    assert not hasattr(fastapi_zitadel, "require_all_roles")
    assert not hasattr(ZitadelIntrospection, "require_all_roles")
    assert not hasattr(ZitadelIntrospection, "reject")
    assert not hasattr(ZitadelIntrospection, "check_scopes")
    assert not hasattr(ZitadelIntrospection, "document_scopes")
    assert not hasattr(fastapi_zitadel.testing, "Organization")
    for method in ("authenticate", "authenticate_optional", "identify"):
        assert not hasattr(ZitadelIntrospection, method), method


@pytest.mark.parametrize(
    ("old", "new"),
    [("ZitadelIntrospected", "IntrospectedDependency"), ("ZitadelOptional", "OptionalDependency")],
)
def test_a_renamed_type_names_its_new_name(old: str, new: str) -> None:
    with pytest.raises(AttributeError, match=f"{old} was renamed: use fastapi_zitadel.types.{new}"):
        getattr(fastapi_zitadel.types, old)
    with pytest.raises(AttributeError, match="has no attribute 'Misspelt'"):
        getattr(fastapi_zitadel.types, "Misspelt")  # noqa: B009 - mypy must not see it


async def test_install_twice_changes_nothing(app_key_path: Path) -> None:
    zitadel = ZitadelIntrospection(ISSUER, key_file=app_key_path, swagger_client_id="web")
    app = FastAPI()

    @app.get("/items", dependencies=[Depends(zitadel.require_role("reader"))])
    async def items() -> list[str]:
        return []

    zitadel.install(app)
    lifespan, openapi = app.router.lifespan_context, app.openapi
    zitadel.install(app)
    assert app.router.lifespan_context is lifespan
    assert app.openapi is openapi
    closes = 0
    close = zitadel.aclose

    async def counting_close() -> None:
        nonlocal closes
        closes += 1
        await close()

    zitadel.aclose = counting_close  # type: ignore[method-assign]
    async with app.router.lifespan_context(app):
        pass
    assert closes == 1
    assert list(app.openapi()["paths"]["/items"]["get"]["responses"]) == [
        "200",
        "401",
        "403",
        "503",
    ]
