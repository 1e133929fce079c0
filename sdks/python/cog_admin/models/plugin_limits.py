from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, cast

from attrs import define as _attrs_define

from ..types import UNSET, Unset

T = TypeVar("T", bound="PluginLimits")


@_attrs_define
class PluginLimits:
    """Limits for a plan's plugins (each unset one keeps the sandbox default).

    Attributes:
        deadline (None | str | Unset):
        fuel (int | None | Unset): Metering points per call.
        kv_bytes (int | None | Unset): Bytes of keys and values together one (tenant, plugin) KV scope may
            hold.
        kv_entries (int | None | Unset): KV entries one (tenant, plugin) scope may hold.
        memory_bytes (int | None | Unset): Linear memory cap in bytes.
    """

    deadline: None | str | Unset = UNSET
    fuel: int | None | Unset = UNSET
    kv_bytes: int | None | Unset = UNSET
    kv_entries: int | None | Unset = UNSET
    memory_bytes: int | None | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        deadline: None | str | Unset
        if isinstance(self.deadline, Unset):
            deadline = UNSET
        else:
            deadline = self.deadline

        fuel: int | None | Unset
        if isinstance(self.fuel, Unset):
            fuel = UNSET
        else:
            fuel = self.fuel

        kv_bytes: int | None | Unset
        if isinstance(self.kv_bytes, Unset):
            kv_bytes = UNSET
        else:
            kv_bytes = self.kv_bytes

        kv_entries: int | None | Unset
        if isinstance(self.kv_entries, Unset):
            kv_entries = UNSET
        else:
            kv_entries = self.kv_entries

        memory_bytes: int | None | Unset
        if isinstance(self.memory_bytes, Unset):
            memory_bytes = UNSET
        else:
            memory_bytes = self.memory_bytes

        field_dict: dict[str, Any] = {}

        field_dict.update({})
        if deadline is not UNSET:
            field_dict["deadline"] = deadline
        if fuel is not UNSET:
            field_dict["fuel"] = fuel
        if kv_bytes is not UNSET:
            field_dict["kv_bytes"] = kv_bytes
        if kv_entries is not UNSET:
            field_dict["kv_entries"] = kv_entries
        if memory_bytes is not UNSET:
            field_dict["memory_bytes"] = memory_bytes

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)

        def _parse_deadline(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        deadline = _parse_deadline(d.pop("deadline", UNSET))

        def _parse_fuel(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        fuel = _parse_fuel(d.pop("fuel", UNSET))

        def _parse_kv_bytes(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        kv_bytes = _parse_kv_bytes(d.pop("kv_bytes", UNSET))

        def _parse_kv_entries(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        kv_entries = _parse_kv_entries(d.pop("kv_entries", UNSET))

        def _parse_memory_bytes(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        memory_bytes = _parse_memory_bytes(d.pop("memory_bytes", UNSET))

        plugin_limits = cls(
            deadline=deadline,
            fuel=fuel,
            kv_bytes=kv_bytes,
            kv_entries=kv_entries,
            memory_bytes=memory_bytes,
        )

        return plugin_limits
