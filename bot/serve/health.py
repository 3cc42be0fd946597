"""`GET /healthz` and `GET /metrics`, on the process's HTTP server in every mode (the
webhook's server, or the dashboard's next to long polling).

/healthz: whether the database answers, whether the dispatcher is alive, whether this
process leads (polls and delivers) or stands by, and how late the longest-waiting due
message is; 200 when the database and the dispatcher are fine, else 503.

/metrics: Prometheus' text format (the `prometheus-client` library), one registry per
process: messages by outcome and priority as their outcomes are recorded, 429 answers,
the delivery lateness and claim duration histograms, and, read from the database at each
scrape, the queue (pending, due now, the oldest due message's lateness), the patients by
state, and whether this process leads. Loaded only when the process serves HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from bot.context import Services
from scheduler import health
from scheduler.models import Priority

_PRIORITIES = {
    Priority.REPLY: "reply",
    Priority.REMINDER: "reminder",
    Priority.BROADCAST: "broadcast",
}
_OUTCOMES = {"pending": "retry"}  # a row back to pending is a send to try again


class Metrics:
    """The process's metrics, counted as the dispatcher records outcomes (it is the
    dispatcher's `DeliveryObserver`) and read from the database at each scrape."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()

        # Every metric counts in this process's registry.
        def counter(name: str, documentation: str, *labels: str) -> Counter:
            return Counter(name, documentation, labels, registry=registry)

        def gauge(name: str, documentation: str, *labels: str) -> Gauge:
            return Gauge(name, documentation, labels, registry=registry)

        def histogram(name: str, documentation: str, buckets: Sequence[float]) -> Histogram:
            return Histogram(name, documentation, buckets=buckets, registry=registry)

        self.messages = counter(
            "aftercare_messages",
            "Sends by outcome (sent, retry, expired, failed, blocked) and priority, once recorded",
            "outcome",
            "priority",
        )
        self.expired_unsent = counter(
            "aftercare_messages_expired_unsent",
            "Pending messages that expired before they could be sent",
        )
        self.throttled = counter(
            "aftercare_telegram_throttled", "Sends Telegram answered with 429 (too many requests)"
        )
        self.lateness = histogram(
            "aftercare_delivery_lateness_seconds",
            "How long after its due time a message was sent",
            (0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600),
        )
        self.claim = histogram(
            "aftercare_claim_duration_seconds",
            "One claim of due messages (the expiry sweep included)",
            (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
        )
        self.leader = gauge(
            "aftercare_leader",
            "1 while this process leads (polls and delivers), 0 while it stands by",
        )
        self.pending = gauge("aftercare_queue_pending", "Planned messages waiting")
        self.due = gauge("aftercare_queue_due", "Planned messages due now")
        self.oldest = gauge(
            "aftercare_queue_oldest_due_lateness_seconds",
            "How late the longest-waiting due message is",
        )
        self.patients = gauge("aftercare_patients", "Patients by state", "state")

    # -- the dispatcher's observer -----------------------------------------------------------

    def claimed(self, *, seconds: float, rows: int) -> None:  # noqa: ARG002
        self.claim.observe(seconds)

    def expired(self, count: int) -> None:
        if count:
            self.expired_unsent.inc(count)

    def recorded(
        self, *, priority: int, state: str, lateness: float | None, throttled: bool
    ) -> None:
        outcome = _OUTCOMES.get(state, state)
        self.messages.labels(outcome, _PRIORITIES.get(priority, str(priority))).inc()
        if lateness is not None:
            self.lateness.observe(max(lateness, 0.0))
        if throttled:
            self.throttled.inc()

    # -- at a scrape -------------------------------------------------------------------------

    async def exposition(self, services: Services) -> bytes:
        """The metrics now, the database's figures read first."""
        now = services.clock.now()
        async with services.sessions() as db:
            queue = await health.queue(session=db, now=now)
            patients = await health.patients_by_state(session=db)
        self.pending.set(queue.pending)
        self.due.set(queue.due)
        self.oldest.set(health.lateness(queue.oldest_due, now))
        for state, count in patients.items():
            self.patients.labels(state).set(count)
        dispatcher = services.dispatcher
        self.leader.set(1 if dispatcher is not None and dispatcher.active else 0)
        return generate_latest(self.registry)


async def health_report(services: Services) -> dict[str, Any]:
    """Whether the database answers and the dispatcher is alive (`ok` is both), whether this
    process leads, and how late the longest-waiting due message is."""
    lateness: float | None = None
    try:  # the one query is the database's check too
        async with asyncio.timeout(3), services.sessions() as db:
            now = services.clock.now()
            lateness = health.lateness(await health.oldest_due(session=db, now=now), now)
        database = True
    except Exception:
        database = False
    dispatcher = services.dispatcher.health() if services.dispatcher else {"alive": False}
    ok = database and bool(dispatcher["alive"])
    return {
        "ok": ok,
        "database": database,
        "dispatcher": dispatcher,
        "role": "leader" if dispatcher.get("active") else "stand-by",
        "oldest_due_lateness_seconds": lateness,
    }


def add_health_routes(app: web.Application, services: Services) -> None:
    """/healthz, and /metrics when the services count them (`services.metrics`)."""

    async def healthz(_request: web.Request) -> web.Response:
        report = await health_report(services)
        return web.json_response(report, status=200 if report["ok"] else 503)

    async def metrics(_request: web.Request) -> web.Response:
        assert services.metrics is not None
        body = await services.metrics.exposition(services)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    if services.metrics is not None:
        app.router.add_get("/metrics", metrics)
