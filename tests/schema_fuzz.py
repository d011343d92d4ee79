"""Run schemathesis' engine (the same phases as ``st run``) against the web app in-process and summarize it.

Used by ``tests/test_serve_schema.py`` (a bounded run in ``make test``) and
``benchmarks/fuzz_serve.py`` (the longer run). Every check is enabled: no 5xx, every status
code and content type documented, every response valid against its schema, schema-valid
requests accepted and schema-violating ones rejected, plus stateful links between operations.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FuzzSummary:
    requests: int = 0
    operations: set = field(default_factory=set)
    statuses: Counter = field(default_factory=Counter)
    server_errors: int = 0
    failures: dict = field(default_factory=dict)  # unique (check, operation, title) -> a one-line example
    errors: list = field(default_factory=list)  # engine errors (a bad schema, an exception in the run)
    seconds: float = 0.0

    def report(self) -> str:
        lines = [f"{self.requests} requests over {len(self.operations)} operations in {self.seconds:.1f} s; "
                 f"status codes {dict(sorted(self.statuses.items()))}; {self.server_errors} server errors; "
                 f"{len(self.failures)} unique failures; {len(self.errors)} engine errors"]
        lines += [f"  FAIL {k}: {v}" for k, v in sorted(self.failures.items())]
        lines += [f"  ERROR {e}" for e in self.errors]
        return "\n".join(lines)


def fuzz_config(max_examples: int, seed: int, phases: tuple[str, ...] = ("examples", "coverage", "fuzzing", "stateful"),
                max_steps: int = 20) -> Any:
    from schemathesis.config import SchemathesisConfig

    return SchemathesisConfig.from_dict({
        "seed": seed,
        "checks": {"enabled": True},  # every check schemathesis has
        "generation": {"max-examples": max_examples, "mode": "all", "deterministic": False, "database": "none"},
        "phases": {name: {"enabled": name in phases} for name in ("examples", "coverage", "fuzzing", "stateful")}
        | ({"stateful": {"enabled": True, "max-steps": max_steps}} if "stateful" in phases else {}),
        "continue-on-failure": True,
    })


def run_fuzz(app: Any, max_examples: int = 20, seed: int = 0, **kw: Any) -> FuzzSummary:
    """Load ``app``'s OpenAPI schema over ASGI and run schemathesis' engine on every operation; the summary."""
    import schemathesis
    from schemathesis.engine import Status, events, from_schema

    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=fuzz_config(max_examples, seed, **kw))
    out = FuzzSummary()
    t0 = time.perf_counter()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            for cid, inter in event.recorder.interactions.items():
                out.requests += 1
                out.operations.add(event.recorder.cases[cid].value.operation.label)
                code = inter.response.status_code if inter.response is not None else 0
                out.statuses[code] += 1
                out.server_errors += code >= 500
            for cid, checks in event.recorder.checks.items():
                for check in checks:
                    if check.status == Status.FAILURE and check.failure_info is not None:
                        f = check.failure_info.failure
                        label = event.recorder.cases[cid].value.operation.label if cid in event.recorder.cases else event.label
                        key = f"{check.name} | {label} | {f.title}"
                        out.failures.setdefault(key, f"{(f.message or '').splitlines()[0][:200] if f.message else ''} <- "
                                                     f"{check.failure_info.code_sample[:300]}")
        elif isinstance(event, events.NonFatalError):
            out.errors.append(f"{event.label}: {event.value!r}"[:500])
        elif isinstance(event, events.FatalError):
            out.errors.append(f"fatal: {event.exception!r}"[:500])
    out.seconds = time.perf_counter() - t0
    return out
