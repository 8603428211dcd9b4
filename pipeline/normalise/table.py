"""Record payloads (as the entity's get method returns them) into one typed Arrow table plus record
errors.

`normalise_deals` converts one list of payloads; `TableBuilder` converts a chunk part by part as
answers arrive, so a chunk of thousands of records is held as Arrow columns (a few hundred bytes
a record) rather than as payload dicts (several kilobytes a record).

Typing a string column costs a few compute calls whatever its length, so `TableBuilder` takes a
part's string-valued columns out of the dicts as Arrow strings (one C++ pass) and types them
once per chunk, when it finishes; only the few structured columns are typed per part.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from operator import itemgetter
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.normalise.convert import (
    ColumnValues,
    ConversionError,
    Converter,
    Failure,
    convert_text,
    json_text,
    scalar_int,
    scrub_urls,
)
from pipeline.normalise.mapping import Kind
from pipeline.normalise.schema import STAGED_KEY, EntitySchema
from pipeline.outcomes import RecordError


def _extra(payload: Mapping[str, Any], known: frozenset[str]) -> str:
    """The payload's keys that have no column, as JSON text (a user field created mid-run)."""
    return json_text({k: v for k, v in payload.items() if k not in known})


def _key_union(payloads: Sequence[Mapping[str, Any]]) -> set[str]:
    # A C loop over each dict's stored hashes, ~3x cheaper than a subset test per payload.
    keys: set[str] = set()
    keys.update(*payloads)
    return keys


def _extra_column(
    payloads: Sequence[Mapping[str, Any]], known: frozenset[str], keys: AbstractSet[str]
) -> pa.Array:
    """`_extra` for each payload: null unless it carries keys without a column (`keys`: the
    union of the payloads' keys; a part almost never has an unknown key)."""
    if keys <= known:
        return pa.nulls(len(payloads), pa.string())
    texts = [None if p.keys() <= known else _extra(p, known) for p in payloads]
    return pa.array(texts, type=pa.string())


#: The empty list a list method's null multiple field stands for; shared, nothing mutates it.
_NO_ITEMS: list[Any] = []
_EMPTY_TEXT = pa.scalar("", pa.string())


class _Empties:
    """Reads list methods' empty user fields as the get method's (`pipeline.fetch.listing`): a
    null that a payload carries is `""` in a single text field and no items in a multiple one.
    An absent key stays null: the portal said nothing about the field. A payload carrying
    every column (every list row does: `select` names every field) needs no look-up."""

    __slots__ = ("complete", "payloads")

    def __init__(
        self, payloads: Sequence[Mapping[str, Any]], schema: EntitySchema, keys: AbstractSet[str]
    ):
        self.payloads = payloads
        known = schema.known
        self.complete = keys <= known and set(map(len, payloads)) <= {len(known)}

    def texts(self, values: ColumnValues, name: str) -> ColumnValues:
        if isinstance(values, pa.Array):
            if not values.null_count:
                return values
            if self.complete:
                return pc.fill_null(values, _EMPTY_TEXT)
            mask = [False] * len(values)
            payloads = self.payloads
            for i in pc.indices_nonzero(values.is_null()).to_pylist():
                mask[i] = name in payloads[i]
            return pc.if_else(pa.array(mask, pa.bool_()), _EMPTY_TEXT, values)
        return self._python(values, name, "")

    def lists(self, values: ColumnValues, name: str) -> ColumnValues:
        assert not isinstance(values, pa.Array)
        return self._python(values, name, _NO_ITEMS)

    def _python(self, values: Sequence[Any], name: str, empty: Any) -> Sequence[Any]:
        if None not in values:
            return values
        if self.complete:
            return [empty if value is None else value for value in values]
        pairs = zip(values, self.payloads, strict=True)
        return [empty if value is None and name in p else value for value, p in pairs]

    def absorb(self, columns: list[ColumnValues], schema: EntitySchema) -> None:
        """Apply both rules to the wire columns at `columns` (by position)."""
        names = schema.column_names
        for position in schema.list_empty_texts:
            columns[position] = self.texts(columns[position], names[position])
        for position in schema.list_empty_lists:
            columns[position] = self.lists(columns[position], names[position])


def _payload_id(payload: Mapping[str, Any], id_field: str) -> int:
    try:
        return scalar_int(payload.get(id_field)) or 0
    except ConversionError:
        return 0


