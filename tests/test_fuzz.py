"""Property-based tests from the app's own /openapi.json (schemathesis): whatever the
generated request, no 5xx, and every response matches the documented status codes,
content types, headers and schemas. Bounded and seeded (derandomized): a run repeats.

These are the checks the service promises. Schemathesis's "schema-valid request accepted"
check is not among them: an opaque cursor and the exclusive `page`/`cursor` pair can't be
written in OpenAPI 3.0, so a generated cursor is rightly a 422."""
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance, response_headers_conformance, response_schema_conformance,
    status_code_conformance,
)

EXAMPLES_PER_OPERATION = 60
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]


def operations(app):
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("operation_index", range(10))
def test_generated_requests_get_documented_answers(app, admin, operation_index):
    found = operations(app)
    # the six message operations, the live-updates feed, the two health checks, /metrics
    assert len(found) == 10
    operation = found[operation_index]

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, deadline=None,
              suppress_health_check=list(HealthCheck), database=None)
    def check(case):
        if case.query and "wait" in case.query:  # the feed: no page held open for long
            case.query["wait"] = 0
        case.call_and_validate(headers=admin, checks=CHECKS)

    check()
