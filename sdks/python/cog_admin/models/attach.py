from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, cast

from attrs import define as _attrs_define

from ..types import UNSET, Unset

T = TypeVar("T", bound="Attach")


@_attrs_define
class Attach:
    """Who a plugin runs for.

    Attributes:
        plans (list[str] | Unset): Every tenant on these plans.
        tenants (list[str] | Unset): These tenants.
    """

    plans: list[str] | Unset = UNSET
    tenants: list[str] | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        plans: list[str] | Unset = UNSET
        if not isinstance(self.plans, Unset):
            plans = self.plans

        tenants: list[str] | Unset = UNSET
        if not isinstance(self.tenants, Unset):
            tenants = self.tenants

        field_dict: dict[str, Any] = {}

        field_dict.update({})
        if plans is not UNSET:
            field_dict["plans"] = plans
        if tenants is not UNSET:
            field_dict["tenants"] = tenants

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        plans = cast(list[str], d.pop("plans", UNSET))

        tenants = cast(list[str], d.pop("tenants", UNSET))

        attach = cls(
            plans=plans,
            tenants=tenants,
        )

        return attach
