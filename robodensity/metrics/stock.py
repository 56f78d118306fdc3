"""IFR-comparable operational stock of industrial robots from annual installations.

The International Federation of Robotics (World Robotics) estimates the operational stock
by assuming an average service life of 12 years with immediate withdrawal afterwards: the
stock at the end of year *y* is the sum of installations in years *y-11 .. y*.
"""

from __future__ import annotations

import numpy as np

IFR_SERVICE_LIFE = 12
"""IFR's assumed average service life of an industrial robot [years]."""


def ifr_operational_stock(
    years: object,
    installations: object,
    service_life: int = IFR_SERVICE_LIFE,
    initial_stock: float | None = None,
) -> np.ndarray:
    """Operational stock by the IFR method: installations of the last ``service_life`` years.

    Parameters
    ----------
    years : array_like of int
        Consecutive calendar years, ascending [year].
    installations : array_like
        Robots installed in each year [robots]; NaN for an unknown year propagates.
    service_life : int
        Years a robot stays in operation [years]; IFR uses 12.
    initial_stock : float, optional
        Operational stock at the end of the year before ``years[0]`` [robots].

    Returns
    -------
    numpy.ndarray of float64, same shape as ``years``
        Operational stock at the end of each year [robots]:
        ``stock[y] = sum(installations[y - service_life + 1 .. y])``.

    Notes
    -----
    Start of the series: the first ``service_life - 1`` years need installations from
    before the series.

    * ``initial_stock=None`` (default): those years are NaN -- the stock is undefined
      rather than silently too low. Pass at least ``service_life`` years of installations
      to get a value for the last year.
    * ``initial_stock`` given: it is taken as ``service_life`` equal vintages installed in
      the ``service_life`` years before the series, so ``initial_stock / service_life``
      retires each year until it is gone after ``service_life`` years.

    Examples
    --------
    >>> ifr_operational_stock([2020, 2021, 2022], [1, 2, 4], service_life=2)
    array([nan,  3.,  6.])
    """
    y = np.asarray(years, dtype=np.int64).ravel()
    inst = np.asarray(installations, dtype=np.float64).ravel()
    if y.shape != inst.shape:
        raise ValueError(f"years has {y.size} values, installations {inst.size}")
    if service_life < 1:
        raise ValueError(f"service_life must be at least 1 year; got {service_life}")
    if len(y) > 1 and np.any(np.diff(y) != 1):
        raise ValueError("years must be consecutive and ascending")
    n = len(inst)
    csum = np.concatenate(([0.0], np.cumsum(inst)))
    idx = np.arange(n)
    lo = np.maximum(idx - service_life + 1, 0)
    stock = csum[idx + 1] - csum[lo]
    if initial_stock is None:
        stock[idx < service_life - 1] = np.nan
    else:
        remaining = np.clip(service_life - 1 - idx, 0, None) / service_life
        stock += float(initial_stock) * remaining
    return stock
