"""The SQL models of `dbt_like_sql/`: discovered, parsed, validated and compiled to DuckDB SQL.

A model is one `.sql` file that reads lake tables through `{{ source('lake', '<table>') }}` and other
models through `{{ ref('<model>') }}`. Rendering replaces each call with a placeholder table name, sqlglot
parses the result (DuckDB dialect), and the table nodes of the tree give the dependencies, wherever they
sit: in a CTE, a subquery or a join. The same tree, with the placeholders swapped for the real relations,
is the compiled SQL: sources become the deduplicated lake views, refs the upstream model's Parquet file.
"""

from __future__ import annotations

import graphlib
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import jinja2
import sqlglot
import yaml
from jinja2.sandbox import SandboxedEnvironment
from sqlglot import exp

from imago_pipeline.core.analytics.sources import SOURCE_NAME
from imago_pipeline.core.stores.lake import LakeRoot, files_of
from imago_pipeline.core.stores.lake_tables import LAKE_TABLES

MODELS_FOLDER = "dbt_like_sql"
_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")
# Groups of fewer images than this are left out of the models that describe image content (camera, label,
# language), so no aggregate describes a single image: nothing of an erased image survives in a model.
DEFAULT_MIN_GROUP_SIZE = 5
_SOURCE_PREFIX = "__imago_source__"
_REF_PREFIX = "__imago_ref__"
TEST_KINDS = ("not_null", "unique", "accepted_values", "row_count_min")


def is_model_name(name: str) -> bool:
    """Lowercase letters, digits and `_`: safe unquoted in SQL and as a folder and asset name."""
    return bool(_IDENTIFIER.match(name))


class ModelError(ValueError):
    """A model or schema.yml that cannot be used, with the file it is about in the message."""


def default_project_dir() -> Path:
    """`dbt_like_sql/` of this checkout (editable installs, tests, `imago serve`), else of the working
    directory (an image that copies the folder next to where it runs)."""
    beside_package = Path(__file__).resolve().parents[3] / MODELS_FOLDER
    return beside_package if beside_package.is_dir() else Path.cwd() / MODELS_FOLDER


@dataclass(frozen=True)
class DataTest:
    """One declared test; `failing_rows_sql` counts the rows that break it in the model's relation."""

    model: str
    kind: str
    column: str | None = None
    values: tuple[str, ...] = ()
    minimum: int = 0
    severity: str = "error"  # error: blocking; warn: reported only

    @property
    def name(self) -> str:
        return "_".join(part for part in (self.kind, self.model, self.column) if part)

    @property
    def blocking(self) -> bool:
        return self.severity == "error"

    @property
    def description(self) -> str:
        if self.kind == "not_null":
            return f"`{self.column}` is never null"
        if self.kind == "unique":
            return f"`{self.column}` is unique"
        if self.kind == "accepted_values":
            return f"`{self.column}` is one of {', '.join(self.values)}"
        return f"at least {self.minimum} row{'s' if self.minimum != 1 else ''}"

    def failing_rows_sql(self, relation: str) -> str:
        column = f'"{self.column}"' if self.column else ""
        if self.kind == "not_null":
            return f"SELECT count(*) FROM {relation} WHERE {column} IS NULL"
        if self.kind == "unique":
            return (f"SELECT coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM {relation} "
                    f"WHERE {column} IS NOT NULL GROUP BY {column} HAVING count(*) > 1)")
        if self.kind == "accepted_values":
            accepted = ", ".join(exp.Literal.string(v).sql(dialect="duckdb") for v in self.values)
            return (f"SELECT count(*) FROM {relation} "
                    f"WHERE {column} IS NOT NULL AND {column}::VARCHAR NOT IN ({accepted})")
        return f"SELECT greatest({self.minimum} - count(*), 0) FROM {relation}"


