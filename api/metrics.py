"""A few Prometheus metrics, rendered in the text exposition format (no extra dependency)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.latency: dict[str, list[int]] = defaultdict(lambda: [0] * (len(BUCKETS) + 1))
        self.latency_sum: dict[str, float] = defaultdict(float)
        self.counters: dict[str, float] = defaultdict(float)
        self.gauges: dict[str, Callable[[], float]] = {}
        self.help: dict[str, str] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests[(route, status)] += 1
        counts = self.latency[route]
        for i, b in enumerate(BUCKETS):
            if seconds <= b:
                counts[i] += 1
                break
        else:
            counts[-1] += 1
        self.latency_sum[route] += seconds

    def inc(self, name: str, value: float = 1.0, help_text: str = "") -> None:
        self.counters[name] += value
        if help_text:
            self.help[name] = help_text

    def gauge(self, name: str, fn: Callable[[], float], help_text: str) -> None:
        self.gauges[name] = fn
        self.help[name] = help_text

    def render(self) -> str:
        out = [
            "# HELP drops_http_requests_total HTTP requests by route and status",
            "# TYPE drops_http_requests_total counter",
        ]
        for (route, status), n in sorted(self.requests.items()):
            out.append(f'drops_http_requests_total{{route="{route}",status="{status}"}} {n}')
        out += [
            "# HELP drops_http_request_seconds HTTP request duration (streams: time to start)",
            "# TYPE drops_http_request_seconds histogram",
        ]
        for route, counts in sorted(self.latency.items()):
            acc = 0
            for b, n in zip(BUCKETS, counts, strict=False):
                acc += n
                out.append(f'drops_http_request_seconds_bucket{{route="{route}",le="{b}"}} {acc}')
            acc += counts[-1]
            out.append(f'drops_http_request_seconds_bucket{{route="{route}",le="+Inf"}} {acc}')
            out.append(f'drops_http_request_seconds_count{{route="{route}"}} {acc}')
            out.append(
                f'drops_http_request_seconds_sum{{route="{route}"}} {self.latency_sum[route]:.6f}'
            )
        for name, value in sorted(self.counters.items()):
            out.append(f"# HELP {name} {self.help.get(name, name)}")
            out.append(f"# TYPE {name} counter")
            out.append(f"{name} {value:g}")
        for name, fn in sorted(self.gauges.items()):
            try:
                value = float(fn())
            except Exception:
                continue
            out.append(f"# HELP {name} {self.help.get(name, name)}")
            out.append(f"# TYPE {name} gauge")
            out.append(f"{name} {value:g}")
        return "\n".join(out) + "\n"
