//! Who calls: admin tokens from `Authorization: Bearer`, checked against
//! the hashes in the store, and the state the reads answer from.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use http::request::Parts;
use http::{HeaderMap, header};
use parking_lot::Mutex;

use super::Admin;
use super::problem::Problem;
use crate::keys;
use crate::model::{Scope, State};
use crate::store::Version;
use crate::{Control, ControlError};

/// The last state read, reused while the store is at its version — the
/// same revision from the same commit (one cheap version read per request
/// instead of the whole document).
/// A write through this API leaves the state it committed, so nothing is
/// reloaded; after a write made elsewhere, one request reloads it and the
/// others wait for that load instead of each reading the whole document.
#[derive(Debug, Default)]
pub(crate) struct Cached {
    state: Mutex<Option<Arc<State>>>,
    loading: tokio::sync::Mutex<()>,
}

impl Cached {
    /// The store's current state.
    pub(crate) async fn get(&self, control: &Control) -> Result<Arc<State>, ControlError> {
        let store = control.store().as_ref();
        let version = store.version().await?;
        if let Some(s) = self.current(version) {
            return Ok(s);
        }
        if let Some(s) = control
            .newest_committed()
            .filter(|s| s.version().matches(&version))
        {
            self.keep(&s);
            return Ok(s);
        }
        let _loading = self.loading.lock().await;
        if let Some(s) = self.current(version) {
            return Ok(s);
        }
        let fresh = Arc::new(store.load().await?);
        self.keep(&fresh);
        Ok(fresh)
    }

    /// Keeps `state` in place of the one kept, unless that one is newer (a
    /// concurrent write's: the store has the last word at the next read).
    /// One of the same revision is replaced: it may be of a commit the
    /// store lost. The one it replaces is dropped on a blocking thread:
    /// freeing a document of thousands of tenants takes milliseconds no
    /// request should wait for.
    fn keep(&self, state: &Arc<State>) {
        let old = {
            let mut slot = self.state.lock();
            if slot.as_ref().is_some_and(|s| s.revision > state.revision) {
                return;
            }
            slot.replace(state.clone())
        };
        if let Some(old) = old {
            tokio::task::spawn_blocking(move || drop(old));
        }
    }

    /// The cached state if the store is at its version.
    fn current(&self, version: Version) -> Option<Arc<State>> {
        self.state
            .lock()
            .as_ref()
            .filter(|s| s.version().matches(&version))
            .cloned()
    }
}

/// The token of a request, checked: its id and scope, and the state read
/// with it.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) id: String,
    pub(crate) scope: Scope,
    pub(crate) state: Arc<State>,
}

impl Caller {
    /// The control plane, writing as this caller, on condition of the
    /// request's `If-Match` version if it has one.
    pub(crate) fn control(&self, admin: &Admin, headers: &HeaderMap) -> Result<Control, Problem> {
        if !self.scope.allows(Scope::Write) {
            return Err(Problem::forbidden(
                "this token is read-only; writes need a token of scope `write`",
            ));
        }
        let version = if_match(headers)?;
        Ok(admin
            .control
            .clone()
            .actor(format!("token:{}", self.id))
            .if_version(version)
            .based_on(self.state.clone()))
    }
}

/// `If-Match: "17-00f3a9c2d4e5b617"` (an ETag as given) → that version;
/// `"17"` → revision 17 from whichever commit; `*` or none → `None`;
/// anything else matches no version (412).
fn if_match(headers: &HeaderMap) -> Result<Option<Version>, Problem> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(None);
    }
    text.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .and_then(|t| t.parse::<Version>().ok())
        .map(Some)
        .ok_or_else(|| {
            Problem::new(
                http::StatusCode::PRECONDITION_FAILED,
                "stale",
                "The store changed since the revision in If-Match",
                "If-Match names no revision of this store (send the ETag as given)",
            )
        })
}

impl FromRequestParts<Admin> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, admin: &Admin) -> Result<Self, Problem> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .ok_or_else(|| Problem::unauthorized("send Authorization: Bearer <admin token>"))?;
        let id =
            keys::token_id_of(token).ok_or_else(|| Problem::unauthorized("not an admin token"))?;
        let state = admin.cached.get(&admin.control).await?;
        let stored = state
            .tokens
            .get(id)
            .filter(|t| !t.revoked)
            .filter(|t| keys::constant_time_eq(t.hash.as_bytes(), keys::hash(token).as_bytes()))
            .ok_or_else(|| Problem::unauthorized("unknown or revoked admin token"))?;
        Ok(Caller {
            id: id.to_owned(),
            scope: stored.scope,
            state,
        })
    }
}
