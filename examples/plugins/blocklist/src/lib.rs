//! Rejects requests from blocked callers, per tenant. The caller is the
//! value of a header (configuration: the header name, default
//! `x-user-id`); a caller is blocked when the plugin's KV store holds
//! `block:<value>` for the request's tenant — so each tenant keeps its own
//! list, and one tenant's entries never block another's callers. The
//! entry's value, if any, is the reason sent back with the 403.
#![allow(unsafe_code)] // `export_plugin!` exports the hooks with `#[unsafe(no_mangle)]`.

use cog_pdk::{Error, Plugin, Which};

/// The plugin.
pub struct Blocklist;

/// The KV key for `caller`.
pub fn key(caller: &str) -> Vec<u8> {
    let mut k = b"block:".to_vec();
    k.extend_from_slice(caller.as_bytes());
    k
}

impl Plugin for Blocklist {
    fn on_request() -> Result<(), Error> {
        let config = String::from_utf8_lossy(&cog_pdk::config())
            .trim()
            .to_owned();
        let header = if config.is_empty() {
            "x-user-id"
        } else {
            &config
        };
        let Some(caller) = cog_pdk::header(Which::Request, header) else {
            return Ok(());
        };
        if let Some(reason) = cog_pdk::kv::get(&key(&caller))? {
            let body = if reason.is_empty() {
                b"blocked".to_vec()
            } else {
                reason
            };
            cog_pdk::log(cog_pdk::Level::Info, &format!("blocked caller {caller}"));
            cog_pdk::reject(403, &body)?;
        }
        Ok(())
    }
}

cog_pdk::export_plugin!(Blocklist, request);
