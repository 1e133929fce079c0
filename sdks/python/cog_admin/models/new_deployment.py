from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from attrs import define as _attrs_define

T = TypeVar("T", bound="NewDeployment")


@_attrs_define
class NewDeployment:
    """A deployment to add to the placement table.

    Attributes:
        name (str): Its name (1–64 of `a-z A-Z 0-9 _ - .`), as the instances' store
            configuration names it.
    """

    name: str

    def to_dict(self) -> dict[str, Any]:
        name = self.name

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "name": name,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        name = d.pop("name")

        new_deployment = cls(
            name=name,
        )

        return new_deployment
