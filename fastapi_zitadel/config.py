"""The configuration as objects: ``ZitadelConfig`` (``ZitadelIntrospection(config=...)``),
``ZitadelSettings`` (read from ``ZITADEL_*``), and ZITADEL's key files. The keywords of
``ZitadelIntrospection`` are the same settings; most apps need nothing from here."""

from ._config import KeyFileSource, ZitadelConfig, ZitadelSettings
from ._credentials.key_file import ZitadelKeyFile, load_key_file

__all__ = ["KeyFileSource", "ZitadelConfig", "ZitadelKeyFile", "ZitadelSettings", "load_key_file"]