@dataclass(frozen=True)
class Model:
    name: str
    path: Path
    sql: str  # as written
    description: str
    sources: tuple[str, ...]
    refs: tuple[str, ...]
    tree: exp.Expression = field(repr=False, compare=False)
    tests: tuple[DataTest, ...] = ()
    variables: tuple[tuple[str, Any], ...] = ()  # the project variables the SQL uses, with their values

    @property
    def code_version(self) -> str:
        """Changes when the SQL, its tests or a variable it uses change, so Dagster shows the model as stale."""
        text = (self.sql + repr(sorted((t.name, t.values, t.minimum, t.severity) for t in self.tests))
                + (repr(self.variables) if self.variables else ""))
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class SqlProject:
    root: Path
    models: dict[str, Model]  # in dependency order: every model after the models it refs

    def compile(self, name: str, lake: LakeRoot) -> str:
        """DuckDB SQL for the model: sources read the lake views of `open_analytics`, refs read the
        upstream model's Parquet file."""
        tree = self.models[name].tree.copy()
        for table in list(tree.find_all(exp.Table)):
            placeholder = table.name if isinstance(table.this, exp.Identifier) else ""
            if placeholder.startswith(_SOURCE_PREFIX):
                target = placeholder.removeprefix(_SOURCE_PREFIX)
                replacement = exp.to_table(target)
            elif placeholder.startswith(_REF_PREFIX):
                target = placeholder.removeprefix(_REF_PREFIX)
                replacement = exp.Table(this=exp.Anonymous(
                    this="read_parquet", expressions=[exp.Literal.string(files_of(lake).uri(model_file(target)))]))
            else:
                continue
            replacement.set("alias", exp.TableAlias(this=exp.to_identifier(table.alias or target)))
            table.replace(replacement)
        return tree.sql(dialect="duckdb", pretty=True)


def model_file(name: str) -> str:
    """Where a built model lives, relative to the lake's root: one Parquet file, `models/<name>/<name>.parquet`."""
    return f"models/{name}/{name}.parquet"


def load_project(root: Path | None = None, *, min_group_size: int = DEFAULT_MIN_GROUP_SIZE) -> SqlProject:
    """Read every model and schema.yml under `root`, or fail with a ModelError naming the file.

    Models see the variable `min_group_size` (`{{ min_group_size }}`): the smallest group of images an
    aggregate of image content may show."""
    root = Path(root or default_project_dir())
    variables = {"min_group_size": int(min_group_size)}
    models_dir = root / "models"
    if not models_dir.is_dir():
        raise ModelError(f"{models_dir}: no models folder")
    schema_path = root / "schema.yml"
    declared = _read_schema(schema_path) if schema_path.exists() else {}
    models: dict[str, Model] = {}
    for path in sorted(models_dir.glob("*.sql")):
        name = path.stem
        if not _IDENTIFIER.match(name):
            raise ModelError(f"{path}: model name {name!r} is not a safe identifier (lowercase letters, digits, _)")
        if name in LAKE_TABLES:
            raise ModelError(f"{path}: model name {name!r} is already a lake table")
        entry = declared.pop(name, {})
        sql = path.read_text()
        sources, refs, tree = parse_model(sql, path, variables)
        models[name] = Model(name=name, path=path, sql=sql, description=str(entry.get("description", "")).strip(),
                             sources=sources, refs=refs, tree=tree, tests=_tests(name, entry, schema_path),
                             variables=tuple((k, v) for k, v in sorted(variables.items()) if k in sql))
    if declared:
        raise ModelError(f"{schema_path}: declares {', '.join(sorted(declared))} but there is no such model file")
    for model in models.values():
        for ref in model.refs:
            if ref not in models:
                raise ModelError(f"{model.path}: ref('{ref}') names no model (models: {', '.join(sorted(models))})")
    order = graphlib.TopologicalSorter({m.name: m.refs for m in models.values()})
    try:
        ordered = list(order.static_order())
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        raise ModelError(f"{models[cycle[0]].path}: ref cycle " + " -> ".join(cycle)) from None
    return SqlProject(root=root, models={name: models[name] for name in ordered})


