"""Batch: a durable ``map`` of any Python function on any backend."""

from __future__ import annotations

from altus.batch.executor import Executor
from altus.batch.job import Job, JobSummary, TaskErrorInfo, TaskLogs, jobs
from altus.batch.knot import Knot

__all__ = ["Executor", "Job", "JobSummary", "Knot", "TaskErrorInfo", "TaskLogs", "jobs"]
