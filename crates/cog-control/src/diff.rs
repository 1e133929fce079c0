//! What `apply` would change: the differences between a store's [`Spec`]
//! and a declarative one.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::{PluginSpec, Spec};

/// One difference between a store and a declarative [`Spec`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "admin", derive(utoipa::ToSchema))]
pub struct Change {
    /// `create`, `update` or `delete`.
    pub action: &'static str,
    /// `plan`, `tenant` or `plugin`.
    pub kind: &'static str,
    /// Its name or id.
    pub id: String,
}

fn diff_maps<V: PartialEq>(
    kind: &'static str,
    have: &BTreeMap<String, V>,
    want: &BTreeMap<String, V>,
    prune: bool,
    out: &mut Vec<Change>,
    same: impl Fn(&V, &V) -> bool,
) {
    for (id, w) in want {
        let action = match have.get(id) {
            None => "create",
            Some(h) if !same(h, w) => "update",
            Some(_) => continue,
        };
        out.push(Change {
            action,
            kind,
            id: id.clone(),
        });
    }
    if prune {
        for id in have.keys().filter(|id| !want.contains_key(*id)) {
            out.push(Change {
                action: "delete",
                kind,
                id: id.clone(),
            });
        }
    }
}

/// The changes that turn `have` into `want` (deletions only with `prune`).
pub fn diff(have: &Spec, want: &Spec, prune: bool) -> Vec<Change> {
    let mut out = Vec::new();
    diff_maps("plan", &have.plans, &want.plans, prune, &mut out, |a, b| {
        a == b
    });
    diff_maps(
        "tenant",
        &have.tenants,
        &want.tenants,
        prune,
        &mut out,
        |a, b| a == b,
    );
    // `file` is where the bytes came from, not part of the stored plugin.
    diff_maps(
        "plugin",
        &have.plugins,
        &want.plugins,
        prune,
        &mut out,
        |a, b| {
            PluginSpec {
                file: None,
                ..a.clone()
            } == PluginSpec {
                file: None,
                ..b.clone()
            }
        },
    );
    out
}
