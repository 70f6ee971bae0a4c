"""Prometheus text exposition, kept tiny: request counts, latency histograms, gauges."""

from __future__ import annotations

import threading
from collections import defaultdict

BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _labels(d: dict) -> str:
    return "{" + ",".join(f'{k}="{str(v).replace(chr(34), "")}"' for k, v in sorted(d.items())) + "}"


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.requests: dict[tuple, int] = defaultdict(int)
        self.buckets: dict[str, list[int]] = defaultdict(lambda: [0] * len(BUCKETS))
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    def observe(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(route, status)] += 1
            self.sums[route] += seconds
            self.counts[route] += 1
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    self.buckets[route][i] += 1

    def render(self, gauges: dict[str, tuple[str, float, dict]]) -> str:
        lines = [
            "# HELP dextr_requests_total HTTP requests by route and status.",
            "# TYPE dextr_requests_total counter",
        ]
        with self._lock:
            for (route, status), n in sorted(self.requests.items()):
                lines.append(f"dextr_requests_total{_labels({'route': route, 'status': status})} {n}")
            lines += [
                "# HELP dextr_request_seconds Request latency by route.",
                "# TYPE dextr_request_seconds histogram",
            ]
            for route in sorted(self.counts):
                for bound, n in zip(BUCKETS, self.buckets[route]):
                    lines.append(f"dextr_request_seconds_bucket{_labels({'route': route, 'le': bound})} {n}")
                lines.append(
                    f"dextr_request_seconds_bucket{_labels({'route': route, 'le': '+Inf'})} {self.counts[route]}"
                )
                lines.append(f"dextr_request_seconds_sum{_labels({'route': route})} {self.sums[route]:.6f}")
                lines.append(f"dextr_request_seconds_count{_labels({'route': route})} {self.counts[route]}")
        for name, (help_text, value, labels) in sorted(gauges.items()):
            lines += [
                f"# HELP {name} {help_text}",
                f"# TYPE {name} gauge",
                f"{name}{_labels(labels) if labels else ''} {value}",
            ]
        return "\n".join(lines) + "\n"
