from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from attrs import define as _attrs_define

from ..models.status import Status
from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.limit_spec import LimitSpec
    from ..models.tenant_metadata import TenantMetadata


T = TypeVar("T", bound="Tenant")


@_attrs_define
class Tenant:
    """A customer of the API.

    Attributes:
        plan (str): The plan (by name) that decides its limits.
        display_name (str | Unset): For people.
        metadata (TenantMetadata | Unset): Free-form labels.
        overrides (list[LimitSpec] | Unset): Limits that replace the plan's limit of the same name (or add one).
        quota_overrides (list[LimitSpec] | Unset): Quotas that replace the plan's quota of the same name (or add one).
        status (Status | Unset): Whether a tenant's requests are served.
    """

    plan: str
    display_name: str | Unset = UNSET
    metadata: TenantMetadata | Unset = UNSET
    overrides: list[LimitSpec] | Unset = UNSET
    quota_overrides: list[LimitSpec] | Unset = UNSET
    status: Status | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        plan = self.plan

        display_name = self.display_name

        metadata: dict[str, Any] | Unset = UNSET
        if not isinstance(self.metadata, Unset):
            metadata = self.metadata.to_dict()

        overrides: list[dict[str, Any]] | Unset = UNSET
        if not isinstance(self.overrides, Unset):
            overrides = []
            for overrides_item_data in self.overrides:
                overrides_item = overrides_item_data.to_dict()
                overrides.append(overrides_item)

        quota_overrides: list[dict[str, Any]] | Unset = UNSET
        if not isinstance(self.quota_overrides, Unset):
            quota_overrides = []
            for quota_overrides_item_data in self.quota_overrides:
                quota_overrides_item = quota_overrides_item_data.to_dict()
                quota_overrides.append(quota_overrides_item)

        status: str | Unset = UNSET
        if not isinstance(self.status, Unset):
            status = self.status.value

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "plan": plan,
            }
        )
        if display_name is not UNSET:
            field_dict["display_name"] = display_name
        if metadata is not UNSET:
            field_dict["metadata"] = metadata
        if overrides is not UNSET:
            field_dict["overrides"] = overrides
        if quota_overrides is not UNSET:
            field_dict["quota_overrides"] = quota_overrides
        if status is not UNSET:
            field_dict["status"] = status

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.limit_spec import LimitSpec  # noqa: PLC0415
        from ..models.tenant_metadata import TenantMetadata  # noqa: PLC0415

        d = dict(src_dict)
        plan = d.pop("plan")

        display_name = d.pop("display_name", UNSET)

        _metadata = d.pop("metadata", UNSET)
        metadata: TenantMetadata | Unset
        if isinstance(_metadata, Unset):
            metadata = UNSET
        else:
            metadata = TenantMetadata.from_dict(_metadata)

        _overrides = d.pop("overrides", UNSET)
        overrides: list[LimitSpec] | Unset = UNSET
        if _overrides is not UNSET:
            overrides = []
            for overrides_item_data in _overrides:
                overrides_item = LimitSpec.from_dict(overrides_item_data)

                overrides.append(overrides_item)

        _quota_overrides = d.pop("quota_overrides", UNSET)
        quota_overrides: list[LimitSpec] | Unset = UNSET
        if _quota_overrides is not UNSET:
            quota_overrides = []
            for quota_overrides_item_data in _quota_overrides:
                quota_overrides_item = LimitSpec.from_dict(quota_overrides_item_data)

                quota_overrides.append(quota_overrides_item)

        _status = d.pop("status", UNSET)
        status: Status | Unset
        if isinstance(_status, Unset):
            status = UNSET
        else:
            status = Status(_status)

        tenant = cls(
            plan=plan,
            display_name=display_name,
            metadata=metadata,
            overrides=overrides,
            quota_overrides=quota_overrides,
            status=status,
        )

        return tenant
