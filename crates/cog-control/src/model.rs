//! The control plane's data: plans, tenants, API keys, plugins.
//!
//! Everything here is plain serde data. [`Spec`] is the declarative part
//! (what `cog apply` reads and `cog export` writes); [`State`] adds what is
//! never declared in a file — API keys — and the store's revision.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Invalid;

/// The schema version this crate reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// The largest rate, burst or cost a limit accepts (as cog-ratelimit).
pub const MAX_COUNT: u64 = cog_ratelimit::MAX_COUNT;

/// The largest plugin a store accepts (8 MiB).
pub const MAX_PLUGIN_BYTES: usize = 8 << 20;

/// A window such as `1s`, `500ms`, `1m`, `1h`, `1d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window(pub Duration);

impl FromStr for Window {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("`{s}` has no unit (ms, s, m, h or d)"))?;
        let (n, unit) = s.split_at(split);
        let n: u64 = n
            .parse()
            .map_err(|_| format!("`{s}` does not start with a whole number"))?;
        let ms = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            other => return Err(format!("unknown unit `{other}` (ms, s, m, h or d)")),
        };
        let ms = n
            .checked_mul(ms)
            .ok_or_else(|| format!("`{s}` is too long"))?;
        Ok(Window(Duration::from_millis(ms)))
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if ms >= size && ms.is_multiple_of(size) {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

/// In the OpenAPI description: a string such as `1s`, `10m`, `1h`, `30d`.
#[cfg(feature = "admin")]
impl utoipa::PartialSchema for Window {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "A duration: a whole number and a unit, `ms`, `s`, `m`, `h` or `d`.",
            ))
            .examples(["1s", "1m", "30d"])
            .into()
    }
}

#[cfg(feature = "admin")]
impl utoipa::ToSchema for Window {}

impl Serialize for Window {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One named limit: `rate` units per `window`, up to `burst` at once, each
/// request costing `cost` units.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "admin", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LimitSpec {
    /// Shown in the `RateLimit-Policy` header; unique within a plan.
    pub name: String,
    /// Units per window.
    pub rate: u64,
    /// The window (`1s`, `1m`, `1d`…).
    pub window: Window,
    /// Units that can be spent at once (default: `rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    /// Units one request costs (default 1) — on every limit and quota of
    /// the plan: a request costs the largest `cost` any of them gives, so
    /// it must fit in each one's burst (a quota's rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<u64>,
}

impl LimitSpec {
    /// Parses `NAME=RATE/WINDOW[,burst=N][,cost=N]`, e.g. `rps=10/1s,burst=20`.
    ///
    /// # Errors
    /// A message naming what is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (head, options) = s.split_once(',').unwrap_or((s, ""));
        let (name, rate) = head
            .split_once('=')
            .ok_or_else(|| format!("`{s}`: expected NAME=RATE/WINDOW, e.g. rps=10/1s"))?;
        let (rate, window) = rate
            .split_once('/')
            .ok_or_else(|| format!("`{s}`: expected RATE/WINDOW after `=`, e.g. 10/1s"))?;
        let mut limit = LimitSpec {
            name: name.trim().to_owned(),
            rate: rate
                .trim()
                .parse()
                .map_err(|_| format!("`{s}`: rate `{rate}` is not a whole number"))?,
            window: window.parse().map_err(|e| format!("`{s}`: {e}"))?,
            burst: None,
            cost: None,
        };
        for option in options.split(',').filter(|o| !o.is_empty()) {
            let (key, value) = option
                .split_once('=')
                .ok_or_else(|| format!("`{s}`: expected KEY=VALUE, got `{option}`"))?;
            let value: u64 = value
                .trim()
                .parse()
                .map_err(|_| format!("`{s}`: {key} `{value}` is not a whole number"))?;
            match key.trim() {
                "burst" => limit.burst = Some(value),
                "cost" => limit.cost = Some(value),
                other => return Err(format!("`{s}`: unknown option `{other}` (burst, cost)")),
            }
        }
        Ok(limit)
    }

    fn validate(&self, path: &str, long: bool) -> Result<(), Invalid> {
        check_name(&format!("{path}.name"), &self.name)?;
        for (field, value) in [
            ("rate", Some(self.rate)),
            ("burst", self.burst),
            ("cost", self.cost),
        ] {
            if let Some(v) = value
                && !(1..=MAX_COUNT).contains(&v)
            {
                return Err(Invalid::new(
                    format!("{path}.{field}"),
                    format!("{v} is out of range (1 to {MAX_COUNT})"),
                ));
            }
        }
        if self.window.0.is_zero() || self.window.0 > cog_ratelimit::MAX_PERIOD {
            return Err(Invalid::new(
                format!("{path}.window"),
                format!("{} is out of range (1ms to 3650d)", self.window),
            ));
        }
        if long && self.burst.is_some() {
            return Err(Invalid::new(
                format!("{path}.burst"),
                "quotas count over their window and have no burst",
            ));
        }
        Ok(())
    }

    /// The cog-ratelimit limit: GCRA for a rate limit, a sliding window
    /// for a long-window quota.
    pub fn to_limit(&self, long: bool) -> cog_ratelimit::Limit {
        let limit = if long {
            cog_ratelimit::Limit::sliding_window(self.rate, self.window.0)
        } else {
            cog_ratelimit::Limit::gcra(self.rate, self.window.0)
                .burst(self.burst.unwrap_or(self.rate))
        };
        limit.named(self.name.clone())
    }
}

/// Limits for a plan's plugins (each unset one keeps the sandbox default).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "admin", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PluginLimits {
    /// Metering points per call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Linear memory cap in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Wall-clock deadline per call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Window>,
    /// KV entries one (tenant, plugin) scope may hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_entries: Option<u64>,
    /// Bytes of keys and values together one (tenant, plugin) KV scope may
    /// hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_bytes: Option<u64>,
}

/// A plugin to load in the sandbox before a change is stored
/// ([`Spec::plugins_to_recheck`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recheck {
    /// Its name.
    pub name: String,
    /// What its bytes are.
    pub lang: PluginLang,
    /// Its stored bytes' digest.
    pub digest: String,
    /// The limits to load it under (`None`: the defaults).
    pub limits: Vec<Option<PluginLimits>>,
}

