from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from attrs import define as _attrs_define

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.limit_spec import LimitSpec
    from ..models.plugin_limits import PluginLimits


T = TypeVar("T", bound="Plan")


@_attrs_define
class Plan:
    """A subscription plan: the limits its tenants get.

    Attributes:
        cache_budget_bytes (int | None | Unset): The most L1 cache bytes one tenant may hold, in each cache that
            takes it (`Directory::cache_budget`).
        limits (list[LimitSpec] | Unset): Short-window rate limits (GCRA), e.g. 10 per second, burst 20.
        plugin_limits (None | PluginLimits | Unset):
        quotas (list[LimitSpec] | Unset): Long-window quotas (sliding window), e.g. 100 000 per day.
    """

    cache_budget_bytes: int | None | Unset = UNSET
    limits: list[LimitSpec] | Unset = UNSET
    plugin_limits: None | PluginLimits | Unset = UNSET
    quotas: list[LimitSpec] | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        from ..models.plugin_limits import PluginLimits  # noqa: PLC0415

        cache_budget_bytes: int | None | Unset
        if isinstance(self.cache_budget_bytes, Unset):
            cache_budget_bytes = UNSET
        else:
            cache_budget_bytes = self.cache_budget_bytes

        limits: list[dict[str, Any]] | Unset = UNSET
        if not isinstance(self.limits, Unset):
            limits = []
            for limits_item_data in self.limits:
                limits_item = limits_item_data.to_dict()
                limits.append(limits_item)

        plugin_limits: dict[str, Any] | None | Unset
        if isinstance(self.plugin_limits, Unset):
            plugin_limits = UNSET
        elif isinstance(self.plugin_limits, PluginLimits):
            plugin_limits = self.plugin_limits.to_dict()
        else:
            plugin_limits = self.plugin_limits

        quotas: list[dict[str, Any]] | Unset = UNSET
        if not isinstance(self.quotas, Unset):
            quotas = []
            for quotas_item_data in self.quotas:
                quotas_item = quotas_item_data.to_dict()
                quotas.append(quotas_item)

        field_dict: dict[str, Any] = {}

        field_dict.update({})
        if cache_budget_bytes is not UNSET:
            field_dict["cache_budget_bytes"] = cache_budget_bytes
        if limits is not UNSET:
            field_dict["limits"] = limits
        if plugin_limits is not UNSET:
            field_dict["plugin_limits"] = plugin_limits
        if quotas is not UNSET:
            field_dict["quotas"] = quotas

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.limit_spec import LimitSpec  # noqa: PLC0415
        from ..models.plugin_limits import PluginLimits  # noqa: PLC0415

        d = dict(src_dict)

        def _parse_cache_budget_bytes(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        cache_budget_bytes = _parse_cache_budget_bytes(d.pop("cache_budget_bytes", UNSET))

        _limits = d.pop("limits", UNSET)
        limits: list[LimitSpec] | Unset = UNSET
        if _limits is not UNSET:
            limits = []
            for limits_item_data in _limits:
                limits_item = LimitSpec.from_dict(limits_item_data)

                limits.append(limits_item)

        def _parse_plugin_limits(data: object) -> None | PluginLimits | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                plugin_limits_type_0 = PluginLimits.from_dict(data)

                return plugin_limits_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(None | PluginLimits | Unset, data)

        plugin_limits = _parse_plugin_limits(d.pop("plugin_limits", UNSET))

        _quotas = d.pop("quotas", UNSET)
        quotas: list[LimitSpec] | Unset = UNSET
        if _quotas is not UNSET:
            quotas = []
            for quotas_item_data in _quotas:
                quotas_item = LimitSpec.from_dict(quotas_item_data)

                quotas.append(quotas_item)

        plan = cls(
            cache_budget_bytes=cache_budget_bytes,
            limits=limits,
            plugin_limits=plugin_limits,
            quotas=quotas,
        )

        return plan
