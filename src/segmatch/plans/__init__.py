"""The runs segmatch knows, declared as plans of steps: training and scoring.

Modules:
    language: :class:`Step`, :class:`Ref` and :class:`Plan`, checked when a plan is built.
    context: what a run has besides its values (:class:`RunContext`) and model registries.
    commit: the run's tables committed as one unit under the output's lease.
    training, scoring: the two plans.
"""
