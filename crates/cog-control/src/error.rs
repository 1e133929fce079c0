//! Errors: [`ControlError`] for store operations, [`Invalid`] for data that
//! breaks a rule.

use std::fmt;

/// Data that breaks a rule, with the path of the offending field
/// (`plans.free.limits[0].rate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Where: a dotted path into the document.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

impl Invalid {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for Invalid {}

impl From<Invalid> for ControlError {
    fn from(invalid: Invalid) -> Self {
        ControlError::Invalid(invalid)
    }
}

/// What can go wrong reading or changing the control plane.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The change or document breaks a rule. (Not the error's source:
    /// its text is already in this one's, and a chain of sources would
    /// print it twice.)
    #[error("invalid: {0}")]
    Invalid(Invalid),
    /// A document could not be parsed.
    #[error("cannot parse {what}: {message}")]
    Parse {
        /// Which document (a file name, "store").
        what: String,
        /// The parser's message, with the path of the offending field.
        message: String,
    },
    /// What the store holds cannot be read (a torn or hand-edited file,
    /// foreign bytes in Redis, a blob that does not match its digest):
    /// the store failed, not the caller's input.
    #[error("the store is unreadable: {what}: {message}")]
    Corrupt {
        /// Which store, file or blob.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// The named object does not exist.
    #[error("{kind} `{id}` not found")]
    NotFound {
        /// `plan`, `tenant`, `key`, `plugin`.
        kind: &'static str,
        /// Its id or name.
        id: String,
    },
    /// The object already exists.
    #[error("{kind} `{id}` already exists")]
    Exists {
        /// `plan`, `tenant`, `key`, `plugin`.
        kind: &'static str,
        /// Its id or name.
        id: String,
    },
    /// Something else still refers to the object.
    #[error("{kind} `{id}` is in use by {by}")]
    InUse {
        /// `plan`, `tenant`.
        kind: &'static str,
        /// Its id or name.
        id: String,
        /// Who uses it.
        by: String,
    },
    /// Another writer changed the store between read and write; retried
    /// by [`Control::update`](crate::Control::update) until it goes through.
    #[error("the store changed underneath (revision {expected} expected, {found} found)")]
    Conflict {
        /// The revision the change was based on.
        expected: u64,
        /// The revision in the store.
        found: u64,
    },
    /// A write made on condition of a revision ([`Control::if_revision`](crate::Control::if_revision),
    /// [`Control::if_version`](crate::Control::if_version), an HTTP
    /// `If-Match`) found the store at another one — or at the same
    /// revision from another commit, after the store went back: read
    /// again, then decide.
    #[error(
        "the store no longer holds the state of revision {expected} (it is at revision {found}): read it again"
    )]
    Stale {
        /// The revision the write was conditioned on.
        expected: u64,
        /// The store's revision.
        found: u64,
    },
    /// The store URL is not one this build understands.
    #[error("unsupported store `{0}` (use file:PATH or redis://HOST:PORT)")]
    BadUrl(String),
    /// The store holds a schema this version does not read.
    #[error("the store has schema version {found}; this build reads {supported}")]
    Schema {
        /// In the store.
        found: u32,
        /// What this build reads.
        supported: u32,
    },
    /// Reading or writing the file store failed.
    #[error("file store {path}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The Redis store failed (unreachable, timed out…); the source says
    /// how.
    #[error("redis store failed")]
    Redis {
        /// The client's error, or the timeout.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A plugin's bytes are not a valid module.
    #[error("plugin rejected: {0}")]
    Plugin(String),
    /// The services' plugin data store ([`Control::plugin_data`](crate::Control::plugin_data))
    /// failed: a delete whose data it had to clear was not made (try
    /// again), or a partition moved without its plugin data copied ahead.
    #[error("the plugin data store failed: {outcome}")]
    PluginData {
        /// What came of the call: `nothing was deleted`, or the move made.
        outcome: String,
        /// The store's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ControlError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        ControlError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
