"""``python -m fastapi_zitadel``: the command-line tool (see ``_cli``)."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
