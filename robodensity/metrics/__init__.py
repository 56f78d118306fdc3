"""Metrics: pure, vectorised functions over numpy arrays (no I/O).

Inputs are arrays sorted by robot, then time, as the database returns them. Loading and
storing live in thin adapters elsewhere.

Modules: :mod:`~metrics.states` (state codes), :mod:`~metrics.state_time` (time in state,
the coverage rule, utilisation, attribution to factories), :mod:`~metrics.reliability`
(failures, MTBF, MTTR, ISO 22400-2 availability), :mod:`~metrics.blocks` (the additive
blocks per robot and bucket every figure is summed from), :mod:`~metrics.density` (robot
density, roll-ups, GB/T 2260 regions), :mod:`~metrics.stock` (IFR operational stock),
:mod:`~metrics.targets` (target progress).

Glossary (canonical names, used from SQL columns to panel titles):

``robot_count`` [robots]
    Robots in a group (registered, verified or IFR-comparable).
``employee_count`` [persons]
    Manufacturing employees.
``robot_density`` [robots per 10^4 employees]
    ``robot_count / employee_count * 10_000``; NaN where there are no employees.
``reporting_count`` [robots], ``coverage`` [1]
    Robots whose telemetry reports; coverage = reporting / registered robots.
``domestic_count`` [robots], ``domestic_share`` [1]
    Robots of domestic make; share of registered robots.
``executing_s`` ... ``offline_s``, ``covered_s`` [s]
    Time in each state, covered time only (from a robot's first state event); their sum.
    ``seconds`` arrays hold time per state, last axis in the order of :data:`metrics.states.STATES`.
``planned_s``, ``planned_executing_s``, ``failures``, ``repairs``, ``repair_s``
    The other block columns (:mod:`metrics.blocks`): planned busy time (PBT) and EXECUTING
    time inside it (APT), 24/7 unless the factory has a shift calendar.
``utilisation`` [1]
    Utilisation on planned time, ``planned_executing_s / planned_s``
    (:func:`metrics.reliability.utilisation`); ``executing_s / covered_s`` under 24/7.
``availability`` [1]
    ISO 22400-2: actual production time / planned busy time: the same figure as
    ``utilisation``, by the same function (not a second rule).
``mtbf_s``, ``mttr_s`` [s]
    ``executing_s / (failures + robots)``; ``repair_s / repairs``.
``operational_stock`` [robots]
    IFR estimate: installations of the last 12 years.
"""
