"""Section 6: local JWT verification and hybrid mode, side by side in one run.

(p) vs (q): a cold local verification (a cache miss: header, key, signature, claims, the
    ``Principal``, the cache entry) by ``zitadel.verify`` against a bare ``jwt.decode`` of the
    same kind of token with a preloaded key and the same claim checks. The signature check is
    the floor of both.
(r) vs (s): a warm hit through FastAPI on a JWT (``validation="local"``) against a hit on an
    opaque token (``validation="introspection"``): the same cache, a longer token.
(t) vs (u): the first request of a token in hybrid mode against local mode, with the IdP
    answering each introspection after 50 ms (in memory: an IdP process on this 2-core machine
    would share our cores, and slow whatever runs next to it). Only the request is timed: each
    is followed by one pass of the event loop, in which the background introspection goes on,
    and every batch ends once they have all finished.
(v), (w) vs (g): fastapi-zitadel on a JWT, cold (every request a new token) and warm, against
    fastapi-zitadel-auth 0.5.0 on the same JWT, through FastAPI (section 1's harness); (a),
    the same route without authentication, gives what each library adds to FastAPI's cost.

Cold alternatives cycle through pools of distinct tokens with ``cache_max_size=1``, so that
every request misses and stores its entry, as a token's first request does.

No ``from __future__ import annotations``: FastAPI reads the annotations of the routes
declared here at runtime (through section 1's ``one_route_app``).
"""

import argparse
import asyncio
import itertools
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any
from unittest import mock
from urllib.parse import parse_qs

import httpx
import jwt
from fastapi import Depends, Security
from fastapi_zitadel_auth import ZitadelAuth
from fastapi_zitadel_auth import openid_config as peer_openid_config

from bench.common import (
    AsyncBatch,
    SectionResult,
    extra_cost_ratio,
    interleave_async,
    log,
    median,
    per_round,
    quotient,
    ratio,
    ratio_range,
    section_main,
    spread,
    us,
)
from bench.hot_path import SCOPE, AsgiDriver, SigningKey, _MockedHttpx, one_route_app
from fastapi_zitadel import ZitadelIntrospection
from fastapi_zitadel.testing import StandInProject, ZitadelStandIn

LABELS = {
    "a": "(a) no auth (section 1's floor: FastAPI alone)",
    "p": "(p) cold: `zitadel.verify(jwt)`, validation=local, a cache miss",
    "q": "(q) bare `jwt.decode` of the same JWT, key preloaded, same claim checks",
    "r": "(r) warm: Depends(zitadel), validation=local, a JWT cached",
    "s": "(s) warm: Depends(zitadel), validation=introspection, an opaque token cached",
    "t": "(t) first request of a JWT, validation=hybrid, IdP answering in 50 ms",
    "u": "(u) first request of a JWT, validation=local",
    "v": "(v) cold through FastAPI: require_scope on a new JWT each request, validation=local",
    "w": "(w) warm through FastAPI: require_scope on a cached JWT, validation=local",
    "g": "(g) fastapi-zitadel-auth 0.5.0, Security(auth, scopes=[...]), the same JWTs",
}
IDP_LATENCY = 0.05
HYBRID_TOKENS = 1500  # reused only long after their background introspection ended


class RotatingDriver(AsgiDriver):
    """``AsgiDriver`` with another token (from ``tokens``, in turn) on each request."""

    def __init__(self, app: Any, tokens: list[str]) -> None:
        super().__init__(app, tokens[0])
        base = self.scope
        self._scopes = itertools.cycle(
            [
                {
                    **base,
                    "headers": [
                        *(h for h in base["headers"] if h[0] != b"authorization"),
                        (b"authorization", f"Bearer {token}".encode("ascii")),
                    ],
                }
                for token in tokens
            ]
        )

    async def batch(self, n: int) -> float:
        app, scopes, receive, send = self.app, self._scopes, self._receive, self._discard
        start = time.perf_counter()
        for _ in range(n):
            await app(dict(next(scopes)), receive, send)
        return (time.perf_counter() - start) / n


def _cold(zitadel: ZitadelIntrospection, tokens: list[str]) -> AsyncBatch:
    pool = itertools.cycle(tokens)

    async def batch(n: int) -> float:
        verify = zitadel.verify
        start = time.perf_counter()
        for _ in range(n):
            await verify(next(pool))
        return (time.perf_counter() - start) / n

    return batch


