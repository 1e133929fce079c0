from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from attrs import define as _attrs_define

from ..types import UNSET, Unset

T = TypeVar("T", bound="AuditEntry")


@_attrs_define
class AuditEntry:
    """One write to the control plane, as the audit log keeps it.

    Attributes:
        action (str): What: `plan.create`, `tenant.suspend`, `key.revoke`, `apply`, …
        actor (str): Who: `token:<id>` (the admin API), `cli`, or what the embedding
            program named itself ([`Control::actor`](crate::Control::actor)).
        at (int): Unix milliseconds.
        revision (int): The store's revision this write produced.
        target (str | Unset): On what: the plan, tenant, key or plugin (empty for `apply`).
    """

    action: str
    actor: str
    at: int
    revision: int
    target: str | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        action = self.action

        actor = self.actor

        at = self.at

        revision = self.revision

        target = self.target

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "action": action,
                "actor": actor,
                "at": at,
                "revision": revision,
            }
        )
        if target is not UNSET:
            field_dict["target"] = target

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        action = d.pop("action")

        actor = d.pop("actor")

        at = d.pop("at")

        revision = d.pop("revision")

        target = d.pop("target", UNSET)

        audit_entry = cls(
            action=action,
            actor=actor,
            at=at,
            revision=revision,
            target=target,
        )

        return audit_entry
