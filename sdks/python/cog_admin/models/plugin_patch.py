from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from attrs import define as _attrs_define

from ..models.on_failure import OnFailure
from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.attach import Attach
    from ..models.plugin_limits import PluginLimits


T = TypeVar("T", bound="PluginPatch")


@_attrs_define
class PluginPatch:
    """Fields of a plugin to change; those left out stay as they are.

    Attributes:
        attach (Attach | None | Unset):
        config (None | str | Unset): New bytes handed to the plugin (`cog_config`).
        enabled (bool | None | Unset): Run it, or not.
        limits (None | PluginLimits | Unset):
        on_error (None | OnFailure | Unset):
        version (None | str | Unset): A new version label.
    """

    attach: Attach | None | Unset = UNSET
    config: None | str | Unset = UNSET
    enabled: bool | None | Unset = UNSET
    limits: None | PluginLimits | Unset = UNSET
    on_error: None | OnFailure | Unset = UNSET
    version: None | str | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        from ..models.attach import Attach  # noqa: PLC0415
        from ..models.plugin_limits import PluginLimits  # noqa: PLC0415

        attach: dict[str, Any] | None | Unset
        if isinstance(self.attach, Unset):
            attach = UNSET
        elif isinstance(self.attach, Attach):
            attach = self.attach.to_dict()
        else:
            attach = self.attach

        config: None | str | Unset
        if isinstance(self.config, Unset):
            config = UNSET
        else:
            config = self.config

        enabled: bool | None | Unset
        if isinstance(self.enabled, Unset):
            enabled = UNSET
        else:
            enabled = self.enabled

        limits: dict[str, Any] | None | Unset
        if isinstance(self.limits, Unset):
            limits = UNSET
        elif isinstance(self.limits, PluginLimits):
            limits = self.limits.to_dict()
        else:
            limits = self.limits

        on_error: None | str | Unset
        if isinstance(self.on_error, Unset):
            on_error = UNSET
        elif isinstance(self.on_error, OnFailure):
            on_error = self.on_error.value
        else:
            on_error = self.on_error

        version: None | str | Unset
        if isinstance(self.version, Unset):
            version = UNSET
        else:
            version = self.version

        field_dict: dict[str, Any] = {}

        field_dict.update({})
        if attach is not UNSET:
            field_dict["attach"] = attach
        if config is not UNSET:
            field_dict["config"] = config
        if enabled is not UNSET:
            field_dict["enabled"] = enabled
        if limits is not UNSET:
            field_dict["limits"] = limits
        if on_error is not UNSET:
            field_dict["on_error"] = on_error
        if version is not UNSET:
            field_dict["version"] = version

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.attach import Attach  # noqa: PLC0415
        from ..models.plugin_limits import PluginLimits  # noqa: PLC0415

        d = dict(src_dict)

        def _parse_attach(data: object) -> Attach | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                attach_type_0 = Attach.from_dict(data)

                return attach_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(Attach | None | Unset, data)

        attach = _parse_attach(d.pop("attach", UNSET))

        def _parse_config(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        config = _parse_config(d.pop("config", UNSET))

        def _parse_enabled(data: object) -> bool | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(bool | None | Unset, data)

        enabled = _parse_enabled(d.pop("enabled", UNSET))

        def _parse_limits(data: object) -> None | PluginLimits | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                limits_type_0 = PluginLimits.from_dict(data)

                return limits_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(None | PluginLimits | Unset, data)

        limits = _parse_limits(d.pop("limits", UNSET))

        def _parse_on_error(data: object) -> None | OnFailure | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                on_error_type_0 = OnFailure(data)

                return on_error_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(None | OnFailure | Unset, data)

        on_error = _parse_on_error(d.pop("on_error", UNSET))

        def _parse_version(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        version = _parse_version(d.pop("version", UNSET))

        plugin_patch = cls(
            attach=attach,
            config=config,
            enabled=enabled,
            limits=limits,
            on_error=on_error,
            version=version,
        )

        return plugin_patch
