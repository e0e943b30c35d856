"""``drops rebaseline``: ask the processor for a new baseline of some streams, on purpose.

A stream's baseline is the snapshot taken when its bucket entered the window, and nothing
replaces it by itself (no restart, redeploy or rebalance). When it is wrong for a reason the
pipeline cannot see (a provider changed its listing, e.g. a venue's whole calendar was
re-published; the baseline build of a bucket was taken while the provider served a broken
answer), the operator writes a ``kind="rebaseline"`` marker per stream; the processor makes
the stream's next snapshot its new baseline. Slots open at that snapshot are not reported.

The markers go to the snapshot topic with the stream key, through the producers' writer (the
murmur2 partitioner), so each lands in its stream's partition, in order with its snapshots.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from domain.calendar import parse_slide_at, window
from drops.log import get_log
from drops.stages import ProducerSettings
from producers import config, core
from producers.kafka import Writer
from schemas.ids import parse_bucket_id

log = get_log("producer.rebaseline")


def plan(
    settings: ProducerSettings,
    buckets: list[str],
    market: str = "",
    provider: str = "",
    now: datetime | None = None,
) -> list[tuple[core.Job, str]]:
    """The streams to rebaseline and each one's market: ``buckets`` (ids; their markets come
    from the ids), or every bucket of ``market``'s current window."""
    conf = config.load(settings)
    markets = {m.name: m for m in conf.markets}
    wanted: dict[str, set[str]] = {}
    if buckets:
        for bid in buckets:
            try:
                name = parse_bucket_id(bid)[0]
            except ValueError:
                raise ValueError(f"not a bucket id (market:YYYY-MM-DD:HHMM): {bid!r}") from None
            wanted.setdefault(name, set()).add(bid)
    elif market:
        wanted[market] = set()
    else:
        raise ValueError("name the buckets (--bucket) or a market (--market)")
    now = now or datetime.now(UTC)
    out: list[tuple[core.Job, str]] = []
    for name, ids in wanted.items():
        m = markets.get(name)
        if m is None:
            raise ValueError(f"market {name!r} is not configured ({', '.join(markets)})")
        tz = ZoneInfo(m.time_zone)
        win = window(now, m.name, tz, m.days, m.time_slots, parse_slide_at(m.slide_at))
        out += [(j, m.name) for j in core.rebaseline_targets(win, m.providers, ids, provider)]
    return out


def run(
    settings: ProducerSettings, buckets: list[str], market: str = "", provider: str = ""
) -> list[str]:
    """Write one marker per stream; returns their stream keys."""
    jobs = plan(settings, buckets, market, provider)
    writer = Writer(settings)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    for job, name in jobs:
        sid = f"rebaseline-{now_ms:x}-{uuid.uuid4().hex[:8]}"
        value = core.marker_record("rebaseline", job.bucket, job.provider, name, sid, now_ms)
        writer.write(settings.topics.snapshots, job.key, value)
    left = writer.flush(30.0)
    if left or writer.errors:
        raise RuntimeError(f"{left + writer.errors} rebaseline markers were not written")
    keys = [job.key for job, _ in jobs]
    log.info("rebaseline_requested", streams=len(keys), keys=keys[:10])
    return keys
