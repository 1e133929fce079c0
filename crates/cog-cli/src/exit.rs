//! How a command ends: the exit codes of `cog`.

use cog_control::ControlError;

/// How the command ended.
#[derive(Debug)]
pub(crate) enum Exit {
    /// 0.
    Ok,
    /// 1: `diff` found changes.
    Changes,
    /// 2: bad usage or invalid input.
    Usage(String),
    /// 3: not found, exists, in use.
    State(String),
    /// 4: the store failed.
    Store(String),
    /// 5: not confirmed.
    NotConfirmed(String),
    /// 6: a plugin was refused.
    Plugin(String),
}

impl From<ControlError> for Exit {
    fn from(e: ControlError) -> Exit {
        let text = chain(&e);
        match e {
            ControlError::Invalid(_) | ControlError::Parse { .. } | ControlError::BadUrl(_) => {
                Exit::Usage(text)
            }
            ControlError::NotFound { .. }
            | ControlError::Exists { .. }
            | ControlError::InUse { .. }
            | ControlError::Stale { .. } => Exit::State(text),
            ControlError::Plugin(_) => Exit::Plugin(text),
            // Corrupt, Io, Redis, Schema, Conflict: the store failed.
            _ => Exit::Store(text),
        }
    }
}

pub(crate) type Result<T = ()> = std::result::Result<T, Exit>;

/// `e` and its sources, as `a: b: c` (an error's own message does not
/// repeat its source's).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_errors_map_to_their_exit_codes() {
        use cog_control::ControlError as E;
        let exit = |e: E| Exit::from(e);
        assert!(matches!(exit(E::BadUrl("x".into())), Exit::Usage(_)));
        assert!(matches!(
            exit(E::NotFound {
                kind: "plan",
                id: "p".into()
            }),
            Exit::State(_)
        ));
        assert!(matches!(exit(E::Plugin("bad".into())), Exit::Plugin(_)));
        assert!(matches!(
            exit(E::Redis {
                source: "down".into()
            }),
            Exit::Store(_)
        ));
    }

    #[test]
    fn a_chain_lists_every_source_once() {
        let io = std::io::Error::other("disk on fire");
        let e = cog_control::ControlError::Io {
            path: "s.json".into(),
            source: io,
        };
        let text = chain(&e);
        assert!(text.ends_with(": disk on fire"), "{text}");
        assert_eq!(text.matches("disk on fire").count(), 1, "{text}");
    }

    /// A rule broken: its path and message once (they used to be printed
    /// twice, `invalid: P: M: P: M`, the text being both the error's own
    /// and its source's).
    #[test]
    fn a_broken_rule_is_told_once() {
        let e = cog_control::ControlError::from(cog_control::Invalid {
            path: "plans.p.limits[0].rate".into(),
            message: "0 is out of range".into(),
        });
        let told = "invalid: plans.p.limits[0].rate: 0 is out of range";
        assert_eq!(chain(&e), told);
        assert!(matches!(Exit::from(e), Exit::Usage(t) if t == told));
    }
}
