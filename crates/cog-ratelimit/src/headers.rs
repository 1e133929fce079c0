//! The IETF httpapi RateLimit header fields, structured-field form
//! (draft-ietf-httpapi-ratelimit-headers-09):
//!
//! ```text
//! RateLimit-Policy: "10-per-1s";q=10;w=1, "10000-per-1d";q=10000;w=86400
//! RateLimit: "10-per-1s";r=3;t=1, "10000-per-1d";r=9876;t=2
//! ```

use std::fmt::Write;
use std::time::Duration;

use cog_core::text::{HeaderText, number_value};
use http::HeaderValue;

use crate::decision::Decision;
use crate::quota::{LimitKind, Quota};

/// `RateLimit-Policy`: one item per limit, `q` units per `w` seconds.
/// Built once per quota ([`Quota::policy_header`]).
pub(crate) fn policy(quota: &Quota) -> HeaderValue {
    quota.policy_header().clone()
}

/// What [`policy`] answers, built when the quota is.
pub(crate) fn policy_of(limits: &[crate::Limit]) -> HeaderValue {
    let mut out = String::with_capacity(48 * limits.len());
    for (i, limit) in limits.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        sf_string(&mut out, &limit.name());
        let (q, w) = limit.policy();
        let _ = write!(out, ";q={q};w={w}");
        if matches!(limit.kind(), LimitKind::Concurrency { .. }) {
            out.push_str(";qu=\"concurrent-requests\"");
        }
    }
    to_value(out)
}

/// A limit's name as a structured-field string (quoted, escaped), built
/// when the quota is.
pub(crate) fn quoted_name(limit: &crate::Limit) -> Box<str> {
    let mut out = String::new();
    sf_string(&mut out, &limit.name());
    out.into_boxed_str()
}

/// `RateLimit`: one item per limit, `r` remaining, `t` seconds to reset.
/// On every response: the names come quoted from the quota, the numbers
/// are written without the formatting machinery.
pub(crate) fn current(quota: &Quota, decision: &Decision) -> HeaderValue {
    let names = quota.quoted_names();
    let mut out = HeaderText::new();
    for (i, (name, status)) in names.iter().zip(decision.statuses()).enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(name);
        out.push_str(";r=");
        out.push_u64(status.remaining);
        out.push_str(";t=");
        out.push_u64(ceil_secs(status.reset_after));
    }
    // Names are validated printable ASCII; numbers are digits.
    out.to_value()
        .unwrap_or_else(|| HeaderValue::from_static(""))
}

/// `Retry-After` in whole seconds, rounded up, at least 1.
pub(crate) fn retry_after(d: Duration) -> HeaderValue {
    number_value(ceil_secs(d).max(1))
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_nanos().div_ceil(1_000_000_000) as u64
}

fn sf_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

fn to_value(s: String) -> HeaderValue {
    // Names are validated printable ASCII; numbers are digits.
    HeaderValue::try_from(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limit;

    #[test]
    fn policy_field() {
        let q = Quota::new([
            Limit::per_second(10),
            Limit::per_day(10_000).named("daily \"quota\""),
            Limit::concurrency(4),
        ])
        .unwrap();
        assert_eq!(
            policy(&q),
            "\"10-per-1s\";q=10;w=1, \"daily \\\"quota\\\"\";q=10000;w=86400, \"concurrency-4\";q=4;w=60;qu=\"concurrent-requests\""
        );
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after(Duration::from_millis(1)), "1");
        assert_eq!(retry_after(Duration::from_millis(1001)), "2");
        assert_eq!(retry_after(Duration::ZERO), "1");
    }
}
