//! Why a plugin could not be loaded or a call did not complete.

/// Everything that can go wrong with a plugin. Loading errors come from
/// [`Runtime::load`](crate::Runtime::load); the others end one call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// The bytes are not a valid WebAssembly module (or do not compile).
    #[error("invalid module: {0}")]
    InvalidModule(String),
    /// The module declares more linear memory than the cap allows.
    #[error("the module declares {declared_pages} memory pages; the cap is {cap_pages}")]
    MemoryTooLarge {
        /// Pages the module asks for at start.
        declared_pages: u64,
        /// Pages allowed.
        cap_pages: u32,
    },
    /// An import is not part of the host API, or has the wrong type
    /// (WASI, a filesystem, anything but `cog`'s functions).
    #[error("import not allowed: {0}")]
    ForbiddenImport(String),
    /// A required export is missing or has the wrong type.
    #[error("bad export: {0}")]
    BadExport(String),
    /// The module was built for another ABI version.
    #[error("plugin ABI version {found}, host speaks {expected}")]
    AbiVersion {
        /// What the plugin reported.
        found: i32,
        /// What this host implements.
        expected: i32,
    },
    /// Instantiation failed (start function trapped, tables too large…).
    #[error("instantiation failed: {0}")]
    Instantiate(String),
    /// The CPU budget ran out.
    #[error("fuel exhausted")]
    FuelExhausted,
    /// The wall-clock deadline passed.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// Linear memory could not grow past the cap, and the plugin trapped.
    #[error("memory limit reached")]
    MemoryLimit,
    /// The guest trapped (unreachable, division by zero, stack overflow…);
    /// the source is the engine's trap, with its message.
    #[error("the plugin trapped")]
    Trap(#[source] Cause),
    /// A pointer/length pair passed to a host function is outside the
    /// plugin's memory.
    #[error("{function}: pointer out of bounds")]
    OutOfBounds {
        /// The host function.
        function: &'static str,
    },
    /// The plugin wrote more than `max_output_bytes` (body or reject).
    #[error("output limit exceeded")]
    OutputLimit,
    /// The plugin's header changes would take the header list past
    /// `max_header_list_bytes`.
    #[error("header list limit exceeded")]
    HeaderLimit,
    /// The plugin logged more than `max_log_bytes`.
    #[error("log limit exceeded")]
    LogLimit,
    /// A KV key or value over its limit, or the scope is full.
    #[error("kv limit exceeded: {0}")]
    KvLimit(&'static str),
    /// The request or response body is larger than `max_input_bytes`.
    #[error("body larger than the plugin input limit")]
    InputTooLarge,
    /// The hook returned something other than 0.
    #[error("hook returned {0}")]
    BadReturn(i32),
    /// A Python plugin's source does not load: a syntax error, an
    /// exception in module-level code, or no `on_request` /
    /// `on_response`.
    #[error("invalid Python plugin: {0}")]
    InvalidScript(String),
    /// A Python hook raised an exception it did not catch (or returned
    /// something other than `None`, or exited the interpreter): the
    /// exception's type and message, and where in `plugin.py`.
    #[error("the plugin raised {0}")]
    Exception(String),
    /// The plugin could not be loaded (see [`Plugin::unavailable`](crate::Plugin::unavailable)):
    /// every request it applies to meets its failure policy.
    #[error("the plugin could not be loaded: {0}")]
    Unavailable(String),
}

impl PluginError {
    /// A short, stable name for metrics and logs (`fuel`, `deadline`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            PluginError::InvalidModule(_) => "invalid_module",
            PluginError::MemoryTooLarge { .. } => "memory_too_large",
            PluginError::ForbiddenImport(_) => "forbidden_import",
            PluginError::BadExport(_) => "bad_export",
            PluginError::AbiVersion { .. } => "abi_version",
            PluginError::Instantiate(_) => "instantiate",
            PluginError::FuelExhausted => "fuel",
            PluginError::DeadlineExceeded => "deadline",
            PluginError::MemoryLimit => "memory",
            PluginError::Trap(_) => "trap",
            PluginError::OutOfBounds { .. } => "out_of_bounds",
            PluginError::OutputLimit => "output_limit",
            PluginError::HeaderLimit => "header_limit",
            PluginError::LogLimit => "log_limit",
            PluginError::KvLimit(_) => "kv_limit",
            PluginError::InputTooLarge => "input_too_large",
            PluginError::BadReturn(_) => "bad_return",
            PluginError::InvalidScript(_) => "invalid_script",
            PluginError::Exception(_) => "exception",
            PluginError::Unavailable(_) => "unavailable",
        }
    }

    /// Whether the plugin hit one of its limits (as opposed to failing).
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            PluginError::FuelExhausted
                | PluginError::DeadlineExceeded
                | PluginError::MemoryLimit
                | PluginError::OutputLimit
                | PluginError::HeaderLimit
                | PluginError::LogLimit
                | PluginError::KvLimit(_)
                | PluginError::InputTooLarge
        )
    }
}

/// The underlying error of a [`PluginError`] (the engine's trap) or a
/// [`KvError`](crate::KvError) (the Redis client's): reachable
/// through [`source()`](std::error::Error::source), shared so the error
/// stays cheap to clone, and compared by message.
#[derive(Clone)]
pub struct Cause(std::sync::Arc<dyn std::error::Error + Send + Sync>);

impl Cause {
    /// Wraps `e`: what a [`KvStore`](crate::KvStore) of your own puts in
    /// [`KvError::Unavailable`](crate::KvError::Unavailable).
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Cause(std::sync::Arc::new(e))
    }

    /// A cause that is only a message.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn message(text: &'static str) -> Self {
        Cause(std::sync::Arc::from(Box::<
            dyn std::error::Error + Send + Sync,
        >::from(text)))
    }
}

impl std::fmt::Debug for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0) || self.to_string() == other.to_string()
    }
}

impl Eq for Cause {}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn causes_compare_by_message_and_keep_their_source() {
        let io = || std::io::Error::other("trap: unreachable");
        let a = PluginError::Trap(Cause::new(io()));
        assert_eq!(a, PluginError::Trap(Cause::new(io())));
        assert_eq!(a, a.clone());
        assert_ne!(
            a,
            PluginError::Trap(Cause::new(std::io::Error::other("trap: stack overflow")))
        );
        assert_eq!(a.to_string(), "the plugin trapped");
        assert_eq!(a.source().unwrap().to_string(), "trap: unreachable");
    }

    #[test]
    fn python_errors_have_kinds_and_none_is_a_limit() {
        let script = PluginError::InvalidScript("SyntaxError".into());
        let exception = PluginError::Exception("ValueError: boom".into());
        assert_eq!(script.kind(), "invalid_script");
        assert_eq!(exception.kind(), "exception");
        assert!(!script.is_limit() && !exception.is_limit());
        assert_eq!(script.to_string(), "invalid Python plugin: SyntaxError");
        assert_eq!(exception.to_string(), "the plugin raised ValueError: boom");
    }

    #[test]
    fn the_header_limit_is_a_limit_of_its_own_kind() {
        let e = PluginError::HeaderLimit;
        assert_eq!(e.kind(), "header_limit");
        assert!(e.is_limit());
        assert_eq!(e.to_string(), "header list limit exceeded");
    }
}
