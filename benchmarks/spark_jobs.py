"""What a classic Spark session ran, by segmatch stage: jobs, Spark stages run (each reads its
input once: a pass over some rows), stages skipped (their output reused) and tasks.

segmatch tags every job a stage starts with ``segmatch-<stage>`` (a session tag), and the
whole run's with ``segmatch-run-<run id>``: jobs with that tag alone ran between the stages
or in the commit, jobs with no tag before or after the run (output checks, Delta's log).
Read from Spark's own status store through the JVM gateway, so classic sessions only: a
Connect client has no SparkContext to ask.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any


def _items(scala_iterable: Any) -> list[Any]:
    values, iterator = [], scala_iterable.iterator()
    while iterator.hasNext():
        values.append(iterator.next())
    return values


def jobs_by_stage(spark: Any) -> dict[str, dict[str, int]]:
    """Per segmatch stage (and between stages, and before and after the run): jobs, Spark
    stages run and skipped, and tasks run."""
    store = spark.sparkContext._jsc.sc().statusStore()
    counts: dict[str, dict[str, int]] = defaultdict(
        lambda: {"jobs": 0, "spark_stages": 0, "skipped": 0, "tasks": 0}
    )
    for job in _items(store.jobsList(None)):
        tags = [str(t) for t in _items(job.jobTags())]
        named = [t.split("segmatch-", 1)[1] for t in tags if "segmatch-" in t]
        stage = next((n for n in named if not n.startswith("run-")), None)
        if stage is None:
            stage = "between stages and commit" if named else "before and after the run"
        entry = counts[stage]
        entry["jobs"] += 1
        for stage_id in _items(job.stageIds()):
            data = store.lastStageAttempt(stage_id)
            if str(data.status().toString()) == "SKIPPED":
                entry["skipped"] += 1
            else:
                entry["spark_stages"] += 1
                entry["tasks"] += int(data.numTasks())
    return dict(counts)
