"""Plans check themselves when built: every reference, attribute, section and keyword."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from helpers import make_config
from segmatch.engines import make_engine
from segmatch.errors import PlanError
from segmatch.pipeline import Pipeline
from segmatch.plans.language import RUN_ID, Plan, Ref, Step
from segmatch.plans.scoring import SCORING
from segmatch.plans.training import INGEST, TRAINING


@dataclass(frozen=True)
class Inner:
    depth: int


@dataclass(frozen=True)
class Made:
    inner: Inner

    @property
    def doubled(self) -> int:
        return 2 * self.inner.depth


def make(engine: object, *, run_id: str) -> Made:
    return Made(Inner(len(run_id)))


def use(engine: object, *, value: object) -> object:
    return value


MAKE = Step("make", make, needs={"run_id": RUN_ID})


def plan_of(*steps: Step) -> Plan:
    return Plan("test", steps, finish=print, stop_for_quality=print)


def test_the_declared_plans_are_checked_and_named_after_their_values():
    assert [step.name for step in TRAINING.stages][:2] == ["ingest", "clean"]
    assert "lookalikes" in {step.name for step in SCORING.steps}
    assert SCORING.provided == {"model", "reference", "reference_version", "known_entities"}


def test_a_reference_to_a_value_no_earlier_step_makes_is_refused():
    later = Step("later", use, needs={"value": Ref("make")})
    with pytest.raises(PlanError, match=r"step 'later' needs make \(as 'value'\), which no"):
        plan_of(later, MAKE)


def test_attributes_are_checked_against_the_types_a_step_returns():
    assert plan_of(MAKE, Step("deep", use, needs={"value": MAKE.result.inner.depth}))
    assert plan_of(MAKE, Step("prop", use, needs={"value": MAKE.result.doubled}))
    wrong = Step("wrong", use, needs={"value": MAKE.result.inner.width})
    with pytest.raises(PlanError, match=r"make\.inner has no attribute 'width'"):
        plan_of(MAKE, wrong)
    with pytest.raises(PlanError, match=r"ingest\.plan has no attribute 'id_columns'"):
        plan_of(INGEST, Step("typo", use, needs={"value": INGEST.result.plan.id_columns}))


def test_sections_and_keywords_are_checked():
    with pytest.raises(PlanError, match="config section 'clusters'"):
        plan_of(MAKE, Step("read", use, needs={"value": MAKE.result}, sections={"c": "clusters"}))
    with pytest.raises(PlanError, match=r"step 'extra' gives its function the keywords"):
        plan_of(MAKE, Step("extra", use, needs={"value": MAKE.result, "more": MAKE.result}))
    with pytest.raises(PlanError, match=r"step 'short' gives its function the keywords \[\]"):
        plan_of(Step("short", use))


def test_a_name_given_twice_is_refused():
    with pytest.raises(PlanError, match="the name 'run_id' is given twice"):
        plan_of(Step("run_id", make, needs={"run_id": RUN_ID}))
    with pytest.raises(PlanError, match="the name 'make' is given twice"):
        plan_of(MAKE, MAKE)


def test_a_run_is_refused_the_values_its_plan_does_not_take(customers_path, tmp_path):

    config = make_config(customers_path, tmp_path / "out")
    with pytest.raises(
        PlanError, match=r"takes the values \['known_entities', 'model', 'reference'"
    ):
        Pipeline(config, make_engine("local"), plan=SCORING, provided={"model": None})
