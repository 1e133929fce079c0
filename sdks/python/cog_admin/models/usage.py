from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

if TYPE_CHECKING:
    from ..models.limit_usage import LimitUsage


T = TypeVar("T", bound="Usage")


@_attrs_define
class Usage:
    """A tenant's standing against each of its limits and quotas.

    Attributes:
        limits (list[LimitUsage]): One entry per limit and quota (the plan's, with the tenant's
            overrides), in the plan's order; empty when it has none
            (unlimited).
        plan (str): Its plan.
        tenant (str): The tenant's id.
    """

    limits: list[LimitUsage]
    plan: str
    tenant: str
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        limits = []
        for limits_item_data in self.limits:
            limits_item = limits_item_data.to_dict()
            limits.append(limits_item)

        plan = self.plan

        tenant = self.tenant

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "limits": limits,
                "plan": plan,
                "tenant": tenant,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.limit_usage import LimitUsage  # noqa: PLC0415

        d = dict(src_dict)
        limits = []
        _limits = d.pop("limits")
        for limits_item_data in _limits:
            limits_item = LimitUsage.from_dict(limits_item_data)

            limits.append(limits_item)

        plan = d.pop("plan")

        tenant = d.pop("tenant")

        usage = cls(
            limits=limits,
            plan=plan,
            tenant=tenant,
        )

        usage.additional_properties = d
        return usage

    @property
    def additional_keys(self) -> list[str]:
        return list(self.additional_properties.keys())

    def __getitem__(self, key: str) -> Any:
        return self.additional_properties[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.additional_properties[key] = value

    def __delitem__(self, key: str) -> None:
        del self.additional_properties[key]

    def __contains__(self, key: str) -> bool:
        return key in self.additional_properties