def parse_model(sql: str, path: Path, variables: dict[str, Any] | None = None,
                ) -> tuple[tuple[str, ...], tuple[str, ...], exp.Expression]:
    """The sources and refs a model reads, from the parsed tree of its rendered SQL."""

    def source(source_name: str, table: str) -> str:
        if source_name != SOURCE_NAME:
            raise ModelError(f"{path}: unknown source {source_name!r} (the only source is {SOURCE_NAME!r})")
        if table not in LAKE_TABLES:
            raise ModelError(f"{path}: source('{source_name}', '{table}') is not a lake table "
                             f"(tables: {', '.join(LAKE_TABLES)})")
        return _SOURCE_PREFIX + table

    def ref(name: str) -> str:
        if not _IDENTIFIER.match(name):
            raise ModelError(f"{path}: ref({name!r}) is not a model name")
        return _REF_PREFIX + name

    environment = SandboxedEnvironment(undefined=jinja2.StrictUndefined)
    try:
        rendered = environment.from_string(sql).render(source=source, ref=ref, **(variables or {}))
    except jinja2.TemplateError as exc:
        raise ModelError(f"{path}: template error: {exc}") from None
    try:
        statements = [s for s in sqlglot.parse(rendered, read="duckdb") if s is not None]
    except sqlglot.errors.ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        where = f" at line {first['line']}, column {first['col']}" if first else ""
        raise ModelError(f"{path}: SQL does not parse{where}: {first.get('description', exc)}") from None
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        raise ModelError(f"{path}: a model is exactly one SELECT query")
    tree = cast(exp.Expression, statements[0])
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    sources: list[str] = []
    refs: list[str] = []
    for table in tree.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            function = table.this.sql(dialect="duckdb").split("(", 1)[0].lower()
            if function.startswith("read_") or function.endswith("_scan"):
                raise ModelError(f"{path}: reads files directly ({function}); use source() or ref()")
            continue
        name = table.name
        if name.startswith(_SOURCE_PREFIX):
            sources.append(name.removeprefix(_SOURCE_PREFIX))
        elif name.startswith(_REF_PREFIX):
            refs.append(name.removeprefix(_REF_PREFIX))
        elif name not in ctes or table.db:
            raise ModelError(f"{path}: reads table {table.sql(dialect='duckdb')!r} directly; "
                             "use {{ source('lake', '<table>') }} or {{ ref('<model>') }}")
    if not sources and not refs:
        raise ModelError(f"{path}: reads neither a source nor a ref")
    return tuple(dict.fromkeys(sources)), tuple(dict.fromkeys(refs)), tree


def _read_schema(path: Path) -> dict[str, dict[str, Any]]:
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ModelError(f"{path}: not valid YAML: {exc}") from None
    entries = document.get("models") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and e.get("name") for e in entries):
        raise ModelError(f"{path}: expected `models:`, a list of entries each with a `name`")
    by_name: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if entry["name"] in by_name:
            raise ModelError(f"{path}: model {entry['name']!r} is declared twice")
        by_name[entry["name"]] = entry
    return by_name


def _tests(model: str, entry: dict[str, Any], path: Path) -> tuple[DataTest, ...]:
    tests = [_test(model, None, spec, path) for spec in entry.get("data_tests") or []]
    for column in entry.get("columns") or []:
        name = column.get("name") if isinstance(column, dict) else None
        if not name or not _IDENTIFIER.match(str(name)):
            raise ModelError(f"{path}: model {model!r}: column entries need a `name` that is a safe identifier")
        tests += [_test(model, name, spec, path) for spec in column.get("data_tests") or []]
    names = [t.name for t in tests]
    if len(names) != len(set(names)):
        raise ModelError(f"{path}: model {model!r} declares the same test twice")
    return tuple(tests)


def _test(model: str, column: str | None, spec: Any, path: Path) -> DataTest:
    """`not_null`, `unique`, `{accepted_values: {values: [...]}}` on a column; `{row_count_min: N}` on a
    model; any of them may carry `config: {severity: warn}` (default: error, which blocks downstream)."""
    where = f"{path}: model {model!r}" + (f", column {column!r}" if column else "")
    arguments: Any
    if isinstance(spec, str):
        kind, arguments = spec, {}
    elif isinstance(spec, dict) and len(spec) == 1:
        kind, arguments = next(iter(spec.items()))
    else:
        raise ModelError(f"{where}: a test is a name or a one-key mapping, not {spec!r}")
    if kind not in TEST_KINDS:
        raise ModelError(f"{where}: unknown test {kind!r} (tests: {', '.join(TEST_KINDS)})")
    if (kind == "row_count_min") != (column is None):
        raise ModelError(f"{where}: {kind} is a {'model' if kind == 'row_count_min' else 'column'} test")
    if kind == "row_count_min" and not isinstance(arguments, dict):
        arguments = {"min": arguments}
    if not isinstance(arguments, dict):
        raise ModelError(f"{where}: the arguments of {kind} are a mapping, not {arguments!r}")
    severity = str((arguments.get("config") or {}).get("severity", "error"))
    if severity not in ("error", "warn"):
        raise ModelError(f"{where}: severity is error or warn, not {severity!r}")
    if kind == "accepted_values":
        values = arguments.get("values")
        if not isinstance(values, list) or not values:
            raise ModelError(f"{where}: accepted_values needs a non-empty `values` list")
        return DataTest(model, kind, column, values=tuple(str(v) for v in values), severity=severity)
    if kind == "row_count_min":
        minimum = arguments.get("min")
        if not isinstance(minimum, int) or isinstance(minimum, bool) or minimum < 0:
            raise ModelError(f"{where}: row_count_min needs a whole number (`row_count_min: 1`)")
        return DataTest(model, kind, minimum=minimum, severity=severity)
    return DataTest(model, kind, column, severity=severity)