impl PluginLimits {
    /// These limits over `base` (a plan's): each one set here wins, each
    /// one left unset keeps `base`'s — what a plugin's own limits make of
    /// its plan's.
    pub fn over(&self, base: Option<&PluginLimits>) -> PluginLimits {
        PluginLimits {
            fuel: self.fuel.or(base.and_then(|b| b.fuel)),
            memory_bytes: self.memory_bytes.or(base.and_then(|b| b.memory_bytes)),
            deadline: self.deadline.or(base.and_then(|b| b.deadline)),
            kv_entries: self.kv_entries.or(base.and_then(|b| b.kv_entries)),
            kv_bytes: self.kv_bytes.or(base.and_then(|b| b.kv_bytes)),
        }
    }
}

/// A subscription plan: the limits its tenants get.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "admin", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Short-window rate limits (GCRA), e.g. 10 per second, burst 20.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<LimitSpec>,
    /// Long-window quotas (sliding window), e.g. 100 000 per day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quotas: Vec<LimitSpec>,
    /// The most L1 cache bytes one tenant may hold, in each cache that
    /// takes it (`Directory::cache_budget`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_budget_bytes: Option<u64>,
    /// Limits for plugin calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_limits: Option<PluginLimits>,
}

impl Plan {
    fn validate(&self, path: &str) -> Result<(), Invalid> {
        validate_limits(path, &self.limits, &self.quotas)?;
        if let Some(p) = &self.plugin_limits {
            if p.fuel == Some(0) {
                return Err(Invalid::new(
                    format!("{path}.plugin_limits.fuel"),
                    "must be at least 1",
                ));
            }
            if p.memory_bytes
                .is_some_and(|m| !(65_536..=(4 << 30)).contains(&m))
            {
                return Err(Invalid::new(
                    format!("{path}.plugin_limits.memory_bytes"),
                    "must be between 64 KiB and 4 GiB",
                ));
            }
            if p.deadline
                .is_some_and(|d| d.0.is_zero() || d.0 > Duration::from_secs(60))
            {
                return Err(Invalid::new(
                    format!("{path}.plugin_limits.deadline"),
                    "must be between 1ms and 60s",
                ));
            }
            if p.kv_entries.is_some_and(|n| !(1..=10_000_000).contains(&n)) {
                return Err(Invalid::new(
                    format!("{path}.plugin_limits.kv_entries"),
                    "must be between 1 and 10 000 000",
                ));
            }
            if p.kv_bytes.is_some_and(|b| !(1024..=(1 << 30)).contains(&b)) {
                return Err(Invalid::new(
                    format!("{path}.plugin_limits.kv_bytes"),
                    "must be between 1 KiB and 1 GiB",
                ));
            }
        }
        Ok(())
    }
}

fn validate_limits(path: &str, limits: &[LimitSpec], quotas: &[LimitSpec]) -> Result<(), Invalid> {
    let mut seen = std::collections::HashSet::new();
    for (field, list, long) in [("limits", limits, false), ("quotas", quotas, true)] {
        for (i, l) in list.iter().enumerate() {
            let at = format!("{path}.{field}[{i}]");
            l.validate(&at, long)?;
            if !seen.insert(l.name.as_str()) {
                return Err(Invalid::new(
                    format!("{at}.name"),
                    format!("duplicate limit name `{}`", l.name),
                ));
            }
        }
    }
    if seen.len() > 16 {
        return Err(Invalid::new(path, "at most 16 limits and quotas together"));
    }
    Ok(())
}

/// Whether a tenant's requests are served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "admin", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Served.
    #[default]
    Active,
    /// Refused (403) until resumed; keys and data are kept.
    Suspended,
}

impl Status {
    fn is_active(&self) -> bool {
        *self == Status::Active
    }
}

/// A customer of the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "admin", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    /// The plan (by name) that decides its limits.
    pub plan: String,
    /// For people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub display_name: String,
    /// Active or suspended.
    #[serde(default, skip_serializing_if = "Status::is_active")]
    pub status: Status,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Limits that replace the plan's limit of the same name (or add one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<LimitSpec>,
    /// Quotas that replace the plan's quota of the same name (or add one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quota_overrides: Vec<LimitSpec>,
}

impl Tenant {
    /// An active tenant on `plan`.
    pub fn new(plan: impl Into<String>) -> Self {
        Tenant {
            plan: plan.into(),
            display_name: String::new(),
            status: Status::Active,
            metadata: BTreeMap::new(),
            overrides: Vec::new(),
            quota_overrides: Vec::new(),
        }
    }

    /// The limits and the quotas this tenant gets on `plan`: the plan's,
    /// each replaced by the override of the same name, then the overrides
    /// that replace none of them.
    pub fn effective_limits(&self, plan: &Plan) -> (Vec<LimitSpec>, Vec<LimitSpec>) {
        (
            merged(&plan.limits, &self.overrides),
            merged(&plan.quotas, &self.quota_overrides),
        )
    }
}

/// `plan`'s specs, each replaced by the override of the same name, then
/// the overrides that replace none.
fn merged(plan: &[LimitSpec], overrides: &[LimitSpec]) -> Vec<LimitSpec> {
    let mut out: Vec<LimitSpec> = plan
        .iter()
        .map(|l| {
            overrides
                .iter()
                .find(|o| o.name == l.name)
                .unwrap_or(l)
                .clone()
        })
        .collect();
    out.extend(
        overrides
            .iter()
            .filter(|o| !plan.iter().any(|l| l.name == o.name))
            .cloned(),
    );
    out
}

/// What a request costs under `limits` and `quotas`: the largest `cost`
/// any of them gives (1 when none does), charged on every one of them.
pub(crate) fn request_cost(limits: &[LimitSpec], quotas: &[LimitSpec]) -> u64 {
    limits
        .iter()
        .chain(quotas)
        .filter_map(|l| l.cost)
        .max()
        .unwrap_or(1)
}

