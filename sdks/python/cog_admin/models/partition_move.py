from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from attrs import define as _attrs_define

T = TypeVar("T", bound="PartitionMove")


@_attrs_define
class PartitionMove:
    """Where a partition goes.

    Attributes:
        deployment (str): A deployment of the table.
    """

    deployment: str

    def to_dict(self) -> dict[str, Any]:
        deployment = self.deployment

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "deployment": deployment,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        deployment = d.pop("deployment")

        partition_move = cls(
            deployment=deployment,
        )

        return partition_move
