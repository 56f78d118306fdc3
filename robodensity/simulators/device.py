"""What every simulated controller that can be switched off shares: ``async with`` is its power."""

from __future__ import annotations

from typing import Self


class SwitchedDevice:
    """Powered on for the length of an ``async with``; fault tests call power_off/power_on directly."""

    async def power_on(self) -> None:
        raise NotImplementedError

    async def power_off(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.power_on()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.power_off()