def _bare(key: SigningKey, tokens: list[str]) -> AsyncBatch:
    pool = itertools.cycle(tokens)
    public, audience, issuer = key.public_key, key.audience[-1], key.issuer

    async def batch(n: int) -> float:
        decode = jwt.decode
        start = time.perf_counter()
        for _ in range(n):
            decode(
                next(pool),
                public,
                algorithms=["RS256"],
                audience=audience,
                issuer=issuer,
                leeway=5,
                options={"require": ["exp"]},
            )
        return (time.perf_counter() - start) / n

    return batch


async def _settled(zitadel: ZitadelIntrospection) -> None:
    while True:  # the background introspections: nothing to wait on but the count
        if not zitadel.metrics().in_flight:
            return
        await asyncio.sleep(0.001)


def _first_requests(zitadel: ZitadelIntrospection, tokens: Iterator[str]) -> AsyncBatch:
    """The request time alone of ``n`` first requests; background work runs between them."""

    async def batch(n: int) -> float:
        verify, clock, spent = zitadel.verify, time.perf_counter, 0.0
        for _ in range(n):
            token = next(tokens)
            start = clock()
            await verify(token)
            spent += clock() - start
            await asyncio.sleep(0)  # one pass of the loop: the background introspection's turn
        await _settled(zitadel)
        return spent / n

    return batch


def _mock_issuer(key: SigningKey, latency: float = 0.0) -> httpx.AsyncClient:
    """Discovery, JWKS and introspection of ``key``'s issuer from memory, for our own
    instance; introspection answers active (the token's own claims) after ``latency``."""
    base = key.issuer

    async def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(
                200,
                json={
                    "issuer": base,
                    "jwks_uri": base + "/oauth/v2/keys",
                    "introspection_endpoint": base + "/oauth/v2/introspect",
                },
            )
        if request.url.path == "/oauth/v2/keys":
            return httpx.Response(200, json=key.jwks)
        if request.url.path == "/oauth/v2/introspect":
            await asyncio.sleep(latency)
            token = parse_qs(request.content.decode())["token"][0]
            claims = jwt.decode(token, options={"verify_signature": False})
            return httpx.Response(200, json={**claims, "active": True, "token_type": "Bearer"})
        return httpx.Response(404)

    return httpx.AsyncClient(transport=httpx.MockTransport(answer))


def run(args: argparse.Namespace) -> SectionResult:
    result = SectionResult("7. Local JWT verification and hybrid mode")
    loop = asyncio.new_event_loop()
    rounds = 5 if args.quick else 21
    target = 0.03 if args.quick else 0.1
    with ExitStack() as stack:
        stack.callback(loop.close)
        standin = ZitadelStandIn()
        project = StandInProject(standin)
        opaque = project.token("alice", roles=["reader", "editor"])
        key = SigningKey(
            standin.issuer, [project.app.client_id, project.project.id], project.app.client_id
        )
        log("signing tokens (RS256 signatures take a while)")
        first_tokens = [
            key.access_token(project.org.id, project.project.id)
            for _ in range(300 if args.quick else HYBRID_TOKENS)
        ]
        cold_tokens = first_tokens[:64]
        warm_token = cold_tokens[0]
        stack.enter_context(mock.patch.object(peer_openid_config, "httpx", _MockedHttpx(key)))
        peer = ZitadelAuth(
            issuer_url=standin.issuer,
            project_id=project.project.id,
            app_client_id=project.app.client_id,
            allowed_scopes={SCOPE: "Read items"},
        )

        def local(**options: Any) -> ZitadelIntrospection:
            return ZitadelIntrospection(
                standin.issuer,
                validation="local",
                audience=project.project.id,
                project_id=project.project.id,
                http_client=_mock_issuer(key),
                cache_ttl=3600,
                **options,
            )

        cold, warm = local(cache_max_size=1), local()
        introspecting = project.introspection(
            http_client=httpx.AsyncClient(transport=standin.transport()), cache_ttl=3600
        )
        hybrid = ZitadelIntrospection(
            standin.issuer,
            validation="hybrid",
            key_file=project.key_path,
            audience=project.project.id,
            project_id=project.project.id,
            http_client=_mock_issuer(key, IDP_LATENCY),
            cache_max_size=1,
        )
        local_first = local(cache_max_size=1)
        drivers = {
            "a": AsgiDriver(one_route_app(None), warm_token),
            "r": AsgiDriver(one_route_app(Depends(warm)), warm_token),
            "s": AsgiDriver(one_route_app(Depends(introspecting)), opaque),
            "v": RotatingDriver(
                one_route_app(Depends(local(cache_max_size=1).require_scope(SCOPE))), cold_tokens
            ),
            "w": AsgiDriver(one_route_app(Depends(warm.require_scope(SCOPE))), warm_token),
            "g": RotatingDriver(one_route_app(Security(peer, scopes=[SCOPE])), cold_tokens),
        }
        for name, driver in drivers.items():
            status, body = loop.run_until_complete(driver.check())
            if status != 200:
                raise RuntimeError(f"{LABELS[name]} answered {status}: {body!r}")
        for zitadel in (cold, hybrid, local_first):  # keys (and discovery) fetched once
            loop.run_until_complete(zitadel.verify(first_tokens[-1]))
        loop.run_until_complete(_settled(hybrid))
        batches: dict[str, AsyncBatch] = {
            "p": _cold(cold, cold_tokens),
            "q": _bare(key, cold_tokens),
            "t": _first_requests(hybrid, itertools.cycle(first_tokens)),
            "u": _first_requests(local_first, itertools.cycle(first_tokens)),
        }
        batches.update({name: driver.batch for name, driver in drivers.items()})
        log(f"local JWT: {len(batches)} alternatives x {rounds} rounds")
        samples = loop.run_until_complete(
            interleave_async(batches, rounds=rounds, target_seconds=target)
        )
        background = hybrid.metrics().background_introspections
        calls = hybrid.introspection_calls
        for zitadel in (cold, warm, introspecting, hybrid, local_first):
            loop.run_until_complete(zitadel.aclose())
    _report(result, samples, background=background, calls=calls)
    return result