def _arrow_columns(
    payloads: Sequence[Mapping[str, Any]], schema: EntitySchema
) -> dict[str, pa.Array] | None:
    """Fast path: pyarrow reads the string-valued columns out of the dicts in one C++ pass.

    It refuses any value that is not a string or null (a JSON number, an object, ...); then the
    whole chunk takes the per-column Python path instead.
    """
    struct = _string_struct(payloads, schema)
    if struct is None:
        return None
    return dict(zip(schema.fast_type.names, struct.flatten(), strict=True))


def _own_keys(payloads: Sequence[Mapping[str, Any]], names: Sequence[str]) -> list[str]:
    """`names` as the first payload's own key objects, where it has them.

    orjson hands every dict of an answer the same string object for a key (seen for all
    payloads of the simulator's list and get answers), so a look-up with that very object
    matches by identity, where an equal but distinct string (the schema's) is compared
    character by character on every look-up: ~10% of the instructions of typing a list part
    (callgrind). Only the speed depends on it: a look-up by an equal string finds the same
    entry."""
    if not payloads:
        return list(names)
    own = {key: key for key in payloads[0]}
    return [own.get(name, name) for name in names]


def _string_struct(payloads: Sequence[Mapping[str, Any]], schema: EntitySchema) -> pa.Array | None:
    """The string-valued columns as one struct array, or None when pyarrow refuses a value."""
    return _struct_of(_string_rows(payloads, schema.fast_type.names)[0], schema)


def _string_rows(
    payloads: Sequence[Mapping[str, Any]], names: Sequence[str]
) -> tuple[Sequence[Any], bool]:
    """What pyarrow reads the string-valued columns `names` from, and whether every payload
    was seen to hold every one of them."""
    if len(names) > 1:
        # A tuple per payload (itemgetter, with the payloads' own key objects), which pyarrow
        # reads by position: ~20% cheaper than pyarrow's own look-up per field name in each
        # dict (measured on 850-row list parts with pyarrow 26). A part with a payload that
        # lacks some key is read from the dicts, where pyarrow takes the missing field as null.
        with contextlib.suppress(KeyError):
            return list(map(itemgetter(*_own_keys(payloads, names)), payloads)), True
    return payloads, False


def _struct_of(rows: Sequence[Any], schema: EntitySchema) -> pa.Array | None:
    try:
        return pa.array(rows, type=schema.fast_type)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return None


def _held_values(payloads: Sequence[Mapping[str, Any]], key: str) -> tuple[list[Any], bool]:
    """`[p.get(key) for p in payloads]`, and whether every payload holds `key`."""
    try:
        return list(map(itemgetter(key), payloads)), True
    except KeyError:
        return [p.get(key) for p in payloads], False


def _python_columns(payloads: Sequence[Mapping[str, Any]], names: Sequence[str]) -> list[list[Any]]:
    # Row-wise extraction, then one transpose: each payload dict is visited once while it is hot
    # in the CPU cache (column-wise `[p.get(name) for p in payloads]` is ~40% slower).
    rows = [list(map(payload.get, names)) for payload in payloads]
    if not rows:
        return [[] for _ in names]
    # Lists, not the tuples zip makes: pa.array reads a list ~10x faster than a tuple.
    return list(map(list, zip(*rows, strict=True)))


def normalise_deals(
    payloads: Sequence[Mapping[str, Any]],
    schema: EntitySchema,
    *,
    ids: Sequence[int] | None = None,
) -> tuple[pa.Table, list[RecordError]]:
    """Convert deal payloads column by column into a table with `schema.arrow_schema`.

    Contract: exactly one row per payload, in input order; never raises for bad values. A value
    that cannot be converted is null in its row and yields exactly one RecordError (for a list,
    one per bad element). Keys the schema does not know are kept as JSON text in `_extra`.

    `ids` are the requested deal IDs, one per payload (pass them from DealFetched.id); without
    them the IDs are read from each payload's "ID" (0 when it has none that parses). Column-wise
    work has a fixed cost per call, so pass chunks of thousands of deals, not single batches
    (or use `TableBuilder`, which types a chunk's parts together).
    """
    return _normalise(payloads, schema, ids, fast=True)


Failures = list[tuple[int, int, Failure]]


def _normalise(
    payloads: Sequence[Mapping[str, Any]],
    schema: EntitySchema,
    ids: Sequence[int] | None,
    *,
    fast: bool,
    grouped: bool = True,
) -> tuple[pa.Table, list[RecordError]]:
    if ids is not None and len(ids) != len(payloads):
        raise ValueError(f"{len(ids)} ids for {len(payloads)} payloads")
    columns, every_column = _wire_columns(payloads, schema, fast)
    known = schema.known
    # A payload that holds every column and has no more keys than there are columns has
    # exactly the columns as its keys: their union need not be taken (a tenth of the cost
    # of reading a list answer's wire values).
    exact = every_column and set(map(len, payloads)) <= {len(known)}
    keys: AbstractSet[str] = known if exact else _key_union(payloads)
    empties = _Empties(payloads, schema, keys)
    empties.absorb(columns, schema)
    failures: Failures = []
    groups = schema.groups if grouped else [(c.kind, (n,)) for n, c in enumerate(schema.columns)]
    arrays = _type_columns(groups, columns, failures, len(payloads))
    arrays.append(_extra_column(payloads, schema.known, keys))
    table = pa.Table.from_arrays(arrays, schema=schema.arrow_schema)
    if ids is None:
        id_field = schema.entity.id_field
        return table, _record_errors(
            failures, schema, lambda row: _payload_id(payloads[row], id_field)
        )
    return table, _record_errors(failures, schema, ids.__getitem__)


def _wire_columns(
    payloads: Sequence[Mapping[str, Any]], schema: EntitySchema, fast: bool
) -> tuple[list[ColumnValues], bool]:
    """Each column's wire values (the string-valued ones as Arrow strings where pyarrow takes
    them), and whether every payload was seen to hold every column."""
    keys = _own_keys(payloads, schema.column_names)
    struct = None
    every_column = False
    if fast:
        rows, every_column = _string_rows(payloads, schema.fast_type.names)
        struct = _struct_of(rows, schema)
        del rows
    if struct is None:
        return list(_python_columns(payloads, keys)), False
    fast_columns = dict(zip(schema.fast_type.names, struct.flatten(), strict=True))
    columns: list[ColumnValues] = []
    for key in keys:
        if key in fast_columns:
            columns.append(fast_columns[key])
            continue
        values, held = _held_values(payloads, key)
        every_column = every_column and held
        columns.append(values)
    return columns, every_column


def _type_columns(
    groups: Iterable[tuple[Kind, tuple[int, ...]]],
    columns: list[ColumnValues],
    failures: Failures,
    rows: int,
    *,
    staged: bool = False,
) -> list[pa.Array]:
    """The typed arrays of the columns in `groups` (`_NO_ARRAY` for the others); `staged`: the
    columns hold their kinds' staged form (`Kind.staging`), typed by its `finish`."""
    arrays: list[pa.Array] = [_NO_ARRAY] * len(columns)
    for kind, positions in groups:
        convert = kind.staging.finish if staged and kind.staging is not None else kind.convert
        _convert_group(convert, positions, columns, arrays, failures, rows)
    return arrays


def _record_errors(
    failures: Failures, schema: EntitySchema, id_of: Callable[[int], int]
) -> list[RecordError]:
    """One RecordError per failure, by row, then column."""
    failures.sort(key=lambda item: (item[0], item[1]))
    return [
        RecordError(
            id=id_of(row),
            field=schema.columns[position].name,
            # A bad value may be a tokenised URL (`strip_auth`); the sidecar must not keep the
            # token either.
            raw_value=scrub_urls(json_text(failure.raw)),
            reason=failure.reason,
        )
        for row, position, failure in failures
    ]


_NO_ARRAY = pa.nulls(0)


def _convert_group(
    convert: Converter,
    positions: Sequence[int],
    columns: list[ColumnValues],
    arrays: list[pa.Array],
    failures: Failures,
    rows: int,
) -> None:
    """Type the columns at `positions` (all of one kind) in one converter call over their
    values end to end; every converter is per value, so this equals one call per column."""
    values = [columns[position] for position in positions]
    for position in positions:
        columns[position] = ()  # free the Python values as soon as the columns are typed
    if len(positions) == 1 or (convert is convert_text and isinstance(values[0], pa.Array)):
        for position, column in zip(positions, values, strict=True):
            array, column_failures = convert(column)
            arrays[position] = array
            failures.extend((failure.row, position, failure) for failure in column_failures)
        return
    joined: ColumnValues
    if isinstance(values[0], pa.Array):
        joined = pa.concat_arrays(values)
    else:
        joined = [value for column in values for value in column]
    array, group_failures = convert(joined)
    for n, position in enumerate(positions):
        arrays[position] = array.slice(n * rows, rows)
    for failure in group_failures:
        n, row = divmod(failure.row, rows)
        failures.append((row, positions[n], failure._replace(row=row)))


def _ascending(ids: pa.Array) -> bool:
    if len(ids) < 2:
        return True
    return bool(pc.all(pc.greater(ids[1:], ids[:-1])).as_py())


def _non_decreasing(values: pa.Array) -> bool:
    n = len(values)
    return n < 2 or bool(pc.all(pc.less_equal(values.slice(0, n - 1), values.slice(1))).as_py())


def _sorted(tables: list[pa.Table], order: pa.Array, positions: Sequence[int]) -> pa.Table:
    """`concat_tables(tables).take(order)`, a column at a time in the order of `positions`, each
    column freed once it is taken (`tables` is emptied), so the copy costs about one column on
    top of the chunk, not a second chunk.

    The columns of one kind are typed together, so they share their buffers (slices of one
    array): `positions` takes such columns one after another, so that their buffers go when the
    last of them is taken, not at the very end.
    """
    table = pa.concat_tables(tables)
    tables.clear()
    schema = table.schema
    columns = dict(enumerate(table.columns))
    del table
    taken: dict[int, pa.Array] = {}
    for position in positions:
        # `ChunkedArray.take` joins the chunks into one array and keeps it, and the chunks, until
        # its copy is made. Joined here, the chunks can go before the take: for a 10,000-row
        # chunk's list of files (its largest column) ~3.9 MB above the chunk instead of ~7.7.
        whole = columns.pop(position).combine_chunks()
        taken[position] = whole.take(order)
        del whole
    return pa.Table.from_arrays([taken[n] for n in range(len(taken))], schema=schema)


def _take_order(schema: EntitySchema) -> tuple[int, ...]:
    """Every column position of a typed table, the columns of a kind together (see `_sorted`),
    `_extra` last."""
    return (*(p for _, positions in schema.groups for p in positions), len(schema.columns))


class Part(NamedTuple):
    """Some deals of a chunk: their rows, requested IDs (row by row) and record errors.

    `table` has `EntitySchema.staged_schema` when its string-valued and staged columns still
    hold their wire form (typed, with their record errors, when the builder finishes), else
    `arrow_schema`.
    """

    table: pa.Table
    ids: pa.Array
    errors: list[RecordError]


def _wire_struct(
    payloads: Sequence[Mapping[str, Any]], schema: EntitySchema, empties: _Empties
) -> pa.Array | None:
    """The string-valued columns as one struct array (see `_arrow_columns`), list methods'
    empty text fields read as get's, or None."""
    struct = _string_struct(payloads, schema)
    if struct is None:
        return None
    # Only the user text fields' children are looked at (get answers never hold a null there),
    # and the struct is rebuilt only when one changes: flattening every child costs a few
    # microseconds a column, which adds up for small parts.
    fixes: dict[int, ColumnValues] = {}
    for index in schema.list_empty_text_fields:
        child = struct.field(index)
        if child.null_count:
            fixes[index] = empties.texts(child, schema.fast_type[index].name)
    if not fixes:
        return struct
    children = [fixes[n] if n in fixes else struct.field(n) for n in range(struct.type.num_fields)]
    return pa.StructArray.from_arrays(children, fields=list(schema.fast_type))


def _stage(
    payloads: Sequence[Mapping[str, Any]], schema: EntitySchema, empties: _Empties
) -> tuple[list[pa.Array], Failures] | None:
    """The part's other columns in `schema.other_positions` order: staged ones in their wire
    form, structured ones typed (with their failures); None when some column refuses its
    staged form."""
    names = schema.column_names
    columns: list[ColumnValues] = [()] * len(names)
    keys = _own_keys(payloads, [names[position] for position in schema.other_positions])
    for position, key in zip(schema.other_positions, keys, strict=True):
        columns[position] = [p.get(key) for p in payloads]
    for position in schema.list_empty_lists:
        columns[position] = empties.lists(columns[position], names[position])
    failures: Failures = []
    arrays = _type_columns(schema.structured_groups, columns, failures, len(payloads))
    for kind, positions in schema.staged_groups:
        assert kind.staging is not None
        for position in positions:
            array = kind.staging.stage(columns[position])
            if array is None:
                return None
            arrays[position] = array
    return [arrays[position] for position in schema.other_positions], failures


