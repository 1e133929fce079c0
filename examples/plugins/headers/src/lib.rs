//! Adds and strips headers, as its configuration says, one rule per line:
//!
//! ```text
//! request add x-served-by: edge-1
//! request strip x-internal-
//! response add x-powered-by: cog
//! response strip server
//! ```
//!
//! `strip` removes every header whose name starts with the prefix.
#![allow(unsafe_code)] // `export_plugin!` exports the hooks with `#[unsafe(no_mangle)]`.

use cog_pdk::{Error, Plugin, Which};

/// The plugin.
pub struct Headers;

/// One configured rule.
#[derive(Debug, PartialEq, Eq)]
pub enum Rule {
    /// Set `name: value`.
    Add(String, String),
    /// Remove names starting with this.
    Strip(String),
}

/// The rules for `which`, from the configuration text; unknown lines are
/// ignored.
pub fn rules(config: &str, which: Which) -> Vec<Rule> {
    let phase = match which {
        Which::Request => "request",
        Which::Response => "response",
    };
    config
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix(phase)?.trim_start();
            if let Some(h) = rest.strip_prefix("add ") {
                let (name, value) = h.split_once(':')?;
                Some(Rule::Add(
                    name.trim().to_ascii_lowercase(),
                    value.trim().to_owned(),
                ))
            } else {
                let prefix = rest.strip_prefix("strip ")?.trim().to_ascii_lowercase();
                (!prefix.is_empty()).then_some(Rule::Strip(prefix))
            }
        })
        .collect()
}

fn apply(which: Which) -> Result<(), Error> {
    let config = String::from_utf8_lossy(&cog_pdk::config()).into_owned();
    for rule in rules(&config, which) {
        match rule {
            Rule::Strip(prefix) => {
                for name in cog_pdk::header_names(which) {
                    if name.starts_with(&prefix) {
                        cog_pdk::remove_header(which, &name)?;
                    }
                }
            }
            Rule::Add(name, value) => cog_pdk::set_header(which, &name, &value)?,
        }
    }
    Ok(())
}

impl Plugin for Headers {
    fn on_request() -> Result<(), Error> {
        apply(Which::Request)
    }

    fn on_response() -> Result<(), Error> {
        apply(Which::Response)
    }
}

cog_pdk::export_plugin!(Headers, request, response);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rules_per_phase() {
        let cfg = "request add X-A: 1\nrequest strip x-internal-\nresponse add x-b: two words\nnonsense\nrequest strip \n";
        assert_eq!(
            rules(cfg, Which::Request),
            [
                Rule::Add("x-a".into(), "1".into()),
                Rule::Strip("x-internal-".into())
            ]
        );
        assert_eq!(
            rules(cfg, Which::Response),
            [Rule::Add("x-b".into(), "two words".into())]
        );
    }
}
