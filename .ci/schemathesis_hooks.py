"""Schemathesis hooks for .ci/run: test what this build implements, not what is planned.

src/http/openapi.json describes the whole contract (0.2), including what this build does not
serve yet; it marks each such operation, parameter and property with
`x-twinkv-planned: <reason>` (and cluster mode's with `x-twinkv-cluster-only`). The route test
in src/http/openapi.rs proves every operation so marked is not routed; this hook drops them
from the schema schemathesis loads, so the run holds the server to the rest. Once a feature
ships, its markers go and schemathesis covers it with no change here.
"""

import schemathesis

MARK = "x-twinkv-planned"



def _prune(node):
    """Drops every object marked planned from the lists and maps below `node`."""
    if isinstance(node, dict):
        for name in [k for k, v in node.items() if isinstance(v, dict) and MARK in v]:
            del node[name]
        for value in node.values():
            _prune(value)
    elif isinstance(node, list):
        node[:] = [v for v in node if not (isinstance(v, dict) and MARK in v)]
        for value in node:
            _prune(value)


def _resolve_parameters(raw_schema):
    """Inlines `$ref`s to planned parameters, so pruning sees their marks."""
    params = raw_schema.get("components", {}).get("parameters", {})
    planned = {f"#/components/parameters/{n}" for n, p in params.items() if MARK in p}
    for item in raw_schema.get("paths", {}).values():
        for op in item.values():
            if isinstance(op, dict) and "parameters" in op:
                op["parameters"] = [p for p in op["parameters"] if p.get("$ref") not in planned]


def _drop_blocking_reads(raw_schema):
    """A blocking read (`index`, waiting up to `wait` s, 30 by default) legitimately holds its
    answer until the key changes, past any request timeout: the run leaves `index` out, so its
    reads are ordinary GETs (and `wait` alone is the documented 400). tests/it/watch.rs covers
    blocking reads."""
    ref = "#/components/parameters/Index"
    for item in raw_schema.get("paths", {}).values():
        for op in item.values():
            if isinstance(op, dict) and "parameters" in op:
                op["parameters"] = [p for p in op["parameters"] if p.get("$ref") != ref]


@schemathesis.hook
def before_load_schema(context, raw_schema):
    _drop_blocking_reads(raw_schema)
    _resolve_parameters(raw_schema)
    for item in raw_schema.get("paths", {}).values():
        for method in [m for m, op in item.items() if isinstance(op, dict) and MARK in op]:
            del item[method]
    raw_schema["paths"] = {p: item for p, item in raw_schema.get("paths", {}).items() if item}
    _prune(raw_schema.get("components", {}).get("schemas", {}))
