from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="LimitUsage")


@_attrs_define
class LimitUsage:
    """Where a tenant stands against one limit.

    Attributes:
        limit (int): The most it admits in its window (its burst, for a rate limit).
        name (str): The limit's name.
        policy (str): The policy, for people: `10/1s burst 20`, `100/1d sliding`,
            `5 in flight`.
        remaining (int): Units still available now.
        reset_after_ms (int): Milliseconds until it is fully available again.
    """

    limit: int
    name: str
    policy: str
    remaining: int
    reset_after_ms: int
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        limit = self.limit

        name = self.name

        policy = self.policy

        remaining = self.remaining

        reset_after_ms = self.reset_after_ms

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "limit": limit,
                "name": name,
                "policy": policy,
                "remaining": remaining,
                "reset_after_ms": reset_after_ms,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        limit = d.pop("limit")

        name = d.pop("name")

        policy = d.pop("policy")

        remaining = d.pop("remaining")

        reset_after_ms = d.pop("reset_after_ms")

        limit_usage = cls(
            limit=limit,
            name=name,
            policy=policy,
            remaining=remaining,
            reset_after_ms=reset_after_ms,
        )

        limit_usage.additional_properties = d
        return limit_usage

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
