"""The service with a fresh `Idempotency-Key` on every write, for bench/shared_bench.sh
--with-idempotency-key: the shared benchmark's scripts send no such header, so this adds
one (a random UUID, as a client would send) to each POST, PUT, PATCH and DELETE before the
app sees it. What it measures is the server's cost of the header; its 50 bytes on the
wire are left out."""
import uuid

from wsgi import app as service

WRITES = {"POST", "PUT", "PATCH", "DELETE"}


def app(environ, start_response):
    if environ["REQUEST_METHOD"] in WRITES:
        environ["HTTP_IDEMPOTENCY_KEY"] = str(uuid.uuid4())
    return service(environ, start_response)
