"""Where fastapi-zitadel's log lines go: the ``fastapi_zitadel`` logger."""

import logging


def show_auth_logs(level: int = logging.INFO) -> logging.Handler:
    """Print the library's lines with time, level and logger name.

    WARNING and ERROR lines are the ones the troubleshooting table lists; DEBUG adds one
    line per lookup, naming tokens only by a 4-byte fingerprint of their digest.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("fastapi_zitadel")
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler
