"""Benchmark: JSON `batch` bodies -> typed Arrow -> Parquet (zstd), on one core.

    .venv/bin/python -m bench.bench_normalise [--deals 20000] [--chunk 5000] [--rounds 5]
        [--parts 50,500,10000] [--form get|list]

The bodies are the simulator's real `batch` answers (50 `crm.deal.get` per body, fetched once
over HTTP from a local simulator with no rate limit), for a portal with 15 user fields. The timed
part is what the pipeline does per chunk: orjson-parse each body, pull the deals out of
`result.result`, `normalise_deals`, and write the table as one Parquet row group. The process is
pinned to one CPU and Arrow's thread pools are set to one thread. `deals_per_s` is wall clock
(best round); `deals_per_cpu_s` divides by this process's CPU time, which other load on a shared
machine does not inflate.

`--parts` repeats the rounds the way the pipeline converts: each part (50 deals: one `batch`
answer) is parsed and handed to `TableBuilder.convert` as it arrives, and the builder finishes
once per chunk (at least one part); `parts_cpu_us_per_deal` has the best round's CPU per stage
for each part size. Prints one JSON line and writes it to bench/results/bench_normalise.json.

`arrow_pool_mb` is the Arrow memory one chunk's TableBuilder holds once every part is converted
(`held`, one part per body) and the pool's peak while the chunk is built and finished (`peak`),
with the parts in arrival order and reversed (then `finish` sorts the chunk by ID).

`--form list` takes the `list` strategy's answers instead: `batch` bodies of
`LIST_BATCH_COMMANDS` `crm.deal.list` commands of `LIST_PAGE` IDs each (1,000 deals a body), as
`pipeline.fetch.listing` builds them, split per ID by `parse_list_batch` (part of `parse`) and
handed to the normaliser in list methods' own forms; parts are then whole bodies. The result
goes to bench/results/bench_normalise_list.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from bench import write_result
from pipeline.fetch.listing import (
    LIST_BATCH_COMMANDS,
    LIST_PAGE,
    build_list_batch,
    chunk_ids,
    list_select,
    parse_list_batch,
    select_query,
)
from pipeline.normalise import DealSchema, TableBuilder, normalise_deals
from pipeline.outcomes import RecordError
from pipeline.simulator import SimulatorConfig, running_simulator

TARGET_DEALS_PER_S = 30_000
BATCH = 50
# 15 user fields of the simulator's 20 kinds: every UF type the mapping knows, single and multiple.
USER_FIELDS = (
    "string",
    "string_multi",
    "integer",
    "double",
    "boolean",
    "enumeration",
    "enumeration_multi",
    "datetime",
    "date",
    "money",
    "url",
    "address",
    "file",
    "employee",
    "crm",
)


#: One answer's bytes and, for a list answer, the IDs each of its commands asked for.
Body = tuple[bytes, list[list[int]] | None]


async def fetch_bodies(deals: int, form: str = "get") -> tuple[list[Body], dict[str, Any]]:
    """The raw `batch` response bodies for the first `deals` existing deals, plus the fields."""
    config = SimulatorConfig(
        deals=deals + deals // 10, seed=7, rate=0.0, user_fields=USER_FIELDS, server_tz="-05:00"
    )
    bodies: list[Body] = []
    async with running_simulator(config) as sim, aiohttp.ClientSession() as session:
        ids = list(sim.portal.visible_ids)[:deals]
        async with session.post(sim.webhook_url + "crm.deal.fields", json={}) as resp:
            fields = orjson.loads(await resp.read())["result"]
        select = select_query(list_select(fields))
        step = per_body(form)
        for start in range(0, len(ids), step):
            some = ids[start : start + step]
            chunks: list[list[int]] | None = None
            if form == "list":
                chunks = chunk_ids(some)
                request = build_list_batch(chunks, select)
            else:
                cmd = {f"d{i}": f"crm.deal.get?id={i}" for i in some}
                request = {"halt": 0, "cmd": cmd}
            async with session.post(sim.webhook_url + "batch", json=request) as resp:
                resp.raise_for_status()
                bodies.append((await resp.read(), chunks))
    return bodies, fields


def per_body(form: str) -> int:
    """Deals per answer: 50 gets, or LIST_BATCH_COMMANDS lists of LIST_PAGE IDs."""
    return LIST_BATCH_COMMANDS * LIST_PAGE if form == "list" else BATCH


def deals_of(body: Body) -> tuple[list[dict[str, Any]], list[int]]:
    """The deals of one batch body (PHP may serialise `result` as a list or an object)."""
    raw, chunks = body
    if chunks is not None:
        reply = parse_list_batch(orjson.loads(raw)["result"], chunks)
        return list(reply.deals.values()), list(reply.deals)
    result = orjson.loads(raw)["result"]["result"]
    deals = list(result.values()) if isinstance(result, dict) else list(result)
    return deals, [int(deal["ID"]) for deal in deals]


def one_round(
    bodies: list[Body], schema: DealSchema, chunk_bodies: int, path: Path, part_bodies: int = 0
) -> dict[str, Any]:
    """One pass over all bodies; `part_bodies` > 0 converts them part by part (TableBuilder)."""
    parse = normalise = write = 0.0
    cpu = {"parse": 0.0, "normalise": 0.0, "write_parquet_zstd": 0.0}
    rows = errors = 0
    start = time.perf_counter()
    cpu_start = time.process_time()
    with pq.ParquetWriter(path, schema.arrow_schema, compression="zstd") as writer:
        for first in range(0, len(bodies), chunk_bodies):
            chunk = bodies[first : first + chunk_bodies]
            t0, c0 = time.perf_counter(), time.process_time()
            if part_bodies:
                table, record_errors, staged = _by_parts(chunk, schema, part_bodies)
                t1, c1 = t0 + staged[0], c0 + staged[1]
            else:
                payloads: list[dict[str, Any]] = []
                ids: list[int] = []
                for body in chunk:
                    deals, deal_ids = deals_of(body)
                    payloads += deals
                    ids += deal_ids
                t1, c1 = time.perf_counter(), time.process_time()
                table, record_errors = normalise_deals(payloads, schema, ids=ids)
            t2, c2 = time.perf_counter(), time.process_time()
            writer.write_table(table)
            t3, c3 = time.perf_counter(), time.process_time()
            cpu["parse"] += c1 - c0
            cpu["normalise"] += c2 - c1
            cpu["write_parquet_zstd"] += c3 - c2
            parse += t1 - t0
            normalise += t2 - t1
            write += t3 - t2
            rows += table.num_rows
            errors += len(record_errors)
    total = time.perf_counter() - start
    return {
        "seconds": total,
        "cpu_seconds": time.process_time() - cpu_start,
        "parse_s": parse,
        "normalise_s": normalise,
        "write_s": write,
        "cpu_stages": cpu,
        "rows": rows,
        "errors": errors,
        "bytes": path.stat().st_size,
    }


def _by_parts(
    chunk: list[Body], schema: DealSchema, part_bodies: int
) -> tuple[pa.Table, list[RecordError], tuple[float, float]]:
    """One chunk parsed and converted part by part, then finished; the parse time (wall, CPU)
    is returned apart so that the caller books everything else to normalise."""
    builder = TableBuilder(schema)
    parse_wall = parse_cpu = 0.0
    for first in range(0, len(chunk), part_bodies):
        t0, c0 = time.perf_counter(), time.process_time()
        payloads: list[dict[str, Any]] = []
        ids: list[int] = []
        for body in chunk[first : first + part_bodies]:
            deals, deal_ids = deals_of(body)
            payloads += deals
            ids += deal_ids
        parse_wall += time.perf_counter() - t0
        parse_cpu += time.process_time() - c0
        builder.append(builder.convert(payloads, ids))
        del payloads
    table, record_errors = builder.finish()
    return table, record_errors, (parse_wall, parse_cpu)


def arrow_pool(bodies: list[Body], schema: DealSchema, chunk_bodies: int) -> dict[str, Any]:
    """Arrow bytes held by one chunk's builder before `finish`, and the pool's peak up to the end
    of `finish`, for parts in order and reversed; a proxy pool per case counts only its own."""
    chunk = bodies[:chunk_bodies]
    figures: dict[str, Any] = {}
    for name, parts in (("in_order", chunk), ("reversed", chunk[::-1])):
        previous = pa.default_memory_pool()
        pool = pa.proxy_memory_pool(previous)
        pa.set_memory_pool(pool)
        try:
            builder = TableBuilder(schema)
            for body in parts:
                deals, ids = deals_of(body)
                builder.append(builder.convert(deals, ids))
            rows, held = builder.rows, pool.bytes_allocated()
            table, _ = builder.finish()
            figures[name] = {
                "rows": rows,
                "held": round(held / 1e6, 2),
                "peak": round(pool.max_memory() / 1e6, 2),
                "table": round(table.nbytes / 1e6, 2),
            }
            del table
        finally:
            pa.set_memory_pool(previous)
    return figures


def _us_per_deal(rounds: list[dict[str, Any]]) -> dict[str, float]:
    """CPU µs per deal per stage of the round with the least CPU."""
    best = min(rounds, key=lambda r: r["cpu_seconds"] / max(1, r["rows"]))
    return {
        stage: round(seconds / max(1, best["rows"]) * 1e6, 2)
        for stage, seconds in best["cpu_stages"].items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=5_000, help="deals per normalise call")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--parts",
        default="50,500,10000",
        help="comma-separated deals per TableBuilder.convert call ('' for none)",
    )
    parser.add_argument("--form", choices=("get", "list"), default="get", help="answers' method")
    args = parser.parse_args(argv)
    parts = [int(p) for p in args.parts.split(",") if p.strip()]
    step = per_body(args.form)

    bodies, fields = asyncio.run(fetch_bodies(args.deals, args.form))
    # One core: pin the process and keep Arrow's own thread pools to one thread.
    pinned = False
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        pinned = True
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)

    schema = DealSchema.from_fields(fields)
    chunk_bodies = max(1, args.chunk // step)
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(max(1, args.rounds)):
            rounds.append(one_round(bodies, schema, chunk_bodies, Path(tmp) / f"round{n}.parquet"))
        by_part: dict[str, dict[str, float]] = {}
        for part in parts:
            part_bodies = max(1, part // step)
            # A chunk holds at least one whole part, as a run's chunk holds its answers.
            part_chunk = max(chunk_bodies, part_bodies)
            part_rounds = [
                one_round(
                    bodies, schema, part_chunk, Path(tmp) / f"p{part}-{n}.parquet", part_bodies
                )
                for n in range(max(1, args.rounds))
            ]
            by_part[str(min(part_bodies, len(bodies)) * step)] = _us_per_deal(part_rounds)
        pool_figures = arrow_pool(bodies, schema, chunk_bodies)
    rates = [r["rows"] / r["seconds"] for r in rounds]
    cpu_rates = [r["rows"] / r["cpu_seconds"] for r in rounds]
    best = rounds[rates.index(max(rates))]
    cpu_best = rounds[cpu_rates.index(max(cpu_rates))]
    deals = best["rows"]
    result = {
        "bench": "bench_normalise",
        "deals": deals,
        "batch_bodies": len(bodies),
        "body_bytes_per_deal": round(sum(len(raw) for raw, _ in bodies) / max(1, deals)),
        "user_fields": len(USER_FIELDS),
        "columns": len(schema.columns),
        "form": args.form,
        "chunk_deals": chunk_bodies * step,
        "rounds": len(rounds),
        "deals_per_s": round(max(rates)),
        "deals_per_s_median": round(statistics.median(rates)),
        # CPU time of this process: what one core does when the machine is not shared.
        "deals_per_cpu_s": round(max(cpu_rates)),
        "deals_per_cpu_s_median": round(statistics.median(cpu_rates)),
        "best_round_s": {
            "parse": round(best["parse_s"], 3),
            "normalise": round(best["normalise_s"], 3),
            "write_parquet_zstd": round(best["write_s"], 3),
            "total": round(best["seconds"], 3),
        },
        "best_cpu_round_us_per_deal": {
            stage: round(seconds / max(1, cpu_best["rows"]) * 1e6, 2)
            for stage, seconds in cpu_best["cpu_stages"].items()
        },
        # TableBuilder, part by part, as the pipeline converts: {deals per part: {stage: µs}}.
        "parts_cpu_us_per_deal": by_part,
        # One chunk's builder: Arrow MB held before finish, pool peak, finished table.
        "arrow_pool_mb": pool_figures,
        "parquet_bytes_per_deal": round(best["bytes"] / max(1, deals), 1),
        "record_errors": best["errors"],
        "one_core": pinned,
        "target_deals_per_s": TARGET_DEALS_PER_S,
        "meets_target": max(rates) >= TARGET_DEALS_PER_S,
        "python": sys.version.split()[0],
        "pyarrow": pa.__version__,
    }
    write_result("bench_normalise" if args.form == "get" else "bench_normalise_list", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