/// A request's cost ([`request_cost`]) must fit in every limit's burst
/// and every quota's rate, or no request would ever pass.
fn validate_cost(path: &str, limits: &[LimitSpec], quotas: &[LimitSpec]) -> Result<(), Invalid> {
    let cost = request_cost(limits, quotas);
    let room = limits
        .iter()
        .map(|l| (l, l.burst.unwrap_or(l.rate), "burst"))
        .chain(quotas.iter().map(|l| (l, l.rate, "rate")));
    for (l, room, what) in room {
        if cost > room {
            return Err(Invalid::new(
                path,
                format!(
                    "a request costs {cost} (the largest `cost` of its limits and quotas) \
                     on every one of them, more than the {what} of `{}` ({room}): \
                     no request would pass",
                    l.name
                ),
            ));
        }
    }
    Ok(())
}

/// Each limit and quota is one the limiter takes: `LimitSpec::validate`
/// checks the ranges a document can state, the limiter has rules of its
/// own (no more than one unit per nanosecond). A limit it refused was
/// stored, then refused at run time: every key of every tenant it reached
/// answered 401, with only an error log.
fn validate_for_limiter(
    path: &str,
    limits: &[LimitSpec],
    quotas: &[LimitSpec],
) -> Result<(), Invalid> {
    for (field, list, long) in [("limits", limits, false), ("quotas", quotas, true)] {
        for (i, l) in list.iter().enumerate() {
            if let Err(e) = cog_ratelimit::Quota::new([l.to_limit(long)]) {
                return Err(Invalid::new(
                    format!("{path}.{field}[{i}]"),
                    format!("the rate limiter refuses it: {e}"),
                ));
            }
        }
    }
    Ok(())
}

/// What tenant `id` gets on `plan` ([`Tenant::effective_limits`]) must
/// make one quota, as a plan's own limits must: at most 16 limits and
/// quotas together, and no name both a limit and a quota (an override in
/// the other list than the plan's spec of that name would add a second
/// spec instead of replacing the first), and a request's cost that fits
/// each of them.
fn validate_effective(id: &str, tenant: &Tenant, plan: &Plan) -> Result<(), Invalid> {
    let path = format!("tenants.{id}");
    for (field, overrides, other, is, not) in [
        (
            "overrides",
            &tenant.overrides,
            &plan.quotas,
            "quota",
            "limit",
        ),
        (
            "quota_overrides",
            &tenant.quota_overrides,
            &plan.limits,
            "limit",
            "quota",
        ),
    ] {
        for (i, o) in overrides.iter().enumerate() {
            if other.iter().any(|l| l.name == o.name) {
                return Err(Invalid::new(
                    format!("{path}.{field}[{i}].name"),
                    format!(
                        "`{}` is a {is} of plan `{}`: override it as a {is}, not a {not}",
                        o.name, tenant.plan
                    ),
                ));
            }
        }
    }
    let (limits, quotas) = tenant.effective_limits(plan);
    validate_cost(&path, &limits, &quotas)?;
    let count = limits.len() + quotas.len();
    if count > 16 {
        return Err(Invalid::new(
            path,
            format!(
                "with plan `{}` it has {count} limits and quotas; at most 16 together",
                tenant.plan
            ),
        ));
    }
    Ok(())
}

/// Who a plugin runs for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "admin", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Attach {
    /// These tenants.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<String>,
    /// Every tenant on these plans.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plans: Vec<String>,
}

/// What a plugin's bytes are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "admin", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum PluginLang {
    /// A WebAssembly module for the host API (`docs/plugin-abi.md`).
    #[default]
    Wasm,
    /// Python source run by the sandbox's CPython for WASI.
    Python,
}

impl PluginLang {
    fn is_wasm(&self) -> bool {
        *self == PluginLang::Wasm
    }

    /// What a file's extension says: `.py` is Python, anything else wasm.
    pub fn of_path(path: &std::path::Path) -> PluginLang {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("py") => PluginLang::Python,
            _ => PluginLang::Wasm,
        }
    }

    /// `wasm` or `python`.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginLang::Wasm => "wasm",
            PluginLang::Python => "python",
        }
    }
}

/// An installed plugin: its bytes (a wasm module or Python source)
/// addressed by digest, plus how it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "admin", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PluginSpec {
    /// `sha256:<hex>` of the plugin's bytes (stored separately, by
    /// digest). In a document, may be left out when `file` is given.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    /// What the bytes are (default `wasm`; a `file` ending in `.py` is
    /// Python).
    #[serde(default, skip_serializing_if = "PluginLang::is_wasm")]
    pub lang: PluginLang,
    /// A version label for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Who it runs for.
    #[serde(default)]
    pub attach: Attach,
    /// Bytes handed to the plugin (`cog_config`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub config: String,
    /// Limits that override the plan's plugin limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<PluginLimits>,
    /// Disabled plugins stay installed but do not run.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
    /// Where `cog apply` reads the plugin from (relative to the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// What a request does when the plugin fails — traps, hits a limit,
    /// or could not be loaded at all.
    #[serde(default, skip_serializing_if = "OnFailure::is_skip")]
    pub on_error: OnFailure,
}

impl Default for PluginSpec {
    /// What a document that names nothing but the plugin means: enabled,
    /// attached to nobody, no configuration, limits or file, policy `skip`.
    fn default() -> Self {
        PluginSpec {
            digest: String::new(),
            lang: PluginLang::Wasm,
            version: String::new(),
            attach: Attach::default(),
            config: String::new(),
            limits: None,
            enabled: true,
            file: None,
            on_error: OnFailure::Skip,
        }
    }
}

/// A plugin's failure policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "admin", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Carry on without the plugin (its changes dropped); counted and
    /// logged.
    #[default]
    Skip,
    /// Refuse the request (500).
    Fail,
}

impl OnFailure {
    fn is_skip(&self) -> bool {
        *self == OnFailure::Skip
    }
}

fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}

/// Deserializes a map whose keys are ids, refusing a key given twice (YAML
/// and JSON parsers would otherwise keep the last one silently).
pub(crate) fn unique<'de, D, V>(d: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct Unique<V>(std::marker::PhantomData<V>);
    impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Unique<V> {
        type Value = BTreeMap<String, V>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of ids")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                if out.contains_key(&key) {
                    return Err(serde::de::Error::custom(format!("duplicate id `{key}`")));
                }
                let value = map.next_value()?;
                out.insert(key, value);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Unique(std::marker::PhantomData))
}

