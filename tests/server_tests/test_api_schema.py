"""Schemathesis against the service's own /openapi.json: generated requests (valid and not)
to every operation, over real HTTP, with the token. No answer may be a 5xx, and every answer
must match the documented status codes, media types and schemas.

The service runs with no workers, so a spec that happens to validate is only queued, never run.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance
from schemathesis.generation import GenerationMode

from tests.server_tests.conftest import AUTH, Service

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def api_schema(api_only: Service):
    return schemathesis.openapi.from_url(f"{api_only.url}/openapi.json")


# Operations are walked by hand rather than with `schemathesis.pytest.from_fixture`, whose
# lazy loader reads a node attribute that pytest 9 no longer has.
def test_no_5xx_and_answers_match_the_schema(api_schema):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "POST /studies", "GET /studies", "GET /studies/{name}", "POST /studies/{name}/cancel",
        "GET /studies/{name}/report", "GET /studies/{name}/findings", "GET /healthz",
        "POST /studies/{name}/resume", "GET /studies/{name}/report/{file}"}
    for operation in operations:

        @given(case=operation.as_strategy() | operation.as_strategy(GenerationMode.NEGATIVE))
        @settings(max_examples=30, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            # A spec can be schema-valid and still be refused: the objective must import and
            # the values must make sense together (low < high, ...), which no JSON Schema says.
            case.call_and_validate(headers=AUTH, timeout=30,
                                   excluded_checks=[positive_data_acceptance])

        check()
