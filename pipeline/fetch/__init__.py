"""The fetch stage: deal IDs in, one DealFetched or DealFailed per ID out.

Modules, one job each:

    wire        the transport seam: HttpTransport protocol, HttpResponse, MockTransport
    transport   the only aiohttp user: session, TLS, timeouts, redirects, error mapping
    auth        webhook URL or OAuth pair (single-flight refresh, rotated tokens handed back)
    classify    pure: an error answer -> what to do next
    batch       pure: batch request building and answer splitting
    sections    pure: a list batch answer decoded one command's section at a time
    retry       pure: backoff policy
    pacing      rate limit (leaky bucket, shared 503 back-off, adapts to a shared bucket) and
                operating budget per method; live wait figures; all on the injected clock
    client      PortalClient: one attempt end to end; `call()` with retries; takes any
                HttpTransport (`http=`, the aiohttp one by default)
    engine      fetch_deals / fetch_batches / discover_modified_ids
    stats       counters for the run summary

Example:

    async with PortalClient(WebhookAuth(url), limits=LimitsConfig.for_plan("standard"),
                            on_tokens_rotated=save_tokens) as client:
        fields = await client.call(client.entity.fields_method)
        async with aclosing(fetch_deals(ids, client)) as outcomes:
            async for outcome in outcomes:        # DealFetched | DealFailed, one per ID
                ...
        client.stats.as_dict()                    # requests, 503s, 429s, waits, ...
"""

from pipeline.fetch.client import PortalClient
from pipeline.fetch.engine import (
    LIMIT_RETRIES_EXHAUSTED,
    RETRIES_EXHAUSTED,
    discover_modified_ids,
    fetch_batches,
    fetch_deals,
)
from pipeline.fetch.stats import FetchStats

__all__ = [
    "LIMIT_RETRIES_EXHAUSTED",
    "RETRIES_EXHAUSTED",
    "FetchStats",
    "PortalClient",
    "discover_modified_ids",
    "fetch_batches",
    "fetch_deals",
]
