"""The S3-compatible test server: moto's server, with each request handled whole, one at a time.

S3 makes a conditional put (``If-None-Match: *``, what Delta's commits rely on) atomic; moto
checks the condition and then stores the object in two steps, so two concurrent puts can both
pass the check. Serialising requests (connections are still served in parallel) restores the
atomicity the real service gives, which the tests of concurrent runs depend on.

Usage: ``python s3_server.py HOST PORT``
"""

from __future__ import annotations

import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.server import MotoRequestHandler
from werkzeug.serving import run_simple


def main(host: str, port: int) -> None:
    moto = DomainDispatcherApplication(create_backend_app)
    one_at_a_time = threading.Lock()

    def app(environ, start_response):
        with one_at_a_time:
            return list(moto(environ, start_response))

    run_simple(host, port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
