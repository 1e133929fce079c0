from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from attrs import define as _attrs_define

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.placement_table_partitions import PlacementTablePartitions


T = TypeVar("T", bound="PlacementTable")


@_attrs_define
class PlacementTable:
    """Which Redis deployment holds each of the 256 tenant partitions (a
    tenant's partition: the first byte of the SHA-256 of its id), at a
    revision every change bumps.

        Attributes:
            deployments (list[str]): The deployments, in the order they were added.
            revision (int): Bumped by every change: stores only ever take a newer table.
            partitions (PlacementTablePartitions | Unset): Partitions not on the first deployment (keys: `"0"`–`"255"`),
                with
                theirs; every other partition is on the first.
    """

    deployments: list[str]
    revision: int
    partitions: PlacementTablePartitions | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        deployments = self.deployments

        revision = self.revision

        partitions: dict[str, Any] | Unset = UNSET
        if not isinstance(self.partitions, Unset):
            partitions = self.partitions.to_dict()

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "deployments": deployments,
                "revision": revision,
            }
        )
        if partitions is not UNSET:
            field_dict["partitions"] = partitions

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.placement_table_partitions import PlacementTablePartitions  # noqa: PLC0415

        d = dict(src_dict)
        deployments = cast(list[str], d.pop("deployments"))

        revision = d.pop("revision")

        _partitions = d.pop("partitions", UNSET)
        partitions: PlacementTablePartitions | Unset
        if isinstance(_partitions, Unset):
            partitions = UNSET
        else:
            partitions = PlacementTablePartitions.from_dict(_partitions)

        placement_table = cls(
            deployments=deployments,
            revision=revision,
            partitions=partitions,
        )

        return placement_table
