"""ZITADEL tells the API when a user is deactivated, a token revoked, a grant changed.

ZITADEL_EVENTS_SIGNING_KEY is the signing key of the Actions v2 target that calls
https://api.example.com/zitadel/events; with ZITADEL_REDIS_URL every replica honours an event
any of them received (and replicas started later too).
"""

from fastapi import Depends, FastAPI

from fastapi_zitadel import Principal, ZitadelIntrospection

zitadel = ZitadelIntrospection.from_env()  # ZITADEL_EVENTS_SIGNING_KEY=...
app = FastAPI()
zitadel.install(app)  # serves POST /zitadel/events: signed by ZITADEL, no bearer token


@app.get("/me")
async def me(principal: Principal = Depends(zitadel)) -> dict[str, str | None]:  # noqa: B008
    return {"sub": principal.subject}


@app.get("/healthz")
async def healthz() -> dict[str, object]:
    """What to watch: events arriving, refused (why), and how late."""
    metrics = zitadel.metrics()
    lag = metrics.events_lag_sum / metrics.events_lag_count if metrics.events_lag_count else 0.0
    return {
        "events_applied": metrics.events_applied,
        "events_refused": metrics.events_refused,
        "events_unshared": metrics.events_unshared,
        "events_lag_avg_s": round(lag, 3),
    }