/// The declarative part of the control plane: what a YAML/TOML file holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "admin", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Format version ([`SCHEMA_VERSION`]).
    #[serde(default = "schema")]
    pub schema: u32,
    /// Plans by name.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "unique"
    )]
    pub plans: BTreeMap<String, Plan>,
    /// Tenants by id.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "unique"
    )]
    pub tenants: BTreeMap<String, Tenant>,
    /// Plugins by name.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "unique"
    )]
    pub plugins: BTreeMap<String, PluginSpec>,
}

fn schema() -> u32 {
    SCHEMA_VERSION
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            schema: SCHEMA_VERSION,
            plans: BTreeMap::new(),
            tenants: BTreeMap::new(),
            plugins: BTreeMap::new(),
        }
    }
}

/// An API key as stored: never the key itself, only its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// The tenant it authenticates.
    pub tenant: String,
    /// `sha256` of the whole key, hex.
    pub hash: String,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds after which the key is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    /// Revoked keys are refused (and kept, for audit).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoked: bool,
}

/// Whether an API key authenticates now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyStatus {
    /// It authenticates.
    Active,
    /// Past its expiry (unix seconds ≥ `expires`): refused.
    Expired,
    /// Revoked: refused.
    Revoked,
}

impl KeyStatus {
    /// `active`, `expired`, `revoked`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Expired => "expired",
            KeyStatus::Revoked => "revoked",
        }
    }
}

impl ApiKey {
    /// Its status at `now` (unix seconds), as authentication decides it.
    pub fn status(&self, now: u64) -> KeyStatus {
        if self.revoked {
            KeyStatus::Revoked
        } else if self.expires.is_some_and(|e| now >= e) {
            KeyStatus::Expired
        } else {
            KeyStatus::Active
        }
    }
}

/// What an admin token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "admin", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read everything (secrets excepted: they are never stored).
    Read,
    /// Read and change everything.
    Write,
}

impl Scope {
    /// `read`, `write`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
        }
    }

    /// Whether a token of this scope may do what `needed` allows.
    pub fn allows(self, needed: Scope) -> bool {
        self >= needed
    }
}

/// A token of the admin API as stored: never the token, only its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    /// What it is for (shown in listings and the audit log).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// `sha256` of the whole token, hex.
    pub hash: String,
    /// What it may do.
    pub scope: Scope,
    /// Unix seconds.
    pub created: u64,
    /// Revoked tokens are refused (and kept, for audit).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoked: bool,
}

/// One write to the control plane, as the audit log keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "admin", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Unix milliseconds.
    pub at: u64,
    /// Who: `token:<id>` (the admin API), `cli`, or what the embedding
    /// program named itself ([`Control::actor`](crate::Control::actor)).
    pub actor: String,
    /// What: `plan.create`, `tenant.suspend`, `key.revoke`, `apply`, …
    pub action: String,
    /// On what: the plan, tenant, key or plugin (empty for `apply`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    /// The store's revision this write produced.
    pub revision: u64,
}

// Kept in the store next to the spec, changed with
// `Control::add_deployment` and `Control::move_partition`, handed to the
// instances' routers by `Directory::follow` (see `cog_core::placement`).
// The doc comment is the OpenAPI description: no rustdoc links in it.
/// Which Redis deployment holds each of the 256 tenant partitions (a
/// tenant's partition: the first byte of the SHA-256 of its id), at a
/// revision every change bumps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "admin", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PlacementTable {
    /// Bumped by every change: stores only ever take a newer table.
    pub revision: u64,
    /// The deployments, in the order they were added.
    pub deployments: Vec<String>,
    /// Partitions not on the first deployment (keys: `"0"`–`"255"`), with
    /// theirs; every other partition is on the first.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "admin", schema(value_type = BTreeMap<String, String>))]
    pub partitions: BTreeMap<u8, String>,
}

impl PlacementTable {
    /// The table as a [`cog_core::placement::Placement`].
    ///
    /// # Errors
    /// A deployment name that is invalid or repeated, or a partition on a
    /// deployment not in the list.
    pub fn to_placement(&self) -> Result<cog_core::placement::Placement, Invalid> {
        cog_core::placement::Placement::from_parts(
            self.revision,
            self.deployments.iter().map(String::as_str),
            self.partitions.iter().map(|(p, d)| (*p, d.as_str())),
        )
        .map_err(|e| Invalid::new("placement", e.to_string()))
    }

    /// A placement as a table (only the partitions off the first
    /// deployment listed).
    pub fn of(placement: &cog_core::placement::Placement) -> Self {
        let first = placement.deployments()[0].clone();
        PlacementTable {
            revision: placement.revision(),
            deployments: placement
                .deployments()
                .iter()
                .map(|d| d.to_string())
                .collect(),
            partitions: placement
                .partitions()
                .filter(|(_, d)| **d != *first)
                .map(|(p, d)| (p, d.to_owned()))
                .collect(),
        }
    }
}

/// Audit entries a store keeps (the oldest go first).
pub const AUDIT_KEEP: usize = 1000;

/// Everything a store holds (besides plugin bytes), at one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// The store's revision this state was read at (0: a new store).
    pub revision: u64,
    /// The stamp of the commit that made `revision`, when the store keeps
    /// one ([`Store::version`](crate::store::Store::version)): a write from
    /// this state goes through only while the store holds that commit, not
    /// another of the same revision (after a failover to a replica behind
    /// it). `None`: compared by revision alone.
    pub stamp: Option<u64>,
    /// Plans, tenants, plugins.
    pub spec: Spec,
    /// API keys by id (their visible prefix).
    pub keys: BTreeMap<String, ApiKey>,
    /// Admin API tokens by id (their visible prefix).
    pub tokens: BTreeMap<String, AdminToken>,
    /// The last [`AUDIT_KEEP`] writes, oldest first.
    pub audit: Vec<AuditEntry>,
    /// Where tenants' data lives, when it is spread over several Redis
    /// deployments.
    pub placement: Option<PlacementTable>,
}

impl State {
    /// The revision this state was read at, with its commit's stamp.
    pub fn version(&self) -> crate::store::Version {
        crate::store::Version {
            revision: self.revision,
            stamp: self.stamp,
        }
    }
}

