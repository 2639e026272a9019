"""Every replica runs the same code; ZITADEL_REDIS_URL makes them share verdicts."""

from fastapi import Depends, FastAPI

from fastapi_zitadel import ZitadelIntrospection
from fastapi_zitadel.cache import SharedCacheUnavailable

zitadel = ZitadelIntrospection.from_env()  # ZITADEL_REDIS_URL=redis://redis.internal:6379/0
app = FastAPI(dependencies=[Depends(zitadel)])
zitadel.install(app)


async def token_revoked(token: str) -> bool:
    """Call right after your code revoked ``token`` in ZITADEL (a logout, a ban...).

    Drops the shared entry and tells every replica to drop its local copy at once. ``False``
    when Redis could not confirm that within ``timeout``: this process refuses the token
    already, the others may accept it until their ``cache_ttl`` runs out; try again.
    """
    try:
        await zitadel.invalidate(token)
    except SharedCacheUnavailable:
        return False
    return True
