"""The README's quick-start code runs as written, against the stand-in on a loopback port."""

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from fastapi_zitadel.testing import ZitadelStandIn

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_three_line_protection(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    standin = ZitadelStandIn()
    with standin.serve():
        org = standin.add_org("Acme")
        project = standin.add_project("shop")
        api = standin.add_api_app(project)
        user = standin.add_user(org, "alice")
        key_path = tmp_path / "key.json"
        key_path.write_text(json.dumps(api.key_file))
        monkeypatch.setenv("ZITADEL_ISSUER", standin.issuer)
        monkeypatch.setenv("ZITADEL_KEY_FILE", str(key_path))
        namespace: dict[str, Any] = {}
        exec(python_blocks()[0], namespace)  # noqa: S102 - our own README
        app = namespace["app"]
        assert isinstance(app, FastAPI)

        @app.get("/anything")
        async def anything() -> str:
            return "ok"

        token = standin.issue_token(user, project)
        with TestClient(app) as client:
            assert client.get("/anything").status_code == 401
            ok = client.get("/anything", headers={"Authorization": f"Bearer {token}"})
            assert ok.status_code == 200
            assert (
                "401"
                in client.get("/openapi.json").json()["paths"]["/anything"]["get"]["responses"]
            )


@pytest.mark.subprocess
def test_testing_recipe_is_complete_on_its_own(tmp_path: Path) -> None:
    """The README's two files (``myapp.py`` and ``tests/test_items.py``), written as they are
    into an empty folder and run by pytest as the README says: nothing else is needed."""
    files = {}
    for block in python_blocks():
        first = block.splitlines()[0]
        if first.startswith("# ") and first.split()[1].endswith(".py"):
            files[first.split()[1]] = block
    assert set(files) == {"myapp.py", "tests/test_items.py"}, set(files)
    for name, block in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(block)
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "1 passed" in completed.stdout


def test_per_route_example_leads_with_roles(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The per-route example runs, and authorizes ZITADEL users with roles, not custom scopes
    (ZITADEL issues none, zitadel/zitadel#8967)."""
    block = python_blocks()[1]
    assert "require_role(" in block
    assert "items:read" not in block
    assert "zitadel/zitadel#8967" in README.read_text()
    standin = ZitadelStandIn()
    with standin.serve():
        org = standin.add_org("Acme")
        project = standin.add_project("shop")
        api = standin.add_api_app(project)
        bob = standin.add_user(org, "bob", roles={project: ["reader"]})
        key_path = tmp_path / "key.json"
        key_path.write_text(json.dumps(api.key_file))
        monkeypatch.setenv("ZITADEL_ISSUER", standin.issuer)
        monkeypatch.setenv("ZITADEL_KEY_FILE", str(key_path))
        monkeypatch.setenv("ZITADEL_PROJECT_ID", project.id)
        namespace: dict[str, Any] = {}
        exec(python_blocks()[0], namespace)  # noqa: S102 - our own README
        exec(block, namespace)  # noqa: S102 - our own README
        token = standin.issue_token(bob, project, scopes=["openid", "profile"])
        headers = {"Authorization": f"Bearer {token}"}
        with TestClient(namespace["app"]) as client:
            assert client.get("/items", headers=headers).json() == {"user": "bob"}
            assert client.post("/items", headers=headers).status_code == 403
            assert client.get("/me", headers=headers).status_code == 200


async def test_calling_other_apis_runs_as_written(tmp_path: Path) -> None:
    """The section's block, with the stand-in's issuer, a service user's key file, the
    project's id and a served shop in place of the example values."""
    from example_app.app import create_app
    from fastapi_zitadel.defaults import set_default_zitadel
    from fastapi_zitadel.testing import LoopbackServer, StandInProject

    (block,) = [block for block in python_blocks() if "ServiceAccountAuth(" in block]
    standin = ZitadelStandIn()
    with standin.serve():
        project = StandInProject(standin, key_dir=tmp_path)
        project.service_user("service-user", roles=["reader"])
        with LoopbackServer(create_app(project.introspection())) as shop:
            code = (
                block.replace("https://acme.zitadel.cloud", standin.issuer)
                .replace('"service-user.json"', repr(str(project.service_key_path("service-user"))))
                .replace("298374000000000000", project.project.id)
                .replace("https://shop.acme.example", shop)
            )
            namespace: dict[str, Any] = {}
            exec(code, namespace)  # noqa: S102 - our own README
            assert await namespace["list_items"]() == ["apple", "pear"]
            await namespace["auth"].aclose()
        set_default_zitadel(None)


# Figures in the README's prose come from the last BENCHMARKS.md ------------------------------
BENCHMARKS = README.parent / "BENCHMARKS.md"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _bench(pattern: str) -> float:
    found = re.search(pattern, BENCHMARKS.read_text(encoding="utf-8"))
    assert found is not None, f"BENCHMARKS.md has no figure for {pattern!r}"
    return float(found[1].replace(",", ""))


def prose_figures() -> list[str]:
    """The README's sentences with figures, written out from BENCHMARKS.md as they must read."""
    ours = _bench(r"our own work is ([\d.]+) µs of")
    fastapi = _bench(r"FastAPI's for any security dependency, \(b\) - \(a\), is ([\d.]+) µs")
    floor = _bench(r"\| floor / open, requests per second \| ([\d.]+)%")
    over_floor = _bench(r"\| protected / floor, requests per second \| ([\d.]+)%")
    cold = _bench(r"\| extra cost over \(a\): \(v\) / \(g\) \| ([\d.]+)x")
    warm = _bench(r"\| extra cost over \(a\): \(w\) / \(g\) \| ([\d.]+)x")
    traced = _bench(r"\| tracemalloc per cached principal \([\d,]+ entries\) \| ([\d.]+) KiB")
    rss = _bench(r"\| RSS per cached principal \([\d,]+ entries\) \| ([\d.]+) KiB")
    middleware = _bench(r"\| ZitadelMiddleware / open, requests per second \| ([\d.]+)%")
    return [
        f"on a cache hit our own work is {ours:.1f} µs (reading the header, one SHA-256, a dict "
        f"lookup) against FastAPI's {fastapi:.1f} µs for any security dependency, so the 1.2x "
        f"goal leaves {fastapi * 0.2:.1f} µs.",
        f"already reaches only {floor:.0f} % of the open route; ours gets {over_floor:.0f} % of "
        "that floor.",
        f"an open route: {cold:.2f}x cold, {warm:.2f}x warm)",
        f"Memory is {traced:.2f} KiB per entry by tracemalloc ({rss:.2f} KiB of RSS",
        f"{middleware:.0f} % of the open route's requests per second in the last run",
    ]


@pytest.mark.parametrize("sentence", prose_figures())
def test_prose_figures_come_from_the_last_benchmark_run(sentence: str) -> None:
    """After `python3 bench/run.py` rewrites BENCHMARKS.md, this names the sentence to update."""
    assert sentence in _one_line(README.read_text(encoding="utf-8")), (
        f"README.md should say, from BENCHMARKS.md: {sentence}"
    )


def test_the_performance_table_figures_are_benchmark_figures() -> None:
    """Each figure of the README's table is a figure of BENCHMARKS.md (its goals table, or a
    section's), rounded as the README shows it."""
    readme = README.read_text(encoding="utf-8")
    table = readme.split("| What | Figure | Goal |", 1)[1].split("\n\n", 1)[0]
    figures = [
        row.split("|")[2]
        for row in BENCHMARKS.read_text(encoding="utf-8").splitlines()
        if row.startswith("|") and row.count("|") >= 4
    ]
    unit = r"([+-]?[\d.]+) ?(x|%|KiB)"
    measured = {
        (float(n), u) for figure in figures for n, u in re.findall(unit, figure.replace(",", ""))
    }
    missing = []
    for row in table.splitlines()[1:]:
        figure = row.split("|")[2]
        for shown, kind in re.findall(unit, figure):
            places = len(shown.partition(".")[2])
            if not any(kind == u and round(value, places) == float(shown) for value, u in measured):
                missing.append(f"{shown}{kind} in: {row.strip()}")
    assert not missing, missing
