//! Cursor pagination of list endpoints.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

/// `?limit=&cursor=` of a list endpoint.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1–1000 (default 100).
    pub limit: Option<u32>,
    /// Where the previous page ended (its `next_cursor`).
    pub cursor: Option<String>,
}

/// Default items per page.
pub const DEFAULT_LIMIT: usize = 100;
/// Most items per page.
pub const MAX_LIMIT: usize = 1000;

impl PageQuery {
    pub(crate) fn limit(&self) -> usize {
        self.limit
            .map_or(DEFAULT_LIMIT, |l| (l as usize).clamp(1, MAX_LIMIT))
    }
}

/// One page of a list.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page<T> {
    /// The items, in order.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The page of `map` (by key) after `q.cursor`, each entry through `item`
/// (entries it answers `None` for are left out).
pub(crate) fn page<V, T>(
    map: &BTreeMap<String, V>,
    q: &PageQuery,
    mut item: impl FnMut(&str, &V) -> Option<T>,
) -> Page<T> {
    let limit = q.limit();
    let from = match q.cursor.as_deref() {
        Some(c) => Bound::Excluded(c),
        None => Bound::Unbounded,
    };
    let mut items = Vec::with_capacity(limit.min(64));
    let mut last = None;
    let mut more = false;
    for (k, v) in map.range::<str, _>((from, Bound::Unbounded)) {
        let Some(t) = item(k, v) else { continue };
        if items.len() == limit {
            more = true;
            break;
        }
        items.push(t);
        last = Some(k);
    }
    Page {
        items,
        next_cursor: if more { last.cloned() } else { None },
    }
}