def _goal(
    result: SectionResult,
    samples: dict[str, list[float]],
    label: str,
    ours: str,
    other: str,
    limit: float,
) -> None:
    rounds = per_round(samples, quotient(ours, other))
    figure = median(rounds)
    t = {name: median(values) for name, values in samples.items()}
    result.add(
        label,
        ratio(figure),
        f"{us(t[ours])} vs {us(t[other])}; {ratio_range(rounds)}",
        f"<= {limit}x",
        figure <= limit,
    )


def _report(
    result: SectionResult, samples: dict[str, list[float]], *, background: int, calls: int
) -> None:
    for name, label in LABELS.items():
        result.add(label, us(median(samples[name])), spread(samples[name], us))
    _goal(result, samples, "cold local verification: (p) / (q)", "p", "q", 1.15)
    _goal(result, samples, "warm hit, JWT vs opaque: (r) / (s)", "r", "s", 1.10)
    _goal(result, samples, "first request, hybrid vs local: (t) / (u)", "t", "u", 1.10)
    _goal(result, samples, "cold vs fastapi-zitadel-auth: (v) / (g)", "v", "g", 0.6)
    _goal(result, samples, "warm vs fastapi-zitadel-auth: (w) / (g)", "w", "g", 0.3)
    for ours in ("v", "w"):
        rounds = per_round(samples, extra_cost_ratio(ours, "g", "a"))
        result.add(
            f"extra cost over (a): ({ours}) / (g)",
            ratio(median(rounds)),
            f"what each adds to FastAPI's own cost; {ratio_range(rounds)}",
        )
    result.notes.append(
        "(p), (q), (v), (g) cycle through 64 RS256 JWTs signed here (the claims of section 1's "
        "(f)); (p) and (v) keep one cache entry, so every request misses and stores one. (t) "
        f"and (u) cycle through {HYBRID_TOKENS} such JWTs (each reused long after its "
        f"introspection ended); in (t), {background} background introspections ran during the "
        f"section ({calls} requests answered, each after {IDP_LATENCY * 1000:.0f} ms), none on "
        "the request path. fastapi-zitadel-auth has no result cache: every request verifies "
        "the JWT, so (g) is its cold and its warm cost at once."
    )
    result.notes.append(
        "What limits (t) / (u): the request path of (t) adds a dict insert (the background "
        "introspection's task is made in the next pass of the event loop, after the request); "
        "the rest is that introspection's own work (building the request, reading the answer, "
        "the Principal) running on the same core between the timed requests. What limits (v) "
        "and (w) against (g): FastAPI's own cost for the route and its security dependency, (a) "
        "and more, is in both figures; the extra-cost rows compare what each library adds."
    )


def main() -> None:
    section_main(run)


if __name__ == "__main__":
    main()