/// Checks an id or a name: 1–64 of `a-z A-Z 0-9 _ - .`.
pub(crate) fn check_name(path: &str, name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(
            path,
            format!("`{name}` is not a valid name (1-64 of a-z, A-Z, 0-9, `_`, `-`, `.`)"),
        ))
    }
}

impl Spec {
    /// The plugin limits of every plan `attach` reaches — directly, or as
    /// the plan of a tenant it names — once each; the defaults (`None`)
    /// alone when it reaches none. A plugin is checked under each before
    /// it is stored.
    pub fn plugin_limits_of(&self, attach: &Attach) -> Vec<Option<PluginLimits>> {
        self.plugin_limits_for(attach, None)
    }

    /// [`plugin_limits_of`](Self::plugin_limits_of) with a plugin's own
    /// limits over each plan's ([`PluginLimits::over`]): the limits it
    /// runs under, once each.
    pub fn plugin_limits_for(
        &self,
        attach: &Attach,
        own: Option<&PluginLimits>,
    ) -> Vec<Option<PluginLimits>> {
        let mut out: Vec<Option<PluginLimits>> = Vec::new();
        let plans = attach.plans.iter().chain(
            attach
                .tenants
                .iter()
                .filter_map(|t| self.tenants.get(t).map(|t| &t.plan)),
        );
        let mut add = |plan: Option<&PluginLimits>| {
            let limits = match own {
                Some(own) => Some(own.over(plan)),
                None => plan.cloned(),
            };
            if !out.contains(&limits) {
                out.push(limits);
            }
        };
        let mut any = false;
        for plan in plans {
            any = true;
            add(self.plans.get(plan).and_then(|p| p.plugin_limits.as_ref()));
        }
        if !any {
            add(None);
        }
        out
    }

