"""Metrics: pure, vectorised functions over numpy arrays (no I/O).

Inputs are arrays sorted by robot, then time, as the database returns them. Loading and
storing live in thin adapters elsewhere.

Modules: :mod:`~metrics.states` (state codes), :mod:`~metrics.state_time` (time in state,
utilisation), :mod:`~metrics.reliability` (MTBF, MTTR, ISO 22400-2 availability, active
robots), :mod:`~metrics.density` (robot density, roll-ups, GB/T 2260 regions),
:mod:`~metrics.stock` (IFR operational stock), :mod:`~metrics.targets` (target progress).

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
``busy_s`` [s]
    Time EXECUTING. ``seconds`` arrays hold time per state, last axis in the order of
    :data:`metrics.states.STATES`.
``utilisation`` [1]
    ``busy_s`` / calendar time.
``availability``, ``utilisation_efficiency`` [1]
    ISO 22400-2: actual production time / planned busy time; actual production time /
    actual unit busy time.
``mtbf_s``, ``mttr_s`` [s]
    Mean operating time between failures; mean time to repair.
``operational_stock`` [robots]
    IFR estimate: installations of the last 12 years.
"""