# Staged parts are typed in runs of about this many rows: enough that the compute calls' fixed
# cost is small per record, few enough that a run's wire values (~1 kB a record) stay small
# next to the chunk.
_TYPE_ROWS = 2_000
# A part this large is typed at once: a full list answer (`pipeline.fetch.listing`, 1,000
# rows; one with absent IDs is staged like any part). Typing it costs the same per record as
# in a run (measured), and its typed columns take ~12% less memory than its wire strings.
_TYPE_AT_ONCE = 1_000


def _is_staged(table: pa.Table) -> bool:
    metadata = table.schema.metadata
    return bool(metadata) and STAGED_KEY in metadata


#: Each row's group (0, 1, ...) of a typed table, or None for no groups: see `TableBuilder`.
Grouping = Callable[[pa.Table], pa.Array | None]


class TableBuilder:
    """One chunk's table, normalised a part at a time; `finish` returns it in ID order, or
    group by group and in ID order within a group when given a `group` function.

    The result equals `normalise_deals` over all payloads sorted by ID: the same rows and values
    (every converter is per value), and the same record errors in the same order (by row, then
    column); with `group`, the same rows in that order. Parts may be of any size: a small
    part's string-valued and multiple columns stay in their wire form (~1 kB a record, some 30%
    more than typed) and are typed together with the other parts' when the builder finishes,
    so the cost per part is small even for 50 records.

    `group` is how a consumer that writes a chunk's rows group by group (a sink's files) has
    them built in its order: the chunk is copied into order once here anyway, so the consumer
    need not copy its groups out of an ID-ordered table again. It gets the typed rows, in no
    particular order, and returns each row's group (ascending: the order wanted) or None.
    """

    def __init__(self, schema: EntitySchema, group: Grouping | None = None) -> None:
        self.schema = schema
        self.group = group
        self._tables: list[pa.Table] = []
        self._ids: list[pa.Array] = []
        self._errors: list[RecordError] = []
        self.rows = 0
        #: The Arrow bytes of the parts added so far (their buffers, as `pa.Table.nbytes`).
        self.nbytes = 0

    def convert(self, payloads: Sequence[Mapping[str, Any]], ids: Sequence[int]) -> Part:
        """Normalise one part (`ids[i]` is the requested ID of `payloads[i]`) without adding it:
        pure, so it may run in a worker thread while the builder goes on taking parts."""
        if len(ids) != len(payloads):
            raise ValueError(f"{len(ids)} ids for {len(payloads)} payloads")
        schema = self.schema
        if len(payloads) >= _TYPE_AT_ONCE:
            # Large enough to type at once for little more per record, and typed columns are
            # smaller than wire strings (and need no second copy when the builder finishes).
            table, errors = _normalise(payloads, schema, ids, fast=True)
            return Part(table, pa.array(ids, type=pa.int64()), errors)
        keys = _key_union(payloads)
        empties = _Empties(payloads, schema, keys)
        wire = _wire_struct(payloads, schema, empties)
        staged = None if wire is None else _stage(payloads, schema, empties)
        if wire is None or staged is None:
            # Some value needs its per-value converter (a JSON number, say): type the part now.
            table, errors = _normalise(payloads, schema, ids, fast=wire is not None)
            return Part(table, pa.array(ids, type=pa.int64()), errors)
        arrays, failures = staged
        table = pa.Table.from_arrays(
            [wire, *arrays, _extra_column(payloads, schema.known, keys)],
            schema=schema.staged_schema,
        )
        errors = _record_errors(failures, schema, ids.__getitem__)
        return Part(table, pa.array(ids, type=pa.int64()), errors)

    def append(self, part: Part) -> None:
        if not part.table.num_rows:
            return
        self._tables.append(part.table)
        self._ids.append(part.ids)
        self._errors.extend(part.errors)
        self.rows += part.table.num_rows
        self.nbytes += part.table.nbytes

    def fresh(self) -> TableBuilder:
        """An empty builder of the same schema and order."""
        return TableBuilder(self.schema, self.group)

    def add(self, payloads: Sequence[Mapping[str, Any]], ids: Sequence[int]) -> None:
        self.append(self.convert(payloads, ids))

    def requested_ids(self) -> list[int]:
        """The requested IDs of the rows added so far, in the order they were added."""
        return [i for ids in self._ids for i in ids.to_pylist()]

    def finish(self) -> tuple[pa.Table, list[RecordError]]:
        """The rows added so far, ordered by ID (by group, then ID: see the class), and their
        record errors (by ID); resets the builder."""
        tables, ids, errors = self._tables, self._ids, self._errors
        self._tables, self._ids, self._errors, self.rows, self.nbytes = [], [], [], 0, 0
        if not tables:
            return self.schema.arrow_schema.empty_table(), []
        all_ids = ids[0] if len(ids) == 1 else pa.concat_arrays(ids)
        parts = deque(zip(tables, ids, strict=True))
        tables.clear()  # `parts` alone holds them now, so each goes as soon as it is typed
        typed = self._typed(parts, errors)
        order = self._order(typed, all_ids)
        if order is None:
            table = typed[0] if len(typed) == 1 else pa.concat_tables(typed)
        else:
            table = _sorted(typed, order, _take_order(self.schema))
        if errors:
            position = {name: n for n, name in enumerate(self.schema.column_names)}
            errors.sort(key=lambda e: (e.id, position.get(e.field, len(position))))
        return table, errors

    def _order(self, typed: list[pa.Table], ids: pa.Array) -> pa.Array | None:
        """The indices that put the rows of `typed` (end to end; `ids` row by row) in order,
        or None when they already are. Answers arrive nearly in order; only a chunk whose
        parts overlap pays for a copy (list answers do: the follow-up gets of their absent IDs
        come later), or one whose groups do."""
        groups = None if self.group is None else self.group(pa.concat_tables(typed))
        if groups is None:
            return None if _ascending(ids) else pc.sort_indices(ids)
        if _ascending(ids) and _non_decreasing(groups):
            return None
        keys = pa.table({"group": groups, "id": ids})
        return pc.sort_indices(keys, sort_keys=[("group", "ascending"), ("id", "ascending")])

    def _typed(
        self, parts: deque[tuple[pa.Table, pa.Array]], errors: list[RecordError]
    ) -> list[pa.Table]:
        """The parts' tables in order, staged ones typed a run of consecutive parts at a time
        (`_TYPE_ROWS`); their record errors go to `errors`."""
        out: list[pa.Table] = []
        run: list[tuple[pa.Table, pa.Array]] = []
        rows = 0
        while parts:
            table, part_ids = parts.popleft()
            if not _is_staged(table):
                if run:
                    out.append(self._type_run(run, errors))
                    rows = 0
                out.append(table)
                continue
            run.append((table, part_ids))
            rows += table.num_rows
            if rows >= _TYPE_ROWS:
                out.append(self._type_run(run, errors))
                rows = 0
        if run:
            out.append(self._type_run(run, errors))
        return out

    def _type_run(
        self, run: list[tuple[pa.Table, pa.Array]], errors: list[RecordError]
    ) -> pa.Table:
        """Consecutive staged parts typed as one table; empties `run`."""
        schema = self.schema
        # One C++ pass makes every column one array; per column from Python it costs ~50% more.
        joined = pa.concat_tables([table for table, _ in run]).combine_chunks()
        ids = [part_ids for _, part_ids in run]
        run.clear()  # the staged parts may go: `joined` holds their values
        rows = joined.num_rows
        columns: list[ColumnValues] = [()] * len(schema.columns)
        for position, strings in zip(
            schema.string_positions, joined.column(0).chunk(0).flatten(), strict=True
        ):
            columns[position] = strings
        for n, position in enumerate(schema.other_positions, start=1):
            columns[position] = joined.column(n).chunk(0)
        extra = joined.column(joined.num_columns - 1).chunk(0)
        del joined  # each column's wire values go as soon as it is typed
        failures: Failures = []
        arrays = _type_columns(schema.string_groups, columns, failures, rows)
        for position, array in enumerate(
            _type_columns(schema.staged_groups, columns, failures, rows, staged=True)
        ):
            if array is not _NO_ARRAY:
                arrays[position] = array
        for _, positions in schema.structured_groups:
            for position in positions:
                arrays[position] = columns[position]
        arrays.append(extra)
        if failures:
            run_ids = pa.concat_arrays(ids).to_pylist()
            errors.extend(_record_errors(failures, schema, run_ids.__getitem__))
        return pa.Table.from_arrays(arrays, schema=schema.arrow_schema)


__all__ = ["Grouping", "Part", "TableBuilder", "normalise_deals"]
