"""One replica of the example shop for the end-to-end revocation tests, configured from
ZITADEL_* alone (validation, Redis and the events signing key included): ``install()`` serves
the event receiver, and the markers reach the other replicas through Redis."""

from example_app.app import create_app
from fastapi_zitadel import ZitadelIntrospection

app = create_app(ZitadelIntrospection.from_env())
