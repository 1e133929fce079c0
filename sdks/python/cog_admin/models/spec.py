from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from attrs import define as _attrs_define

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.spec_plans import SpecPlans
    from ..models.spec_plugins import SpecPlugins
    from ..models.spec_tenants import SpecTenants


T = TypeVar("T", bound="Spec")


@_attrs_define
class Spec:
    """The declarative part of the control plane: what a YAML/TOML file holds.

    Attributes:
        plans (SpecPlans | Unset): Plans by name.
        plugins (SpecPlugins | Unset): Plugins by name.
        schema (int | Unset): Format version ([`SCHEMA_VERSION`]).
        tenants (SpecTenants | Unset): Tenants by id.
    """

    plans: SpecPlans | Unset = UNSET
    plugins: SpecPlugins | Unset = UNSET
    schema: int | Unset = UNSET
    tenants: SpecTenants | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        plans: dict[str, Any] | Unset = UNSET
        if not isinstance(self.plans, Unset):
            plans = self.plans.to_dict()

        plugins: dict[str, Any] | Unset = UNSET
        if not isinstance(self.plugins, Unset):
            plugins = self.plugins.to_dict()

        schema = self.schema

        tenants: dict[str, Any] | Unset = UNSET
        if not isinstance(self.tenants, Unset):
            tenants = self.tenants.to_dict()

        field_dict: dict[str, Any] = {}

        field_dict.update({})
        if plans is not UNSET:
            field_dict["plans"] = plans
        if plugins is not UNSET:
            field_dict["plugins"] = plugins
        if schema is not UNSET:
            field_dict["schema"] = schema
        if tenants is not UNSET:
            field_dict["tenants"] = tenants

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.spec_plans import SpecPlans  # noqa: PLC0415
        from ..models.spec_plugins import SpecPlugins  # noqa: PLC0415
        from ..models.spec_tenants import SpecTenants  # noqa: PLC0415

        d = dict(src_dict)
        _plans = d.pop("plans", UNSET)
        plans: SpecPlans | Unset
        if isinstance(_plans, Unset):
            plans = UNSET
        else:
            plans = SpecPlans.from_dict(_plans)

        _plugins = d.pop("plugins", UNSET)
        plugins: SpecPlugins | Unset
        if isinstance(_plugins, Unset):
            plugins = UNSET
        else:
            plugins = SpecPlugins.from_dict(_plugins)

        schema = d.pop("schema", UNSET)

        _tenants = d.pop("tenants", UNSET)
        tenants: SpecTenants | Unset
        if isinstance(_tenants, Unset):
            tenants = UNSET
        else:
            tenants = SpecTenants.from_dict(_tenants)

        spec = cls(
            plans=plans,
            plugins=plugins,
            schema=schema,
            tenants=tenants,
        )

        return spec
