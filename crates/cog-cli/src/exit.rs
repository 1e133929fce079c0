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
        let text = e.to_string();
        match e {
            ControlError::Invalid(_) | ControlError::Parse { .. } | ControlError::BadUrl(_) => {
                Exit::Usage(text)
            }
            ControlError::NotFound { .. }
            | ControlError::Exists { .. }
            | ControlError::InUse { .. } => Exit::State(text),
            ControlError::Plugin(_) => Exit::Plugin(text),
            // Corrupt, Io, Redis, Schema, Conflict: the store failed.
            _ => Exit::Store(text),
        }
    }
}

pub(crate) type Result<T = ()> = std::result::Result<T, Exit>;
