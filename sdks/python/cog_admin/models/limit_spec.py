from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, cast

from attrs import define as _attrs_define

from ..types import UNSET, Unset

T = TypeVar("T", bound="LimitSpec")


@_attrs_define
class LimitSpec:
    """One named limit: `rate` units per `window`, up to `burst` at once, each
    request costing `cost` units.

        Attributes:
            name (str): Shown in the `RateLimit-Policy` header; unique within a plan.
            rate (int): Units per window.
            window (str): A duration: a whole number and a unit, `ms`, `s`, `m`, `h` or `d`.
            burst (int | None | Unset): Units that can be spent at once (default: `rate`).
            cost (int | None | Unset): Units one request costs (default 1) — on every limit and quota of
                the plan: a request costs the largest `cost` any of them gives, so
                it must fit in each one's burst (a quota's rate).
    """

    name: str
    rate: int
    window: str
    burst: int | None | Unset = UNSET
    cost: int | None | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        name = self.name

        rate = self.rate

        window = self.window

        burst: int | None | Unset
        if isinstance(self.burst, Unset):
            burst = UNSET
        else:
            burst = self.burst

        cost: int | None | Unset
        if isinstance(self.cost, Unset):
            cost = UNSET
        else:
            cost = self.cost

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "name": name,
                "rate": rate,
                "window": window,
            }
        )
        if burst is not UNSET:
            field_dict["burst"] = burst
        if cost is not UNSET:
            field_dict["cost"] = cost

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        name = d.pop("name")

        rate = d.pop("rate")

        window = d.pop("window")

        def _parse_burst(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        burst = _parse_burst(d.pop("burst", UNSET))

        def _parse_cost(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        cost = _parse_cost(d.pop("cost", UNSET))

        limit_spec = cls(
            name=name,
            rate=rate,
            window=window,
            burst=burst,
            cost=cost,
        )

        return limit_spec
