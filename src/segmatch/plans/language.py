"""The plan language: steps that name what they need, and plans that check them when built.

A :class:`Step` is named after the value it produces. It needs values by reference — an
earlier step's result (``INGEST.result``), one of its attributes (``INGEST.result.plan``), or
one of the run's own values (:data:`RUN_ID` …) — and reads config sections by name. A
:class:`Plan` checks, as it is built, that every reference names a value an earlier step (or
the run) produces, that every attribute exists on the type that step returns, that every
section exists, and that each step's function takes exactly the keywords it is given.

Example:
    >>> double = Step("double", lambda engine, *, x: 2 * x, needs={"x": Ref("x")})
    >>> Plan("example", (double,), finish=print, stop_for_quality=print)
    Traceback (most recent call last):
    ...
    segmatch.errors.PlanError: plan 'example': step 'double' needs x (as 'x'), which no \
earlier step produces (known: input_digest, outputs, previous_model, registry, run_id)
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from segmatch.config import Config
from segmatch.errors import PlanError

T = TypeVar("T")

#: A section name that hands a step the whole config.
WHOLE_CONFIG = "*"


@dataclass(frozen=True)
class Ref:
    """A value a step needs: a step's result or a run's value, then attributes of it.

    ``Ref("ingest").plan.id_column`` is the ``id_column`` of the ``plan`` of the ``ingest``
    step's result; the plan checks each attribute against the types the step declares.
    """

    root: str
    attributes: tuple[str, ...] = ()

    def __getattr__(self, name: str) -> Ref:
        if name.startswith("_"):
            raise AttributeError(name)
        return Ref(self.root, (*self.attributes, name))

    def __str__(self) -> str:
        return ".".join((self.root, *self.attributes))

    def take(self, value: Any) -> Any:
        """The referenced attribute of ``value`` (the root's value)."""
        for attribute in self.attributes:
            value = getattr(value, attribute)
        return value


#: The run's own values, there before any step runs.
RUN_ID = Ref("run_id")
OUTPUTS = Ref("outputs")
REGISTRY = Ref("registry")
INPUT_DIGEST = Ref("input_digest")
#: Fetched only when a step first needs it (from the registry: seconds on MLflow).
PREVIOUS_MODEL = Ref("previous_model")
RUN_VALUES = frozenset(ref.root for ref in (RUN_ID, OUTPUTS, REGISTRY, INPUT_DIGEST))
LAZY_RUN_VALUES = frozenset({PREVIOUS_MODEL.root})


@dataclass(frozen=True)
class Step(Generic[T]):
    """One step of a plan, named after the value it produces.

    ``compute(engine, **sections, **needs)`` makes the value. A ``stage`` is timed, logged
    and recorded; a ``checkpoint`` stage's result may be saved and reused by a rerun whose key
    matches. ``keyed_by`` names values that decide the result without being read (the input's
    digest); ``key_of`` fingerprints the result itself when its inputs do not identify it (ids
    taken from a previous model). ``when`` skips the step (its value is None).
    """

    name: str
    compute: Callable[..., T]
    needs: Mapping[str, Ref] = field(default_factory=dict)
    sections: Mapping[str, str] = field(default_factory=dict)
    stage: bool = True
    checkpoint: bool = False
    when: Callable[[Config, Values], bool] | None = None
    key_of: Callable[[T], Any] | None = None
    keyed_by: tuple[Ref, ...] = ()

    @property
    def result(self) -> Ref:
        """A reference to this step's value, for the steps that need it."""
        return Ref(self.name)

    @property
    def roots(self) -> list[str]:
        """The values whose keys make this step's key: those it reads, then ``keyed_by``."""
        return [*(ref.root for ref in self.needs.values()), *(ref.root for ref in self.keyed_by)]


class Values(dict[str, Any]):
    """A run's values by name; a lazy run value is fetched when a step first needs it."""

    def __init__(self, values: Mapping[str, Any], *, lazy: Mapping[str, Callable[[], Any]]):
        super().__init__(values)
        self.lazy = dict(lazy)

    def resolve(self, ref: Ref) -> Any:
        if ref.root not in self and ref.root in self.lazy:
            self[ref.root] = self.lazy.pop(ref.root)()
        return ref.take(self[ref.root])

    def of(self, step: Step[T]) -> T:
        """The value ``step`` produced (typed as the step's function returns it)."""
        return typing.cast(T, self[step.name])


@dataclass(frozen=True)
class Plan:
    """Steps in order and what finishes the run with their values; checked when built.

    ``provided`` names the values a caller hands the run besides the run's own (scoring:
    the fitted model and the reference segments).
    """

    name: str
    steps: tuple[Step[Any], ...]
    #: ``finish(context, values)``: commit what the steps staged; the run's result.
    finish: Callable[..., Any]
    #: ``stop_for_quality(context, values, error)``: what a run that stopped for data quality
    #: commits (its quarantine); the error to raise.
    stop_for_quality: Callable[..., Exception]
    provided: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        produced: dict[str, Step[Any] | None] = {
            name: None for name in (*RUN_VALUES, *LAZY_RUN_VALUES, *self.provided)
        }
        for step in self.steps:
            if step.name in produced:
                raise PlanError(f"plan {self.name!r}: the name {step.name!r} is given twice")
            for keyword, ref in step.needs.items():
                self._check_reference(step, keyword, ref, produced)
            for ref in step.keyed_by:
                self._check_reference(step, "keyed_by", ref, produced)
            for keyword, section in step.sections.items():
                if section != WHOLE_CONFIG and section not in Config.model_fields:
                    raise PlanError(
                        f"plan {self.name!r}: step {step.name!r} reads config section "
                        f"{section!r} (as {keyword!r}), which the config does not have"
                    )
            self._check_signature(step)
            produced[step.name] = step

    @property
    def stages(self) -> tuple[Step[Any], ...]:
        return tuple(step for step in self.steps if step.stage)

    @property
    def checkpointed(self) -> tuple[str, ...]:
        return tuple(step.name for step in self.steps if step.checkpoint)

    def _check_reference(
        self, step: Step[Any], keyword: str, ref: Ref, produced: Mapping[str, Step[Any] | None]
    ) -> None:
        if ref.root not in produced:
            raise PlanError(
                f"plan {self.name!r}: step {step.name!r} needs {ref} (as {keyword!r}), which no "
                f"earlier step produces (known: {', '.join(sorted(produced))})"
            )
        source = produced[ref.root]
        if source is None or not ref.attributes:
            return
        kind = _returned_type(source.compute)
        for depth, attribute in enumerate(ref.attributes):
            kind = _attribute_type(kind, attribute)
            if kind is None:
                owner = Ref(ref.root, ref.attributes[:depth])
                raise PlanError(
                    f"plan {self.name!r}: step {step.name!r} needs {ref} (as {keyword!r}), but "
                    f"{owner} has no attribute {attribute!r}"
                )

    def _check_signature(self, step: Step[Any]) -> None:
        keywords = {*step.needs, *step.sections}
        try:
            inspect.signature(step.compute).bind(None, **dict.fromkeys(keywords))
        except TypeError as error:
            raise PlanError(
                f"plan {self.name!r}: step {step.name!r} gives its function the keywords "
                f"{sorted(keywords)}: {error}"
            ) from None


def _returned_type(compute: Callable[..., Any]) -> Any:
    return typing.get_type_hints(compute).get("return", Any)


def _attribute_type(kind: Any, attribute: str) -> Any | None:
    """The type of ``kind.attribute`` (Any when ``kind`` says too little to check; None when
    ``kind`` is a class without that attribute)."""
    kind = _without_none(kind)
    if not isinstance(kind, type):
        return Any
    if dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        if attribute in hints:
            return hints[attribute]
    member = inspect.getattr_static(kind, attribute, None)
    if isinstance(member, property) and member.fget is not None:
        return typing.get_type_hints(member.fget).get("return", Any)
    if member is not None:
        return Any
    return None


def _without_none(kind: Any) -> Any:
    """``X | None`` → ``X``; other unions say too little (Any)."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        members = [m for m in typing.get_args(kind) if m is not type(None)]
        return members[0] if len(members) == 1 else Any
    return kind
