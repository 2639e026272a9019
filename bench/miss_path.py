"""Section 2: the miss path. One introspection over real HTTP on loopback.

The stand-in runs in a separate process (``bench.standin_process``), so the client measured
has this process's event loop and GIL to itself. Calls are sequential: the figure is the cost
of one introspection, client and server together, for each way of making it.

(ii) follows ZITADEL's own example API (zitadel/examples-api-access-and-token-introspection,
``api-jwt/validator.py``): per call, sign a client assertion with the key file's PEM and POST
it with a new HTTP client (there ``requests.post``, here a new ``httpx.AsyncClient``).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
from cryptography.hazmat.primitives import serialization

from bench.common import (
    AsyncBatch,
    Profile,
    SectionResult,
    StandInProcess,
    interleave_async,
    log,
    median,
    ms,
    per_round,
    profile_top,
    quotient,
    ratio,
    ratio_range,
    section_main,
    spread,
)
from fastapi_zitadel import ZitadelIntrospection

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
LABELS = {
    "i": "(i) fastapi-zitadel: pooled connection, cached assertion",
    "ii": "(ii) ZITADEL's example: new client and freshly signed assertion per call",
    "iii": "(iii) pooled client, assertion signed per call (key loaded once)",
    "iv": "(iv) the limit: bare pooled POST of a pre-signed form, JSON parsed",
}


class Alternatives:
    """The four ways to introspect one token, each as a batch of sequential calls."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info
        self.token: str = info["tokens"][0]
        self.endpoint: str = info["introspection_endpoint"]
        self.zitadel = ZitadelIntrospection(
            info["issuer"],
            key_file=info["key_path"],
            project_id=info["project_id"],
            audience=info["project_id"],
            cache_ttl=0,
            negative_cache_ttl=0,
        )
        self.pooled = httpx.AsyncClient()
        self.loaded_key = serialization.load_pem_private_key(
            info["private_key_pem"].encode(), password=None
        )
        self.form_body = urlencode(
            {
                "token": self.token,
                "token_type_hint": "access_token",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": self.sign(),
            }
        ).encode()

    def sign(self, key: Any = None) -> str:
        """A client assertion as ZITADEL's example signs it (from the PEM, unless ``key``)."""
        now = int(time.time())
        claims = {
            "iss": self.info["client_id"],
            "sub": self.info["client_id"],
            "aud": self.info["issuer"],
            "exp": now + 3600,
            "iat": now,
        }
        headers = {"alg": "RS256", "kid": self.info["key_id"]}
        signing_key = self.info["private_key_pem"] if key is None else key
        return jwt.encode(claims, signing_key, algorithm="RS256", headers=headers)

    def signed_form(self, key: Any = None) -> dict[str, str]:
        return {
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.sign(key),
            "token": self.token,
        }

    async def ours(self) -> None:
        principal = await self.zitadel.verify(self.token)
        assert principal.subject is not None

    async def guide(self) -> None:
        async with httpx.AsyncClient() as client:
            response = await client.post(self.endpoint, data=self.signed_form())
            response.raise_for_status()
            assert response.json()["active"] is True

    async def pooled_signing(self) -> None:
        response = await self.pooled.post(self.endpoint, data=self.signed_form(self.loaded_key))
        response.raise_for_status()
        assert response.json()["active"] is True

    async def bare(self) -> None:
        response = await self.pooled.post(
            self.endpoint,
            content=self.form_body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert response.json()["active"] is True

    def batches(self) -> dict[str, AsyncBatch]:
        return {
            "i": _batch(self.ours),
            "ii": _batch(self.guide),
            "iii": _batch(self.pooled_signing),
            "iv": _batch(self.bare),
            "pem": _batch(self.sign_from_pem),
            "key": _batch(self.sign_with_loaded_key),
        }

    async def sign_from_pem(self) -> None:
        self.sign()

    async def sign_with_loaded_key(self) -> None:
        self.sign(self.loaded_key)

    async def aclose(self) -> None:
        await self.zitadel.aclose()
        await self.pooled.aclose()


def _batch(call: Callable[[], Any]) -> AsyncBatch:
    async def batch(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            await call()
        return (time.perf_counter() - start) / n

    return batch


def run(args: argparse.Namespace) -> SectionResult:
    result = SectionResult("2. Miss path: one introspection over HTTP on loopback")
    rounds = 3 if args.quick else 21
    loop = asyncio.new_event_loop()
    try:
        with StandInProcess(tokens=4) as standin:
            alternatives = Alternatives(standin.info)
            batches = alternatives.batches()
            for batch in batches.values():  # connect, discover, sign: nothing cold is timed
                loop.run_until_complete(batch(3))
            calls_before = alternatives.zitadel.introspection_calls
            served_before = standin.introspection_calls()
            log(f"miss path: {len(batches)} alternatives x {rounds} rounds")
            samples = loop.run_until_complete(
                interleave_async(
                    batches, rounds=rounds, target_seconds=0.05 if args.quick else 0.15
                )
            )
            ours_calls = alternatives.zitadel.introspection_calls - calls_before
            served = standin.introspection_calls() - served_before
            _report(result, samples, ours_calls, served)
            if any(row.met is False for row in result.rows):
                text = profile_top(lambda: loop.run_until_complete(batches["i"](300)))
                result.profiles.append(Profile(f"{LABELS['i']}: cProfile of 300 calls", text))
            loop.run_until_complete(alternatives.aclose())
    finally:
        loop.close()
    return result


def _report(
    result: SectionResult, samples: dict[str, list[float]], ours_calls: int, served: int
) -> None:
    t = {name: median(values) for name, values in samples.items()}
    for name, label in LABELS.items():
        result.add(
            label,
            f"{1 / t[name]:,.0f} introspections/s",
            spread(samples[name], ms) + " per call",
        )
    result.add(
        "signing one assertion: from the PEM (as (ii)) / with a loaded key (as (iii))",
        ratio(median(per_round(samples, quotient("pem", "key")))),
        f"{spread(samples['pem'], ms)} vs {spread(samples['key'], ms)}",
    )
    rounds = per_round(samples, quotient("ii", "i"))
    speedup = median(rounds)
    result.add(
        "(i) / (ii), introspections per second",
        ratio(speedup),
        ratio_range(rounds),
        ">= 5x",
        speedup >= 5,
    )
    rounds = per_round(samples, quotient("iii", "i"))
    result.add(
        "(i) / (iii), introspections per second",
        ratio(median(rounds)),
        f"what the cached assertion saves; {ratio_range(rounds)}",
    )
    rounds = [value - 1 for value in per_round(samples, quotient("i", "iv"))]
    overhead = median(rounds)
    result.add(
        "(i) overhead over (iv)",
        f"{overhead:+.1%}",
        f"{ms(t['i'] - t['iv'])} per call; {ratio_range(rounds, '+%')}",
        "<= 10 %",
        overhead <= 0.10,
    )
    result.notes.append(
        f"(i) calls `verify` with `cache_ttl=0` and `negative_cache_ttl=0`, so every call "
        f"introspects: it sent {ours_calls:,} introspection requests while timed; the stand-in "
        f"served {served:,} in all. Each call is sequential (one in flight), over HTTP/1.1 "
        "on 127.0.0.1 to the stand-in (uvicorn, in a process of its own); (ii) also opens a "
        "TCP connection per call. The stand-in checks every client assertion's RS256 "
        "signature, as ZITADEL does, so that server cost is in every figure."
    )


def main() -> None:
    section_main(run)


if __name__ == "__main__":
    main()
