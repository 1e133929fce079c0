//! Which quota applies to a request: [`QuotaSource`].

use std::collections::HashMap;
use std::future::{Future, ready};

use http::request::Parts;

use crate::quota::Quota;

/// An error resolving a quota; the layer answers `503`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Resolves the quota for a request's subject, per request.
///
/// `Ok(None)` means "no limit for this subject". A static [`Quota`] is a
/// source that gives the same quota to everyone; [`StaticQuotas`] adds
/// per-subject overrides; a control plane (tenant plans) implements this
/// trait to look quotas up, typically from a cache.
pub trait QuotaSource: Send + Sync + 'static {
    /// The quota for `subject`, extracted from the request `parts`.
    fn quota(
        &self,
        subject: &str,
        parts: &Parts,
    ) -> impl Future<Output = Result<Option<Quota>, BoxError>> + Send;

    /// What [`quota`](Self::quota) answers, now, when it is known without
    /// waiting (an in-memory source); `None` otherwise. The layer decides
    /// without its asynchronous machinery when both this and the store
    /// answer at once. Default: `None`.
    fn quota_now(&self, subject: &str, parts: &Parts) -> Option<Result<Option<Quota>, BoxError>> {
        let _ = (subject, parts);
        None
    }
}

impl QuotaSource for Quota {
    fn quota(
        &self,
        _: &str,
        _: &Parts,
    ) -> impl Future<Output = Result<Option<Quota>, BoxError>> + Send {
        ready(Ok(Some(self.clone())))
    }

    fn quota_now(&self, _: &str, _: &Parts) -> Option<Result<Option<Quota>, BoxError>> {
        Some(Ok(Some(self.clone())))
    }
}

/// A default quota plus per-subject overrides, fixed at start-up.
#[derive(Debug, Clone, Default)]
pub struct StaticQuotas {
    default: Option<Quota>,
    overrides: HashMap<String, Option<Quota>>,
}

impl StaticQuotas {
    /// Every subject gets `default` unless overridden.
    pub fn new(default: Quota) -> Self {
        StaticQuotas {
            default: Some(default),
            overrides: HashMap::new(),
        }
    }

    /// Only overridden subjects are limited; others pass unlimited.
    pub fn none_by_default() -> Self {
        StaticQuotas::default()
    }

    /// Gives `subject` its own quota.
    pub fn with(mut self, subject: impl Into<String>, quota: Quota) -> Self {
        self.overrides.insert(subject.into(), Some(quota));
        self
    }

    /// Exempts `subject` from limits.
    pub fn unlimited(mut self, subject: impl Into<String>) -> Self {
        self.overrides.insert(subject.into(), None);
        self
    }

    fn lookup(&self, subject: &str) -> Option<Quota> {
        match self.overrides.get(subject) {
            Some(q) => q.clone(),
            None => self.default.clone(),
        }
    }
}

impl QuotaSource for StaticQuotas {
    fn quota(
        &self,
        subject: &str,
        _: &Parts,
    ) -> impl Future<Output = Result<Option<Quota>, BoxError>> + Send {
        ready(Ok(self.lookup(subject)))
    }

    fn quota_now(&self, subject: &str, _: &Parts) -> Option<Result<Option<Quota>, BoxError>> {
        Some(Ok(self.lookup(subject)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limit;

    #[test]
    fn overrides_and_exemptions() {
        let base = Quota::single(Limit::per_second(1)).unwrap();
        let big = Quota::single(Limit::per_second(100)).unwrap();
        let s = StaticQuotas::new(base.clone())
            .with("vip", big.clone())
            .unlimited("ops");
        assert_eq!(s.lookup("anyone"), Some(base));
        assert_eq!(s.lookup("vip"), Some(big));
        assert_eq!(s.lookup("ops"), None);
        assert_eq!(StaticQuotas::none_by_default().lookup("x"), None);
    }
}
