"""Running the command line in-process, for the tests of its commands."""

from __future__ import annotations

import io

from fastapi_zitadel._cli import main


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()
