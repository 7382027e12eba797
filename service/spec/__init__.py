"""Study spec: the pydantic models of a study YAML, and validation that names every problem.

A spec is rejected whole (ARCHITECTURE.md, "Study spec"): `validate_spec` gathers pydantic's
type errors and the semantic checks in one pass, so a user fixes everything in one round
trip. Each problem names its dotted path (`nuisance.lr.low`, `scientific.optimizer[1]`), the
value given and what is allowed. Validation reads only the spec (and imports the objective it
names, or asks the caller's check); it never writes.

    model.py     the models: standard names, value types, sections, StudySpec
    problems.py  SpecProblem/SpecError, pydantic's errors translated, the semantic checks
    load.py      read_yaml, validate_spec, parse_spec, load_spec
"""

from service.spec.load import ObjectiveCheck, load_spec, parse_spec, read_yaml, validate_spec
from service.spec.model import (
    NAME,
    NAME_PATTERN,
    Budget,
    Notify,
    Range,
    Resources,
    Scalar,
    Search,
    StudySpec,
)
from service.spec.problems import SpecError, SpecProblem

__all__ = [
    "NAME", "NAME_PATTERN", "Budget", "Notify", "ObjectiveCheck", "Range", "Resources", "Scalar",
    "Search", "SpecError", "SpecProblem", "StudySpec", "load_spec", "parse_spec", "read_yaml",
    "validate_spec",
]
