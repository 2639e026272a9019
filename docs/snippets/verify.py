"""Telling the failures apart in your own code (no FastAPI needed)."""

from fastapi_zitadel import (
    ClientCredentialsRejected,
    IdentityProviderError,
    InvalidTokenError,
    ZitadelIntrospection,
)


async def who_is(zitadel: ZitadelIntrospection, token: str) -> str:
    try:
        principal = await zitadel.verify(token)
    except InvalidTokenError as exc:  # the caller's problem: 401
        return f"invalid token: {exc.description}"
    except ClientCredentialsRejected as exc:  # ours: key deleted, wrong instance, clock
        return f"our credentials were rejected ({exc.status} {exc.error_code}), key {exc.key_id}"
    except IdentityProviderError as exc:  # ZITADEL's: unreachable, slow, 5xx, 429...
        return f"try again in {exc.retry_after:.0f} s: {exc.description}"
    return f"subject {principal.subject}"