    /// The document [`Control::apply`](crate::Control::apply) leaves when
    /// it applies `desired` to this one: `desired`, and with `prune` off
    /// whatever this one lists that it does not. (Keys of tenants gone are
    /// removed from the state apart.)
    pub fn applied(&self, desired: &Spec, prune: bool) -> Spec {
        let mut next = desired.clone();
        for p in next.plugins.values_mut() {
            p.file = None;
        }
        if !prune {
            for (k, v) in &self.plans {
                next.plans.entry(k.clone()).or_insert_with(|| v.clone());
            }
            for (k, v) in &self.tenants {
                next.tenants.entry(k.clone()).or_insert_with(|| v.clone());
            }
            for (k, v) in &self.plugins {
                next.plugins.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        next
    }

    /// The plugins `after` (this document once a change is made) runs
    /// under limits this document did not run them under — attached to
    /// another plan, a plan's plugin limits changed, a tenant moved, new
    /// limits of their own — each with those limits only: what must be
    /// checked in the sandbox before the change is stored. A plugin whose
    /// bytes changed is due under every limit it runs under; one attached
    /// to nobody runs under none.
    pub fn plugins_to_recheck(&self, after: &Spec) -> Vec<Recheck> {
        after
            .plugins
            .iter()
            .filter_map(|(name, p)| {
                // Attached to nobody, it runs under nothing.
                let runs = !p.attach.plans.is_empty()
                    || p.attach
                        .tenants
                        .iter()
                        .any(|t| after.tenants.contains_key(t));
                if !runs {
                    return None;
                }
                let before = match self.plugins.get(name) {
                    Some(old) if old.digest == p.digest => {
                        self.plugin_limits_for(&old.attach, old.limits.as_ref())
                    }
                    _ => Vec::new(),
                };
                let limits: Vec<_> = after
                    .plugin_limits_for(&p.attach, p.limits.as_ref())
                    .into_iter()
                    .filter(|l| !before.contains(l))
                    .collect();
                (!limits.is_empty()).then(|| Recheck {
                    name: name.clone(),
                    lang: p.lang,
                    digest: p.digest.clone(),
                    limits,
                })
            })
            .collect()
    }

    /// Checks every rule the store enforces: names, numbers, references
    /// between plans, tenants and plugins, and that what each tenant gets
    /// with its plan's limits ([`Tenant::effective_limits`]) is a quota
    /// the limiter takes, in which a request's cost fits every limit.
    ///
    /// # Errors
    /// The first problem found, with the path of the offending field.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.check(true)
    }

    /// [`validate`](Self::validate); `strict: false` leaves out the rules
    /// earlier versions did not check (see [`State::validate_stored`]).
    fn check(&self, strict: bool) -> Result<(), Invalid> {
        if self.schema != SCHEMA_VERSION {
            return Err(Invalid::new(
                "schema",
                format!(
                    "version {} is not supported (this is {SCHEMA_VERSION})",
                    self.schema
                ),
            ));
        }
        for (name, plan) in &self.plans {
            let path = format!("plans.{name}");
            check_name(&path, name)?;
            plan.validate(&path)?;
            if strict {
                validate_for_limiter(&path, &plan.limits, &plan.quotas)?;
                validate_cost(&path, &plan.limits, &plan.quotas)?;
            }
        }
        for (id, tenant) in &self.tenants {
            let path = format!("tenants.{id}");
            check_name(&path, id)?;
            if !self.plans.contains_key(&tenant.plan) {
                return Err(Invalid::new(
                    format!("{path}.plan"),
                    format!("no plan named `{}`", tenant.plan),
                ));
            }
            let overrides = format!("{path}.overrides");
            validate_limits(&overrides, &tenant.overrides, &tenant.quota_overrides)?;
            if strict {
                validate_for_limiter(&overrides, &tenant.overrides, &tenant.quota_overrides)?;
                validate_effective(id, tenant, &self.plans[&tenant.plan])?;
            }
        }
        for (name, plugin) in &self.plugins {
            let path = format!("plugins.{name}");
            check_name(&path, name)?;
            if plugin.digest.is_empty() {
                return Err(Invalid::new(
                    format!("{path}.digest"),
                    "missing: give the plugin's `digest` or its `file`",
                ));
            }
            check_digest(&format!("{path}.digest"), &plugin.digest)?;
            for (i, t) in plugin.attach.tenants.iter().enumerate() {
                if !self.tenants.contains_key(t) {
                    return Err(Invalid::new(
                        format!("{path}.attach.tenants[{i}]"),
                        format!("no tenant `{t}`"),
                    ));
                }
            }
            for (i, p) in plugin.attach.plans.iter().enumerate() {
                if !self.plans.contains_key(p) {
                    return Err(Invalid::new(
                        format!("{path}.attach.plans[{i}]"),
                        format!("no plan `{p}`"),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl State {
    /// [`Spec::validate`], and every key belongs to a known tenant.
    ///
    /// # Errors
    /// The first problem found, with the path of the offending field.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.check(true)
    }

    /// [`validate`](Self::validate) for a state read from a store: as
    /// strict, except for rules earlier versions did not check — what each
    /// tenant gets with its plan, a request's cost against each limit, and
    /// the rate limiter's own rules (see [`Spec::validate`]). A tenant such
    /// a state leaves without a quota is refused (logged); it must not take
    /// the whole state down.
    pub(crate) fn validate_stored(&self) -> Result<(), Invalid> {
        self.check(false)
    }

    fn check(&self, strict: bool) -> Result<(), Invalid> {
        self.spec.check(strict)?;
        if let Some(table) = &self.placement {
            table.to_placement()?;
        }
        for (id, key) in &self.keys {
            if !self.spec.tenants.contains_key(&key.tenant) {
                return Err(Invalid::new(
                    format!("keys.{id}.tenant"),
                    format!("no tenant `{}`", key.tenant),
                ));
            }
        }
        Ok(())
    }
}

/// Checks `sha256:<64 hex>`.
pub(crate) fn check_digest(path: &str, digest: &str) -> Result<(), Invalid> {
    let ok = digest.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    });
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(
            path,
            format!("`{digest}` is not `sha256:<64 lowercase hex>`"),
        ))
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", crate::keys::hex(&sha2::Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every bound a plan's numbers are checked against, at both edges:
    /// the last value accepted and the first refused.
    #[test]
    fn plan_bounds_hold_at_their_edges() {
        let ms = Duration::from_millis;
        let check = |plan: Plan| {
            let mut spec = Spec::default();
            spec.plans.insert("p".into(), plan);
            spec.validate().map_err(|e| e.to_string())
        };
        let limit =
            |rate: u64, window: Duration, burst: Option<u64>, cost: Option<u64>| LimitSpec {
                name: "l".into(),
                rate,
                window: Window(window),
                burst,
                cost,
            };
        let with_limit = |l: LimitSpec| Plan {
            limits: vec![l],
            ..Plan::default()
        };
        // The window: 1 ms to 3 650 days.
        assert!(check(with_limit(limit(1, ms(1), None, None))).is_ok());
        assert!(check(with_limit(limit(1, cog_ratelimit::MAX_PERIOD, None, None))).is_ok());
        for bad in [Duration::ZERO, cog_ratelimit::MAX_PERIOD + ms(1)] {
            let e = check(with_limit(limit(1, bad, None, None))).unwrap_err();
            assert!(e.contains("plans.p.limits[0].window"), "{e}");
        }
        // A request's cost fits the burst (the rate without one) and a
        // quota's rate, exactly.
        assert!(check(with_limit(limit(5, ms(1000), Some(3), Some(3)))).is_ok());
        assert!(check(with_limit(limit(5, ms(1000), Some(3), Some(4)))).is_err());
        assert!(check(with_limit(limit(5, ms(1000), None, Some(5)))).is_ok());
        assert!(check(with_limit(limit(5, ms(1000), None, Some(6)))).is_err());
        let quota = |rate, cost| Plan {
            quotas: vec![limit(rate, ms(60_000), None, cost)],
            ..Plan::default()
        };
        assert!(check(quota(7, Some(7))).is_ok());
        assert!(check(quota(7, Some(8))).is_err());

        // The rate limiter's own rule, checked on writes: at most one unit
        // per nanosecond, for a plan's limits and a tenant's overrides. A
        // stored state holding such a limit still loads (that tenant is
        // refused, logged), as older versions stored it.
        assert!(check(with_limit(limit(1_000_000, ms(1), None, None))).is_ok());
        let too_fast = limit(1_000_001, ms(1), None, None);
        let e = check(with_limit(too_fast.clone())).unwrap_err();
        assert!(
            e.contains("plans.p.limits[0]") && e.contains("nanosecond"),
            "{e}"
        );
        let mut state = State::default();
        state.spec.plans.insert("p".into(), Plan::default());
        let mut tenant = Tenant::new("p");
        tenant.overrides.push(too_fast.clone());
        state.spec.tenants.insert("t".into(), tenant);
        let e = state.validate().unwrap_err().to_string();
        assert!(e.contains("tenants.t.overrides.limits[0]"), "{e}");
        assert!(state.validate_stored().is_ok());
        state.spec.tenants.clear();
        state.spec.plans.insert("p".into(), with_limit(too_fast));
        assert!(state.validate().is_err());
        assert!(state.validate_stored().is_ok());

        // Plugin limits: fuel at least 1, memory 64 KiB to 4 GiB, a
        // deadline of 1 ms to 60 s.
        let plugins = |fuel, memory_bytes, deadline: Option<Duration>| Plan {
            plugin_limits: Some(PluginLimits {
                fuel,
                memory_bytes,
                deadline: deadline.map(Window),
                ..Default::default()
            }),
            ..Plan::default()
        };
        for ok in [
            plugins(Some(1), None, None),
            plugins(None, Some(65_536), None),
            plugins(None, Some(4 << 30), None),
            plugins(None, None, Some(ms(1))),
            plugins(None, None, Some(ms(60_000))),
        ] {
            assert!(check(ok.clone()).is_ok(), "{ok:?}");
        }
        for (bad, field) in [
            (plugins(Some(0), None, None), "fuel"),
            (plugins(None, Some(65_535), None), "memory_bytes"),
            (plugins(None, Some((4 << 30) + 1), None), "memory_bytes"),
            (plugins(None, None, Some(Duration::ZERO)), "deadline"),
            (plugins(None, None, Some(ms(60_001))), "deadline"),
        ] {
            let e = check(bad).unwrap_err();
            assert!(e.contains(&format!("plans.p.plugin_limits.{field}")), "{e}");
        }
    }

    /// A plugin's digest is `sha256:` and 64 lower-case hex digits,
    /// exactly.
    #[test]
    fn digests_are_checked() {
        let good = digest(b"x");
        assert!(check_digest("d", &good).is_ok());
        let hex = &good["sha256:".len()..];
        for bad in [
            format!("sha256:{}", &hex[1..]),
            format!("sha256:{hex}0"),
            format!("sha256:{}", hex.to_uppercase()),
            format!("sha256:{}g", &hex[1..]),
            format!("sha512:{hex}"),
            hex.to_owned(),
            "sha256:".into(),
        ] {
            assert!(check_digest("d", &bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn windows_parse_and_print() {
        for (s, ms) in [
            ("1s", 1000),
            ("500ms", 500),
            ("2m", 120_000),
            ("1h", 3_600_000),
            ("1d", 86_400_000),
        ] {
            let w: Window = s.parse().unwrap();
            assert_eq!(w.0, Duration::from_millis(ms));
            assert_eq!(w.to_string(), s);
        }
        assert_eq!("90s".parse::<Window>().unwrap().to_string(), "90s");
        assert_eq!("60s".parse::<Window>().unwrap().to_string(), "1m");
        for bad in ["", "s", "10", "1w", "-1s", "99999999999999999999d"] {
            assert!(bad.parse::<Window>().is_err(), "{bad}");
        }
    }

    #[test]
    fn limit_specs_parse() {
        let l = LimitSpec::parse("rps=10/1s,burst=20").unwrap();
        assert_eq!(
            (l.name.as_str(), l.rate, l.burst, l.cost),
            ("rps", 10, Some(20), None)
        );
        assert!(LimitSpec::parse("rps").is_err());
        assert!(LimitSpec::parse("rps=ten/1s").is_err());
        assert!(LimitSpec::parse("rps=10/1s,speed=3").is_err());
    }
}

#[cfg(test)]
mod status_and_policy_tests {
    use super::*;

    #[test]
    fn a_key_is_active_until_it_expires_or_is_revoked() {
        let key = |expires, revoked| ApiKey {
            tenant: "t".into(),
            hash: String::new(),
            created: 100,
            expires,
            revoked,
        };
        assert_eq!(key(None, false).status(1_000), KeyStatus::Active);
        assert_eq!(key(Some(200), false).status(199), KeyStatus::Active);
        assert_eq!(key(Some(200), false).status(200), KeyStatus::Expired);
        assert_eq!(key(Some(200), true).status(150), KeyStatus::Revoked);
        let names: Vec<_> = [KeyStatus::Active, KeyStatus::Expired, KeyStatus::Revoked]
            .iter()
            .map(|s| s.as_str())
            .collect();
        assert_eq!(names, ["active", "expired", "revoked"]);
    }

    #[test]
    fn the_default_failure_policy_is_left_out_of_documents() {
        // The default is what an empty document means.
        let spec = PluginSpec::default();
        assert_eq!(serde_json::from_str::<PluginSpec>("{}").unwrap(), spec);
        let skip = serde_json::to_value(&spec).unwrap();
        assert!(skip.get("on_error").is_none(), "{skip}");
        let fail = serde_json::to_value(PluginSpec {
            on_error: OnFailure::Fail,
            ..spec
        })
        .unwrap();
        assert_eq!(fail["on_error"], "fail");
        let read: PluginSpec = serde_json::from_value(fail).unwrap();
        assert_eq!(read.on_error, OnFailure::Fail);
    }

    #[test]
    fn plugin_lang_is_left_out_for_wasm_and_read_by_name() {
        let wasm = serde_json::to_value(PluginSpec::default()).unwrap();
        assert!(wasm.get("lang").is_none(), "{wasm}");
        let python: PluginSpec = serde_json::from_str(r#"{"lang": "python"}"#).unwrap();
        assert_eq!(python.lang, PluginLang::Python);
        assert_eq!(serde_json::to_value(&python).unwrap()["lang"], "python");
        assert!(serde_json::from_str::<PluginSpec>(r#"{"lang": "ruby"}"#).is_err());
        assert_eq!(PluginLang::of_path("hook.py".as_ref()), PluginLang::Python);
        assert_eq!(PluginLang::of_path("HOOK.PY".as_ref()), PluginLang::Python);
        assert_eq!(PluginLang::of_path("hook.wasm".as_ref()), PluginLang::Wasm);
        assert_eq!(PluginLang::of_path("hook".as_ref()), PluginLang::Wasm);
        assert_eq!(PluginLang::Python.as_str(), "python");
        assert_eq!(PluginLang::Wasm.as_str(), "wasm");
    }

    #[test]
    fn a_plugin_is_checked_under_each_plan_it_reaches_once() {
        let limits = |fuel| PluginLimits {
            fuel: Some(fuel),
            memory_bytes: None,
            deadline: None,
            ..Default::default()
        };
        let mut spec = Spec::default();
        for (name, fuel) in [("a", Some(1)), ("b", Some(2)), ("c", None)] {
            spec.plans.insert(
                name.into(),
                Plan {
                    plugin_limits: fuel.map(limits),
                    ..Plan::default()
                },
            );
        }
        spec.tenants.insert("t".into(), Tenant::new("b"));
        spec.tenants.insert("u".into(), Tenant::new("a"));
        let attach = |tenants: &[&str], plans: &[&str]| Attach {
            tenants: tenants.iter().map(|s| s.to_string()).collect(),
            plans: plans.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(spec.plugin_limits_of(&attach(&[], &[])), [None]);
        assert_eq!(
            spec.plugin_limits_of(&attach(&["t", "u", "nobody"], &["a", "c"])),
            [Some(limits(1)), None, Some(limits(2))]
        );
        assert_eq!(
            spec.plugin_limits_of(&attach(&["t"], &[])),
            [Some(limits(2))]
        );

        // A plugin's own limits over each plan's: the fuel it sets wins,
        // the memory it leaves unset is the plan's; plans that differ only
        // in what it overrides are one.
        spec.plans.get_mut("a").unwrap().plugin_limits = Some(PluginLimits {
            fuel: Some(1),
            memory_bytes: Some(1 << 20),
            deadline: None,
            ..Default::default()
        });
        let own = limits(7);
        assert_eq!(
            spec.plugin_limits_for(&attach(&[], &["a", "b", "c"]), Some(&own)),
            [
                Some(PluginLimits {
                    fuel: Some(7),
                    memory_bytes: Some(1 << 20),
                    deadline: None,
                    ..Default::default()
                }),
                Some(limits(7)),
            ]
        );
        assert_eq!(
            spec.plugin_limits_for(&attach(&[], &[]), Some(&own)),
            [Some(limits(7))]
        );
        let deadline = PluginLimits {
            fuel: None,
            memory_bytes: None,
            deadline: Some(Window(Duration::from_millis(5))),
            ..Default::default()
        };
        assert_eq!(
            deadline.over(Some(&limits(3))),
            PluginLimits {
                fuel: Some(3),
                memory_bytes: None,
                deadline: Some(Window(Duration::from_millis(5))),
                ..Default::default()
            }
        );
        assert_eq!(
            spec.plugin_limits_for(&attach(&["t"], &[]), None),
            spec.plugin_limits_of(&attach(&["t"], &[]))
        );
        let kv = |entries, bytes| PluginLimits {
            kv_entries: entries,
            kv_bytes: bytes,
            ..PluginLimits::default()
        };
        assert_eq!(
            kv(Some(1), None).over(Some(&kv(Some(2), Some(3)))),
            kv(Some(1), Some(3))
        );
        assert_eq!(
            kv(None, Some(4)).over(Some(&kv(Some(2), Some(3)))),
            kv(Some(2), Some(4))
        );
    }

    #[test]
    fn plan_plugin_limits_are_bounded() {
        let plan = |l: PluginLimits| {
            let mut spec = Spec::default();
            spec.plans.insert(
                "p".into(),
                Plan {
                    plugin_limits: Some(l),
                    ..Plan::default()
                },
            );
            spec.validate().map_err(|e| e.to_string())
        };
        let kv = |entries, bytes| PluginLimits {
            kv_entries: entries,
            kv_bytes: bytes,
            ..PluginLimits::default()
        };
        assert!(plan(kv(Some(1), Some(1024))).is_ok());
        assert!(plan(kv(Some(10_000_000), Some(1 << 30))).is_ok());
        for (bad, field) in [
            (kv(Some(0), None), "kv_entries"),
            (kv(Some(10_000_001), None), "kv_entries"),
            (kv(None, Some(1023)), "kv_bytes"),
            (kv(None, Some((1 << 30) + 1)), "kv_bytes"),
        ] {
            let e = plan(bad).unwrap_err();
            assert!(e.contains(&format!("plans.p.plugin_limits.{field}")), "{e}");
        }
    }

    #[test]
    fn a_change_rechecks_the_plugins_it_moves_under_new_limits_only() {
        let fuel = |f| {
            Some(PluginLimits {
                fuel: Some(f),
                ..PluginLimits::default()
            })
        };
        let mut before = Spec::default();
        for (name, f) in [("a", 1), ("b", 2)] {
            before.plans.insert(
                name.into(),
                Plan {
                    plugin_limits: fuel(f),
                    ..Plan::default()
                },
            );
        }
        before.tenants.insert("t".into(), Tenant::new("a"));
        let plugin = |tenants: &[&str], plans: &[&str], digest: &str| PluginSpec {
            digest: digest.into(),
            attach: Attach {
                tenants: tenants.iter().map(|s| s.to_string()).collect(),
                plans: plans.iter().map(|s| s.to_string()).collect(),
            },
            ..PluginSpec::default()
        };
        before.plugins.insert("p".into(), plugin(&["t"], &[], "d1"));
        before.plugins.insert("q".into(), plugin(&[], &["b"], "d2"));
        let due = |after: &Spec| -> Vec<(String, Vec<Option<PluginLimits>>)> {
            before
                .plugins_to_recheck(after)
                .into_iter()
                .map(|r| (r.name, r.limits))
                .collect()
        };
        // Nothing changed, or nothing a plugin runs under.
        assert!(due(&before).is_empty());
        let mut after = before.clone();
        after.plugins.get_mut("p").unwrap().config = "x".into();
        after.tenants.get_mut("t").unwrap().display_name = "T".into();
        assert!(due(&after).is_empty());
        // The tenant moved to b: p runs under b's limits now.
        let mut after = before.clone();
        after.tenants.get_mut("t").unwrap().plan = "b".into();
        assert_eq!(due(&after), [("p".to_owned(), vec![fuel(2)])]);
        // b's plugin limits changed: q runs under the new ones.
        let mut after = before.clone();
        after.plans.get_mut("b").unwrap().plugin_limits = fuel(3);
        assert_eq!(due(&after), [("q".to_owned(), vec![fuel(3)])]);
        // Its own limits: over each plan's.
        let mut after = before.clone();
        after.plugins.get_mut("q").unwrap().limits = fuel(9);
        assert_eq!(due(&after), [("q".to_owned(), vec![fuel(9)])]);
        // New bytes, or a new plugin: every limit it runs under, with the
        // digest and language to load.
        let mut after = before.clone();
        after.plugins.get_mut("q").unwrap().digest = "d3".into();
        let mut python = plugin(&["t"], &["b"], "d4");
        python.lang = PluginLang::Python;
        after.plugins.insert("r".into(), python);
        let all = before.plugins_to_recheck(&after);
        assert_eq!(all.len(), 2);
        assert_eq!(
            (all[0].name.as_str(), all[0].digest.as_str(), &all[0].limits),
            ("q", "d3", &vec![fuel(2)])
        );
        assert_eq!(all[1].lang, PluginLang::Python);
        assert_eq!(all[1].limits, [fuel(2), fuel(1)]);
        // Detached from everything, or its only tenant gone, it runs for
        // nobody: nothing to check (an upload checks under the defaults).
        let mut after = before.clone();
        after.plugins.get_mut("q").unwrap().attach = Attach::default();
        after.tenants.clear();
        after.plugins.get_mut("q").unwrap().limits = fuel(9);
        assert!(due(&after).is_empty());
    }
}
