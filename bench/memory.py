"""Section 4: memory per cached principal, at 100,000 distinct cached tokens.

The cache is filled through the public path (``verify``), against an in-process fake IdP
(``httpx.MockTransport``) that answers each token with a realistic ZITADEL introspection body
(profile, e-mail, organization, roles of two organizations' grants in both role claims) and a
distinct user per token. Measured three ways:

* RSS: /proc/self/statm before and after the fill (what the process really holds, allocator
  slack included), divided by the entries added;
* tracemalloc (``bench.memory_traced``, in a fresh process): the bytes still allocated after
  filling a second, smaller cache, grouped by the line that allocated them, and a census of
  the objects that grow with the entries;
* an object walk of one cached entry, split into its parts, to say what dominates.

The bounds are checked through the public path too: past ``cache_max_size`` the oldest entries
are evicted (re-verifying one introspects again), and the inactive answers stay within
``negative_cache_max_size``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qs

import httpx
from pydantic import BaseModel

from bench.common import ROOT, SectionResult, child_env, log, rss_bytes, section_main
from fastapi_zitadel import InvalidTokenError, Principal, ZitadelIntrospection
from fastapi_zitadel.testing import StandInProject, ZitadelStandIn

ENTRIES = 100_000
OVERFILL = 10_000
NEGATIVE_MAX = 2_000
INACTIVE = 3 * NEGATIVE_MAX
KIB = 1024
ORGS = 50  # the users are spread over this many organizations


class FakeIdP:
    """Answers discovery and introspection from memory, like ZITADEL would for a project."""

    def __init__(self, issuer: str, project_id: str, client_id: str) -> None:
        self.issuer = issuer
        self.project_id = project_id
        self.client_id = client_id
        self.calls = 0
        self.now = int(time.time())

    def body(self, index: int) -> dict[str, Any]:
        user = f"{312_000_000_000_000_000 + index}"
        org = f"{311_000_000_000_000_000 + index % ORGS}"
        roles = {
            "reader": {org: f"org{index % ORGS}.example.com"},
            "editor": {org: f"org{index % ORGS}.example.com", "311000000000000999": "acme.com"},
        }
        return {
            "active": True,
            "scope": "openid profile email urn:zitadel:iam:user:resourceowner items:read",
            "client_id": self.client_id,
            "token_type": "Bearer",
            "exp": self.now + 43_200,
            "iat": self.now,
            "nbf": self.now,
            "sub": user,
            "aud": [self.client_id, self.project_id],
            "iss": self.issuer,
            "jti": f"{313_000_000_000_000_000 + index}",
            "name": f"User Number{index}",
            "given_name": "User",
            "family_name": f"Number{index}",
            "locale": "en",
            "updated_at": self.now - 86_400,
            "preferred_username": f"user{index}@org{index % ORGS}.example.com",
            "username": f"user{index}@org{index % ORGS}.example.com",
            "email": f"user{index}@example.com",
            "email_verified": True,
            "urn:zitadel:iam:user:resourceowner:id": org,
            "urn:zitadel:iam:user:resourceowner:name": f"Org {index % ORGS}",
            "urn:zitadel:iam:user:resourceowner:primary_domain": f"org{index % ORGS}.example.com",
            "urn:zitadel:iam:org:project:roles": roles,
            f"urn:zitadel:iam:org:project:{self.project_id}:roles": roles,
        }

    def answer(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            endpoint = self.issuer + "/oauth/v2/introspect"
            return httpx.Response(
                200, json={"issuer": self.issuer, "introspection_endpoint": endpoint}
            )
        self.calls += 1
        token = parse_qs(request.content.decode())["token"][0]
        kind, index = token.split(".")[:2]
        if kind == "inactive":
            return httpx.Response(200, json={"active": False})
        return httpx.Response(200, json=self.body(int(index)))


def tokens(kind: str, indexes: Iterable[int]) -> list[str]:
    # ZITADEL's opaque tokens are about 80 characters; only their digest is ever kept.
    return [f"{kind}.{index}.{'x' * 64}" for index in indexes]


class World:
    def __init__(self) -> None:
        standin = ZitadelStandIn()  # for its project, API application and key file only
        self.project = StandInProject(standin)
        self.idp = FakeIdP(standin.issuer, self.project.project.id, self.project.app.client_id)

    def zitadel(self, max_size: int) -> ZitadelIntrospection:
        return self.project.introspection(
            http_client=httpx.AsyncClient(transport=httpx.MockTransport(self.idp.answer)),
            cache_ttl=3600,
            cache_max_size=max_size,
            negative_cache_max_size=NEGATIVE_MAX,
        )


async def fill(zitadel: ZitadelIntrospection, batch: list[str]) -> None:
    for token in batch:
        await zitadel.verify(token)


async def misses(zitadel: ZitadelIntrospection, idp: FakeIdP, batch: list[str]) -> int:
    """How many of ``batch`` needed an introspection (were not cached)."""
    before = idp.calls
    for token in batch:
        with contextlib.suppress(InvalidTokenError):
            await zitadel.verify(token)
    return idp.calls - before


def settled_rss() -> int:
    gc.collect()
    return rss_bytes()


# What one entry is made of -------------------------------------------------------------


def _children(obj: object) -> Iterator[object]:
    if isinstance(obj, BaseModel):
        yield obj.__dict__
        yield obj.__pydantic_fields_set__
        if obj.__pydantic_extra__ is not None:
            yield obj.__pydantic_extra__
    elif isinstance(obj, MappingProxyType):
        # The proxy's own dict is reachable only through it: walk its items and count the
        # dict by its size (a proxy's referent is not otherwise reachable from Python).
        yield from obj.keys()
        yield from obj.values()
    elif isinstance(obj, dict):
        yield from obj.keys()
        yield from obj.values()
    elif isinstance(obj, (tuple, list, frozenset, set)):
        yield from obj
    elif hasattr(obj, "__dict__"):
        yield vars(obj)


def _own_size(obj: object) -> int:
    size = sys.getsizeof(obj)
    if isinstance(obj, MappingProxyType):
        size += sys.getsizeof(dict(obj))  # the hidden dict behind the proxy
    return size


def _category(obj: object, path: tuple[str, ...]) -> str:
    if isinstance(obj, str):
        return "strings (claim names and values)"
    if isinstance(obj, datetime):
        return "datetime objects (exp, iat, nbf)"
    if "claims" in path:
        return "`claims`: frozen copy (MappingProxyType and dict per object, tuples)"
    if "roles" in path or "metadata" in path:
        return "`roles` / `metadata`: frozen mappings"
    if isinstance(obj, BaseModel) or (path and path[-1] in {"__dict__", "__fields_set__"}):
        return "pydantic models (Principal, Organization): instance, __dict__, fields set"
    return "other fields (scopes frozenset, audience tuple, ints, bools)"


def reachable(root: object) -> set[int]:
    """The ids of every object ``root`` holds, itself included."""
    found: set[int] = set()
    stack: list[object] = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in found or obj is None:
            continue
        found.add(id(obj))
        stack.extend(_children(obj))
    return found


def breakdown(principal: Principal, other: Principal) -> dict[str, int]:
    """Bytes reachable from ``principal`` and not from ``other``, by category."""
    shared = reachable(other)
    sizes: dict[str, int] = {}
    seen: set[int] = set()
    walk: list[tuple[object, tuple[str, ...]]] = [(principal, ())]
    while walk:
        obj, path = walk.pop()
        if obj is None or id(obj) in seen or id(obj) in shared or isinstance(obj, (bool, type)):
            continue
        seen.add(id(obj))
        name = _category(obj, path)
        sizes[name] = sizes.get(name, 0) + _own_size(obj)
        if isinstance(obj, BaseModel):
            walk.append((obj.__pydantic_fields_set__, (*path, "__fields_set__")))
            walk.extend((value, (*path, key)) for key, value in obj.__dict__.items())
            sizes[name] += sys.getsizeof(obj.__dict__)
        else:
            walk.extend((child, path) for child in _children(obj))
    return sizes


def own_claim_name_bytes(principal: Principal, other: Principal) -> int:
    """Bytes of the claim *names* in ``principal.claims`` that ``other`` does not share."""
    shared = reachable(other)
    total = 0
    stack: list[object] = [principal.claims]
    while stack:
        obj = stack.pop()
        if isinstance(obj, MappingProxyType):
            total += sum(sys.getsizeof(key) for key in obj if id(key) not in shared)
            stack.extend(obj.values())
    return total


# The section ---------------------------------------------------------------------------


def run(args: argparse.Namespace) -> SectionResult:
    result = SectionResult(f"4. Memory: {ENTRIES:,} cached principals")
    entries = 10_000 if args.quick else ENTRIES
    overfill = entries // 10
    world = World()
    loop = asyncio.new_event_loop()
    try:
        _rss(result, loop, world, entries, overfill)
        _traced(result, quick=args.quick)
        _negative(result, loop, world)
    finally:
        loop.close()
    return result


def _rss(
    result: SectionResult,
    loop: asyncio.AbstractEventLoop,
    world: World,
    entries: int,
    overfill: int,
) -> None:
    zitadel = world.zitadel(entries)
    active = tokens("active", range(entries + overfill))
    warm = 500
    loop.run_until_complete(fill(zitadel, active[:warm]))
    start = time.perf_counter()
    before = settled_rss()
    loop.run_until_complete(fill(zitadel, active[warm:entries]))
    full = settled_rss()
    log(f"memory: filled {entries:,} entries in {time.perf_counter() - start:.1f} s")
    per_entry = (full - before) / (entries - warm)
    result.add(
        f"RSS per cached principal ({entries:,} entries)",
        f"{per_entry / KIB:.2f} KiB",
        f"RSS {before / 2**20:.0f} MiB before, {full / 2**20:.0f} MiB after",
        "<= 3 KiB",
        per_entry <= 3 * KIB,
    )
    loop.run_until_complete(fill(zitadel, active[entries:]))
    over = settled_rss()
    newest_missing = loop.run_until_complete(misses(zitadel, world.idp, active[overfill:]))
    oldest_missing = loop.run_until_complete(misses(zitadel, world.idp, active[:1]))
    bounded = newest_missing == 0 and oldest_missing == 1
    result.add(
        f"active cache bound: {entries + overfill:,} tokens verified, cache_max_size={entries:,}",
        f"{entries - newest_missing:,} newest kept, oldest evicted",
        f"RSS {over / 2**20:.0f} MiB after the extra {overfill:,} "
        f"({(over - full) / 2**20:+.1f} MiB); re-verifying the newest {entries:,} "
        f"introspected {newest_missing}, the oldest {oldest_missing}",
        "stays within cache_max_size",
        bounded,
    )
    # Two users of the same organization: what one entry holds that the other does not share.
    sample = loop.run_until_complete(zitadel.verify(active[-1]))
    other = loop.run_until_complete(zitadel.verify(active[-1 - ORGS]))
    sizes = breakdown(sample, other)
    total = sum(sizes.values())
    result.add(
        "object walk of one cached Principal (bytes not shared with another entry)",
        f"{total / KIB:.2f} KiB",
        f"RSS per entry minus the walk: {(per_entry - total) / KIB:+.2f} KiB (the cache's "
        "own slots, key digest and CacheEntry, and allocator slack; negative when the fill "
        "reused memory the process had already freed)",
    )
    for name, size in sorted(sizes.items(), key=lambda item: -item[1]):
        result.add(f"  part: {name}", f"{size:,} B", f"{size / total:.0%} of the object walk")
    result.notes.append(
        "RSS at the full count is the figure that counts. tracemalloc charges every live "
        "block to the line that allocated it: an object reused from one of CPython's free "
        "lists (floats, tuples) stays charged to its first line, and a table that doubled "
        "during the fill (the interned-strings table, say) is charged whole, so at a smaller "
        "count it can read higher. The object census says what grows with the entries."
    )
    names = own_claim_name_bytes(sample, other)
    if names:
        result.notes.append(
            f"Each entry's `claims` holds its own copy of claim names ({names:,} B per entry "
            "here: `json.loads` makes new key strings per answer, and ZITADEL's claim names "
            "are long URNs); interning them (`sys.intern`) while freezing would share one "
            "copy across all entries."
        )
    else:
        result.notes.append("Claim names are shared between entries (interned).")
    claims_part = next((size for name, size in sizes.items() if "`claims`" in name), 0)
    if claims_part:
        result.notes.append(
            f"`claims` is a second, frozen copy of the answer ({claims_part:,} B per entry of "
            "dicts and MappingProxyType objects, one each per JSON object): the typed fields "
            "point at the same value objects, but not at these containers."
        )
    loop.run_until_complete(zitadel.aclose())
    del zitadel, active, sample, other
    gc.collect()


def _traced(result: SectionResult, *, quick: bool) -> None:
    """tracemalloc in a fresh process: tables grown by the 100,000-entry fill here (CPython's
    interned strings, say) would otherwise be resized inside its window and charged to it."""
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as scratch:
        out = Path(scratch) / "traced.json"
        command = [sys.executable, "-m", "bench.memory_traced", "--json", str(out)]
        subprocess.run(  # noqa: S603 - our own interpreter and module
            command + (["--quick"] if quick else []), cwd=ROOT, env=child_env(), check=True
        )
        traced = SectionResult.read(out)
    result.rows.extend(traced.rows)
    result.notes.extend(traced.notes)


def _negative(result: SectionResult, loop: asyncio.AbstractEventLoop, world: World) -> None:
    zitadel = world.zitadel(1000)
    inactive = tokens("inactive", range(INACTIVE))
    first = loop.run_until_complete(misses(zitadel, world.idp, inactive))
    newest = loop.run_until_complete(misses(zitadel, world.idp, inactive[-NEGATIVE_MAX:]))
    oldest = loop.run_until_complete(misses(zitadel, world.idp, inactive[:1]))
    bounded = first == INACTIVE and newest == 0 and oldest == 1
    result.add(
        f"negative cache bound: {INACTIVE:,} inactive tokens, "
        f"negative_cache_max_size={NEGATIVE_MAX:,}",
        f"{NEGATIVE_MAX - newest:,} newest kept, oldest evicted",
        f"re-verifying the newest {NEGATIVE_MAX:,} introspected {newest}, the oldest {oldest}",
        "stays within negative_cache_max_size",
        bounded,
    )
    loop.run_until_complete(zitadel.aclose())


def main() -> None:
    section_main(run)


if __name__ == "__main__":
    main()
