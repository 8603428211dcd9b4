"""Where a Delta table lives: the URI deltalake opens and the storage options it needs. Pure.

The folder sink names an S3 root the way pyarrow takes it,
`s3://bucket/prefix?endpoint_override=host:port&scheme=http&region=us-east-1`, with credentials
from the usual AWS environment variables. deltalake's object store (the Rust `object_store`
crate) takes the same facts as storage options instead (`AWS_ENDPOINT_URL`, `AWS_REGION`,
`AWS_ALLOW_HTTP`; see https://docs.rs/object_store/latest/object_store/aws/enum.AmazonS3ConfigKey.html),
so one `--out` value serves both sinks. Credentials are never put into the options: the object
store reads them from the environment itself, so they cannot leak into a message.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from pipeline.errors import OutputError

#: The errors table sits inside the data table's directory. Delta's vacuum never deletes a path
#: whose first component starts with `_` or `.` unless it is a partition directory (delta-rs,
#: crates/core/src/operations/vacuum.rs, `is_hidden_directory`), and optimize only rewrites files
#: the data table's log references; partition directories here are always `<deal field>_<...>=`,
#: which never starts with `_`.
ERRORS_DIR = "_errors"

_S3_QUERY = {"endpoint_override", "scheme", "region"}


@dataclass(frozen=True, slots=True)
class DeltaLocation:
    """A table's URI without query (what deltalake opens), its storage options, and how to
    name it in messages."""

    uri: str
    storage_options: dict[str, str] = field(default_factory=dict)

    @property
    def local(self) -> bool:
        return "://" not in self.uri

    def child(self, name: str) -> DeltaLocation:
        return DeltaLocation(f"{self.uri.rstrip('/')}/{name}", dict(self.storage_options))


def locate(root: str) -> DeltaLocation:
    """The table at `root`: a local path (made absolute) or `s3://...` / `gs://...` / `az://...`."""
    if "://" not in root:
        return DeltaLocation(os.path.abspath(os.path.expanduser(root)))
    parts = urlsplit(root)
    if parts.username or parts.password:
        raise OutputError(
            "put object-store credentials in the environment (AWS_ACCESS_KEY_ID, ...), not in "
            "the --out URI"
        )
    query = dict(parse_qsl(parts.query))
    unknown = sorted(set(query) - _S3_QUERY)
    if unknown:
        raise OutputError(f"{parts.scheme}:// output: unknown URI option(s) {unknown}")
    options: dict[str, str] = {}
    if parts.scheme == "s3":
        options = _s3_options(query)
    elif query:
        raise OutputError(f"{parts.scheme}:// output takes no URI options")
    uri = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    return DeltaLocation(uri, options)


def _s3_options(query: dict[str, str]) -> dict[str, str]:
    options: dict[str, str] = {}
    scheme = query.get("scheme", "https")
    if "endpoint_override" in query:
        endpoint = query["endpoint_override"]
        options["AWS_ENDPOINT_URL"] = endpoint if "://" in endpoint else f"{scheme}://{endpoint}"
    if scheme == "http":
        options["AWS_ALLOW_HTTP"] = "true"
    if "region" in query:
        options["AWS_REGION"] = query["region"]
    return options


def errors_table_uri(out: str) -> str:
    """The URI of the errors table of the Delta output `out` (open it with the same storage
    options as the data table)."""
    return locate(out).child(ERRORS_DIR).uri


__all__ = ["ERRORS_DIR", "DeltaLocation", "errors_table_uri", "locate"]
