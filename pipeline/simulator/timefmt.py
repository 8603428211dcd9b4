"""How the portal renders instants and calendar dates.

Sources: rest module `rest_util.php` (`CRestUtil::ConvertDateTime`, `CRestUtil::ConvertDate`);
REST docs `api-reference/crm/deals/crm-deal-get.md` (example response).

* datetime: `date('c', ts)` in the **server** zone, e.g. `2024-08-30T14:29:00+02:00`.
* date: `date('c', MakeTimeStamp(date) + date("Z"))`: local midnight of the date plus the server's
  **current** UTC offset, rendered in the server zone. On a `-05:00` server 2024-08-30 comes out
  as `2024-08-29T19:00:00-05:00`; in a DST zone the instant can be off by an hour.
"""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_FIXED = re.compile(r"([+-])(\d\d):(\d\d)\Z")
_EPOCH_DATE = dt.date(1970, 1, 1)
#: `THH:MM:` of each minute of a day and `SS` of each second: joining cached text is a third
#: of the cost of formatting three numbers, and every deal carries four datetimes.
_CLOCK_MINUTES = tuple(f"T{m // 60:02d}:{m % 60:02d}:" for m in range(1440))
_CLOCK_SECONDS = tuple(f"{s:02d}" for s in range(60))


def check_zone(spec: str) -> None:
    """Raise ValueError unless `spec` is a fixed offset (`+03:00`) or an IANA zone name."""
    if _FIXED.match(spec):
        return
    try:
        ZoneInfo(spec)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"server_tz {spec!r} is neither an offset like +03:00 nor a known IANA zone name"
        ) from None


class ServerZone:
    """A server time zone: a fixed UTC offset or an IANA zone observing DST."""

    def __init__(self, spec: str, now: float) -> None:
        m = _FIXED.match(spec)
        self.spec = spec
        self._offsets: dict[int, int] = {}
        self._days: dict[int, str] = {}
        self._suffixes: dict[int, str] = {}
        self._dates: dict[dt.date, str] = {}
        self._epoch_days: dict[int, str] = {}
        self._last_ts = -1  # one-entry memo: response timestamps repeat within a second
        self._last_text = ""
        self._fixed: int | None
        if m:
            sign = -1 if m.group(1) == "-" else 1
            self._fixed = sign * (int(m.group(2)) * 3600 + int(m.group(3)) * 60)
            self._zone: dt.tzinfo = dt.timezone(dt.timedelta(seconds=self._fixed))
        else:
            self._fixed = None
            self._zone = ZoneInfo(spec)  # raises for an unknown zone name
        #: The offset `date("Z")` reports "now": frozen when the portal is built so that the
        #: generated data is a pure function of the seed for a given portal start.
        self.current_offset = self.offset_at(now)

    def offset_at(self, ts: float) -> int:
        if self._fixed is not None:
            return self._fixed
        # Zone transitions fall on quarter hours of UTC, so the offset is constant within one.
        bucket = int(ts) // 900
        off = self._offsets.get(bucket)
        if off is None:
            delta = dt.datetime.fromtimestamp(bucket * 900, self._zone).utcoffset()
            off = int(delta.total_seconds()) if delta is not None else 0
            self._offsets[bucket] = off
        return off

    def datetime(self, ts: float) -> str:
        """`date('c', ts)` in the server zone."""
        ts = int(ts)
        if ts == self._last_ts:
            return self._last_text
        off = self._fixed if self._fixed is not None else self.offset_at(ts)
        days, secs = divmod(ts + off, 86400)
        day = self._days.get(days)
        if day is None:
            day = (_EPOCH_DATE + dt.timedelta(days=days)).isoformat()
            self._days[days] = day
        suffix = self._suffixes.get(off)
        if suffix is None:
            suffix = self._suffixes[off] = _offset_text(off)
        minute, second = divmod(secs, 60)
        text = day + _CLOCK_MINUTES[minute] + _CLOCK_SECONDS[second] + suffix
        self._last_ts, self._last_text = ts, text
        return text

    def local_midnight(self, day: dt.date) -> int:
        """Unix time of 00:00 local on `day` (PHP `MakeTimeStamp($date, FORMAT_DATE)`)."""
        if self._fixed is not None:
            return (day - _EPOCH_DATE).days * 86400 - self._fixed
        return int(dt.datetime(day.year, day.month, day.day, tzinfo=self._zone).timestamp())

    def epoch_day(self, day_number: int) -> str:
        """`date()` of the calendar day `day_number` days after 1970-01-01 (cached by int)."""
        text = self._epoch_days.get(day_number)
        if text is None:
            text = self.date(_EPOCH_DATE + dt.timedelta(days=day_number))
            self._epoch_days[day_number] = text
        return text

    def date(self, day: dt.date) -> str:
        """`CRestUtil::ConvertDate`: local midnight plus the current offset, rendered locally."""
        text = self._dates.get(day)
        if text is None:
            text = self._dates[day] = self.datetime(self.local_midnight(day) + self.current_offset)
        return text


def _offset_text(seconds: int) -> str:
    sign = "-" if seconds < 0 else "+"
    seconds = abs(seconds)
    return f"{sign}{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"


__all__ = ["ServerZone"]
