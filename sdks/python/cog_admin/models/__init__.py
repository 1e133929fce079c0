"""Contains all the data models used in inputs/outputs"""

from .attach import Attach
from .audit_entry import AuditEntry
from .change import Change
from .changes import Changes
from .issued_key import IssuedKey
from .key_info import KeyInfo
from .limit_spec import LimitSpec
from .limit_usage import LimitUsage
from .named_plan import NamedPlan
from .named_plugin import NamedPlugin
from .named_tenant import NamedTenant
from .new_deployment import NewDeployment
from .new_key_request import NewKeyRequest
from .on_failure import OnFailure
from .page_audit_entry import PageAuditEntry
from .page_key_info import PageKeyInfo
from .page_named_plan import PageNamedPlan
from .page_named_plugin import PageNamedPlugin
from .page_named_tenant import PageNamedTenant
from .partition_move import PartitionMove
from .placement_table import PlacementTable
from .placement_table_partitions import PlacementTablePartitions
from .plan import Plan
from .plugin_lang import PluginLang
from .plugin_limits import PluginLimits
from .plugin_patch import PluginPatch
from .plugin_spec import PluginSpec
from .problem import Problem
from .spec import Spec
from .spec_plans import SpecPlans
from .spec_plugins import SpecPlugins
from .spec_tenants import SpecTenants
from .status import Status
from .tenant import Tenant
from .tenant_metadata import TenantMetadata
from .usage import Usage

__all__ = (
    "Attach",
    "AuditEntry",
    "Change",
    "Changes",
    "IssuedKey",
    "KeyInfo",
    "LimitSpec",
    "LimitUsage",
    "NamedPlan",
    "NamedPlugin",
    "NamedTenant",
    "NewDeployment",
    "NewKeyRequest",
    "OnFailure",
    "PageAuditEntry",
    "PageKeyInfo",
    "PageNamedPlan",
    "PageNamedPlugin",
    "PageNamedTenant",
    "PartitionMove",
    "PlacementTable",
    "PlacementTablePartitions",
    "Plan",
    "PluginLang",
    "PluginLimits",
    "PluginPatch",
    "PluginSpec",
    "Problem",
    "Spec",
    "SpecPlans",
    "SpecPlugins",
    "SpecTenants",
    "Status",
    "Tenant",
    "TenantMetadata",
    "Usage",
)
