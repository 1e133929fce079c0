from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from attrs import define as _attrs_define

from ..models.on_failure import OnFailure
from ..models.plugin_lang import PluginLang
from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.attach import Attach
    from ..models.plugin_limits import PluginLimits


T = TypeVar("T", bound="PluginSpec")


@_attrs_define
class PluginSpec:
    """An installed plugin: its bytes (a wasm module or Python source)
    addressed by digest, plus how it runs.

        Attributes:
            attach (Attach | Unset): Who a plugin runs for.
            config (str | Unset): Bytes handed to the plugin (`cog_config`).
            digest (str | Unset): `sha256:<hex>` of the plugin's bytes (stored separately, by
                digest). In a document, may be left out when `file` is given.
            enabled (bool | Unset): Disabled plugins stay installed but do not run.
            file (None | str | Unset): Where `cog apply` reads the plugin from (relative to the file).
            lang (PluginLang | Unset): What a plugin's bytes are.
            limits (None | PluginLimits | Unset):
            on_error (OnFailure | Unset): A plugin's failure policy.
            version (str | Unset): A version label for people.
    """

    attach: Attach | Unset = UNSET
    config: str | Unset = UNSET
    digest: str | Unset = UNSET
    enabled: bool | Unset = UNSET
    file: None | str | Unset = UNSET
    lang: PluginLang | Unset = UNSET
    limits: None | PluginLimits | Unset = UNSET
    on_error: OnFailure | Unset = UNSET
    version: str | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        from ..models.plugin_limits import PluginLimits  # noqa: PLC0415

        attach: dict[str, Any] | Unset = UNSET
        if not isinstance(self.attach, Unset):
            attach = self.attach.to_dict()

        config = self.config

        digest = self.digest

        enabled = self.enabled

        file: None | str | Unset
        if isinstance(self.file, Unset):
            file = UNSET
        else:
            file = self.file

        lang: str | Unset = UNSET
        if not isinstance(self.lang, Unset):
            lang = self.lang.value

        limits: dict[str, Any] | None | Unset
        if isinstance(self.limits, Unset):
            limits = UNSET
        elif isinstance(self.limits, PluginLimits):
            limits = self.limits.to_dict()
        else:
            limits = self.limits

        on_error: str | Unset = UNSET
        if not isinstance(self.on_error, Unset):
            on_error = self.on_error.value

        version = self.version

        field_dict: dict[str, Any] = {}

        field_dict.update({})
        if attach is not UNSET:
            field_dict["attach"] = attach
        if config is not UNSET:
            field_dict["config"] = config
        if digest is not UNSET:
            field_dict["digest"] = digest
        if enabled is not UNSET:
            field_dict["enabled"] = enabled
        if file is not UNSET:
            field_dict["file"] = file
        if lang is not UNSET:
            field_dict["lang"] = lang
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
        _attach = d.pop("attach", UNSET)
        attach: Attach | Unset
        if isinstance(_attach, Unset):
            attach = UNSET
        else:
            attach = Attach.from_dict(_attach)

        config = d.pop("config", UNSET)

        digest = d.pop("digest", UNSET)

        enabled = d.pop("enabled", UNSET)

        def _parse_file(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        file = _parse_file(d.pop("file", UNSET))

        _lang = d.pop("lang", UNSET)
        lang: PluginLang | Unset
        if isinstance(_lang, Unset):
            lang = UNSET
        else:
            lang = PluginLang(_lang)

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

        _on_error = d.pop("on_error", UNSET)
        on_error: OnFailure | Unset
        if isinstance(_on_error, Unset):
            on_error = UNSET
        else:
            on_error = OnFailure(_on_error)

        version = d.pop("version", UNSET)

        plugin_spec = cls(
            attach=attach,
            config=config,
            digest=digest,
            enabled=enabled,
            file=file,
            lang=lang,
            limits=limits,
            on_error=on_error,
            version=version,
        )

        return plugin_spec
