"""Prometheus metrics served at /metrics: what arrived or was refused, job and delivery state,
quality-control verdicts of the stored results, and how long jobs take.

Counts of jobs, deliveries and studies are read from the index at scrape time, so they are
right after a restart; instance outcomes and job durations are counted by this process.
Each node has its own registry (tests run several nodes in one process).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from myonode.core.quality import VERDICTS
from myonode.receive.ingest import Outcome
from myonode.store.repository import Store

JOB_STATES = ("queued", "running", "done", "failed")
OUTBOX_STATES = ("pending", "sent", "withheld", "failed")


class _IndexCollector(Collector):
    def __init__(self, index: Store) -> None:
        self.index = index

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = self.index.counts()
        jobs = GaugeMetricFamily("myonode_jobs", "Jobs by state.", labels=["state"])
        for state in JOB_STATES:
            jobs.add_metric([state], counts["jobs"].get(state, 0))
        yield jobs
        outbox = GaugeMetricFamily(
            "myonode_outbox", "Result deliveries by state.", labels=["state"]
        )
        for state in OUTBOX_STATES:
            outbox.add_metric([state], counts["outbox"].get(state, 0))
        yield outbox
        failing = self.index.failing_deliveries()
        yield GaugeMetricFamily(
            "myonode_outbox_failing",
            "Pending deliveries whose last attempt failed (the destination is down or refuses).",
            value=failing,
        )
        yield GaugeMetricFamily(
            "myonode_studies", "Studies in the index.", value=counts["studies"]["total"]
        )
        verdicts = self.index.qc_counts()
        qc = GaugeMetricFamily(
            "myonode_qc_structures",
            "Segmented structures in the stored results, by quality-control verdict.",
            labels=["verdict"],
        )
        for verdict in VERDICTS:
            qc.add_metric([verdict], verdicts.get(verdict, 0))
        yield qc


class Metrics:
    def __init__(self, index: Store) -> None:
        self.registry = CollectorRegistry()
        self.instances = Counter(
            "myonode_instances",
            "Instances received over DICOM, by outcome and C-STORE status.",
            ["outcome", "status"],
            registry=self.registry,
        )
        self.job_seconds = Histogram(
            "myonode_job_duration_seconds",
            "Wall time of pipeline jobs, by pipeline and final state.",
            ["pipeline", "state"],
            buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600),
            registry=self.registry,
        )
        self.registry.register(_IndexCollector(index))

    def instance(self, outcome: Outcome) -> None:
        kind = "refused" if not outcome.ok else "duplicate" if outcome.duplicate else "stored"
        self.instances.labels(kind, f"0x{outcome.status:04X}").inc()

    def job(self, pipeline: str, state: str, seconds: float) -> None:
        self.job_seconds.labels(pipeline, state).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
