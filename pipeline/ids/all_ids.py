"""Every deal ID the portal holds, listed cheaply: what deletion detection compares a table with.

    ids = await list_all_ids(client)            # array("q"), ascending, unique

One `crm.<entity>.list` page is `select=["ID"]`, `order={"ID": "ASC"}`, `filter={">ID": last}`,
`start=-1`: keyset paging without the count query (REST docs `settings/performance/huge-data.md`:
stop at a page of fewer than 50 rows). Several pages travel in one `batch`, chained: page k+1's
bound is `$result[p<k>][49][ID]`, the last row of page k, which the server substitutes before it
runs page k+1 (REST docs `settings/how-to-call-rest-api/batch.md`, "Связанные вызовы", and its
note that a list result is indexed by row; server code: rest module `rest_util.php`
`CRestUtil::processBatchElement`). So a portal of N deals costs about ceil(N / 50 / pages) HTTP
requests (one more when N is an exact multiple of 50 x pages: a full last page cannot tell the
end).

What a chained page is trusted with: only a page whose predecessor was full (50 rows) and
answered; after a short, failed or missing page the rest of the batch is dropped (the server
leaves a reference it cannot resolve half-substituted, so those pages mean nothing), and the
next batch starts after the last ID already taken. A chained page whose rows do not all lie
above that ID, or that alone is refused, means the server did not substitute the reference:
the listing goes on with one page per request rather than trust it.

Deleted and hidden deals are silently absent from list answers (crm `restservice.php`
`innerGetList`), which is exactly why a missing ID is only a candidate: `pipeline.deletes`.
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlencode

from pipeline.entity import DEAL
from pipeline.errors import FatalPortalError, OperatingLimited, RateLimited, TransientError
from pipeline.fetch.batch import CommandError, as_section, parse_error
from pipeline.fetch.classify import Action, classify, fatal_hint
from pipeline.fetch.client import PortalClient, answer_of
from pipeline.fetch.decide import NOT_EXECUTED, IdState, Next, decide_call
from pipeline.logs import log_event

#: Rows per list page: fixed by the server (REST docs `crm-deal-list.md`).
PAGE_SIZE: Final = 50
#: Commands per batch (server constant `CRestUtil::BATCH_MAX_LENGTH`).
MAX_PAGES_PER_BATCH: Final = 50
DEFAULT_PAGES_PER_BATCH: Final = 50

_log = logging.getLogger("pipeline.ids.all_ids")


@dataclass(slots=True)
class _Listing:
    """Where the listing stands: IDs taken so far, the last of them, and whether chained pages
    are still believed."""

    ids: array[int]
    last: int = 0
    done: bool = False
    chained: bool = True


def page_key(index: int) -> str:
    """Batch key of the page at `index`: non-numeric, so PHP keeps the sections objects."""
    return f"p{index}"


def page_command(bound: int | str, method: str = DEAL.list_method) -> str:
    """One `cmd` entry listing the 50 IDs after `bound` (an ID, or a `$result[...]` reference)."""
    query = urlencode(
        {
            "select[0]": "ID",
            "order[ID]": "ASC",
            "filter[>ID]": str(bound),
            "start": "-1",
        }
    )
    return f"{method}?{query}"


def build_list_batch(last: int, pages: int, method: str = DEAL.list_method) -> dict[str, Any]:
    """The JSON body of one `batch` of `pages` chained list pages after ID `last`."""
    if not 1 <= pages <= MAX_PAGES_PER_BATCH:
        raise ValueError(f"a batch carries 1..{MAX_PAGES_PER_BATCH} pages")
    cmd = {page_key(0): page_command(last, method)}
    for k in range(1, pages):
        cmd[page_key(k)] = page_command(f"$result[{page_key(k - 1)}][{PAGE_SIZE - 1}][ID]", method)
    return {"halt": 0, "cmd": cmd}


async def list_all_ids(
    client: PortalClient, *, pages_per_batch: int = DEFAULT_PAGES_PER_BATCH
) -> array[int]:
    """Every deal ID the webhook user can list, ascending and unique.

    Raises FatalPortalError when the portal refuses the listing or answers something that is
    not a usable page (a listing with holes would mark live deals deleted), and the last
    TransientError once the attempt budget of one call is spent.
    """
    if not 1 <= pages_per_batch <= MAX_PAGES_PER_BATCH:
        raise ValueError(f"pages_per_batch must be 1..{MAX_PAGES_PER_BATCH}")
    listing = _Listing(array("q"))
    state = IdState()
    while not listing.done:
        pages = pages_per_batch if listing.chained else 1
        before = len(listing.ids)
        try:
            await _one_batch(client, listing, pages)
        except TransientError as exc:
            # Attempts are counted per stretch without progress: a long listing with a fault
            # now and then must not run out of them.
            fresh = IdState() if len(listing.ids) > before else state
            state = await _after_fault(client, fresh, exc)
            continue
        state = IdState()
    return listing.ids


async def _after_fault(client: PortalClient, state: IdState, exc: TransientError) -> IdState:
    """Wait as the retry core says after a failed listing request (limits spend no attempt),
    or give up with the error."""
    if isinstance(exc, OperatingLimited):
        # Pause the method this listing draws on (for a whole-request 429 the client paused
        # crm.<entity>.get's budget, the one its batches usually carry).
        client.pacer.budget(client.entity.list_method).on_limited(
            status=exc.http_status, code=exc.code
        )
    decision = decide_call(state, answer_of(exc), client.retry_budget)
    if decision.next is Next.FAIL:
        raise exc
    if decision.next is Next.RETRY:
        client.stats.retries += 1
        await client.clock.sleep(client.retry.delay(decision.state.attempts))
    return decision.state


async def _one_batch(client: PortalClient, listing: _Listing, pages: int) -> None:
    """Send one batch of chained pages and take what it proves; raises for a failed page once
    the pages before it are taken."""
    body = build_list_batch(listing.last, pages, client.entity.list_method)
    answer = await client.attempt(
        "batch", body, budget_method=client.entity.list_method, commands=pages
    )
    result = answer.body.get("result")
    section = result if isinstance(result, dict) else {}
    keys = list(body["cmd"])
    rows = as_section(section.get("result"), keys)
    errors = as_section(section.get("result_error"), keys)
    for index, key in enumerate(keys):
        if key in errors:
            failure = _command_failure(client, parse_error(errors[key]))
            if index > 0 and isinstance(failure, FatalPortalError):
                # A refusal only the chained pages get points at the reference: one page per
                # request shows whether the portal refuses the listing itself.
                _distrust_chaining(client, listing)
                return
            raise failure
        if key not in rows:
            # Neither answered nor refused: asked again from the same ID, as an attempt, so a
            # portal that keeps skipping it cannot keep us here.
            client.stats.missing_commands += 1
            raise TransientError(
                f"{client.portal}batch: {client.entity.list_method} page {key} was not executed",
                code=NOT_EXECUTED,
            )
        ids = _page_ids(client, rows[key])
        if ids and ids[0] <= listing.last:
            if index == 0:
                raise _bad_list(client, "ignored the >ID paging filter (IDs at or below the bound)")
            _distrust_chaining(client, listing)
            return
        listing.ids.extend(ids)
        if ids:
            listing.last = ids[-1]
        if len(ids) < PAGE_SIZE:
            listing.done = True
            return


def _page_ids(client: PortalClient, page: Any) -> list[int]:
    """The IDs of one page, checked: a list of rows, each with an integer ID, ascending."""
    if isinstance(page, dict) and not page:
        page = []  # PHP's empty array
    if not isinstance(page, list):
        raise _bad_list(client, f"answered a {type(page).__name__}, not a list of deals")
    ids: list[int] = []
    for row in page:
        raw = row.get("ID") if isinstance(row, Mapping) else None
        try:
            deal_id = int(str(raw))
        except ValueError:
            shown = client.mask(str(raw))[:40]
            raise _bad_list(client, f"answered a deal without a usable ID ({shown!r})") from None
        if deal_id <= 0 or (ids and deal_id <= ids[-1]):
            raise _bad_list(client, "answered IDs out of ascending order despite order ID ASC")
        ids.append(deal_id)
    if len(ids) > PAGE_SIZE:
        raise _bad_list(client, f"answered {len(ids)} rows in one page (at most {PAGE_SIZE})")
    return ids


def _distrust_chaining(client: PortalClient, listing: _Listing) -> None:
    listing.chained = False
    log_event(
        _log,
        "list_chaining_off",
        f"{client.portal}batch did not resolve the $result reference between "
        f"{client.entity.list_method} "
        "pages; listing one page per request from now on",
        level=logging.WARNING,
    )


def _command_failure(client: PortalClient, err: CommandError) -> Exception:
    """The error a refused page stands for: limits and faults are retried by the caller (from
    the last ID taken), anything else stops the listing."""
    where = f"{client.portal}batch: {client.entity.list_method}"
    text = client.mask(f"{err.code or '(no code)'}: {err.description}")
    action = classify(err.http_status, err.code, err.description, "command")
    if action is Action.OPERATING_LIMIT:
        # The caller pauses the list budget, as for a whole-request 429.
        client.stats.operating_limited_commands += 1
        return OperatingLimited(f"{where}: {text}", code=err.code)
    if action is Action.RATE_LIMIT:
        client.pacer.rate.on_rate_limited(None, status=None, code=err.code)
        return RateLimited(f"{where}: {text}", code=err.code)
    if action is Action.TRANSIENT:
        return TransientError(f"{where}: {text}", code=err.code)
    # A per-record text for a whole listing (`Access denied.`: the user cannot read the CRM)
    # refuses the listing as surely as a fatal code does.
    return FatalPortalError(
        f"{where} refused: {text}: {fatal_hint(err.code, err.description)}", code=err.code
    )


def _bad_list(client: PortalClient, what: str) -> FatalPortalError:
    return FatalPortalError(
        f"{client.portal}{client.entity.list_method} {what}; "
        f"cannot list the portal's {client.entity.plural} reliably",
        code="BAD_LIST",
    )


__all__ = [
    "DEFAULT_PAGES_PER_BATCH",
    "MAX_PAGES_PER_BATCH",
    "PAGE_SIZE",
    "build_list_batch",
    "list_all_ids",
    "page_command",
    "page_key",
]
