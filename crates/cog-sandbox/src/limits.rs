//! What one plugin call may use.

use std::time::Duration;

/// Hard limits for each call of a plugin. Exceeding any of them ends that
/// call with a typed [`PluginError`](crate::PluginError); the host and other
/// calls are unaffected.
///
/// The defaults suit a request filter: 10 M metering points (roughly that
/// many wasm instructions), 16 MiB of linear memory, 50 ms of wall-clock
/// time, 1 MiB in and out, 16 KiB of logs, 64 KiB KV values, header lists
/// up to 64 KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Limits {
    /// CPU budget in metering points (one per wasm operator).
    pub fuel: u64,
    /// Linear memory cap in bytes (rounded down to 64 KiB pages). A module
    /// that declares more is refused when it is loaded.
    pub memory_bytes: u64,
    /// Wall-clock deadline of one call, host calls included.
    pub deadline: Duration,
    /// Largest body handed to a plugin (bytes); a larger one is not read.
    pub max_input_bytes: usize,
    /// Largest body a plugin may write, and largest reject body.
    pub max_output_bytes: usize,
    /// Log bytes one call may write.
    pub max_log_bytes: usize,
    /// Largest KV key (bytes).
    pub max_kv_key_bytes: usize,
    /// Largest KV value (bytes).
    pub max_kv_value_bytes: usize,
    /// KV entries one (tenant, plugin) scope may hold.
    pub max_kv_entries: usize,
    /// Bytes of keys and values together one (tenant, plugin) scope may
    /// hold. A scope over it (the limit lowered) may shrink but not grow.
    pub max_kv_bytes: usize,
    /// Largest header name or value a plugin may read or set.
    pub max_header_bytes: usize,
    /// Largest header list a plugin may leave behind, counted as HTTP/2
    /// does: every name and value, and 32 bytes per field. A list that
    /// was larger before the call may shrink but not grow.
    pub max_header_list_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 10_000_000,
            memory_bytes: 16 << 20,
            deadline: Duration::from_millis(50),
            max_input_bytes: 1 << 20,
            max_output_bytes: 1 << 20,
            max_log_bytes: 16 << 10,
            max_kv_key_bytes: 256,
            max_kv_value_bytes: 64 << 10,
            max_kv_entries: 10_000,
            max_kv_bytes: 16 << 20,
            max_header_bytes: 8 << 10,
            max_header_list_bytes: 64 << 10,
        }
    }
}

impl Limits {
    /// Defaults for a Python plugin: an interpreter needs more room than a
    /// wasm module — 200 M metering points, 64 MiB of linear memory,
    /// 100 ms; the other limits as [`Limits::default`].
    pub fn python() -> Self {
        Limits {
            fuel: 200_000_000,
            memory_bytes: 64 << 20,
            deadline: Duration::from_millis(100),
            ..Limits::default()
        }
    }

    /// Sets [`fuel`](Self::fuel).
    pub fn fuel(mut self, fuel: u64) -> Self {
        self.fuel = fuel;
        self
    }

    /// Sets [`memory_bytes`](Self::memory_bytes).
    pub fn memory_bytes(mut self, bytes: u64) -> Self {
        self.memory_bytes = bytes;
        self
    }

    /// Sets [`deadline`](Self::deadline).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Sets [`max_input_bytes`](Self::max_input_bytes).
    pub fn max_input_bytes(mut self, bytes: usize) -> Self {
        self.max_input_bytes = bytes;
        self
    }

    /// Sets [`max_output_bytes`](Self::max_output_bytes).
    pub fn max_output_bytes(mut self, bytes: usize) -> Self {
        self.max_output_bytes = bytes;
        self
    }

    /// Sets [`max_log_bytes`](Self::max_log_bytes).
    pub fn max_log_bytes(mut self, bytes: usize) -> Self {
        self.max_log_bytes = bytes;
        self
    }

    /// Sets [`max_kv_value_bytes`](Self::max_kv_value_bytes).
    pub fn max_kv_value_bytes(mut self, bytes: usize) -> Self {
        self.max_kv_value_bytes = bytes;
        self
    }

    /// Sets [`max_kv_entries`](Self::max_kv_entries).
    pub fn max_kv_entries(mut self, entries: usize) -> Self {
        self.max_kv_entries = entries;
        self
    }

    /// Sets [`max_kv_bytes`](Self::max_kv_bytes).
    pub fn max_kv_bytes(mut self, bytes: usize) -> Self {
        self.max_kv_bytes = bytes;
        self
    }

    /// Sets [`max_header_list_bytes`](Self::max_header_list_bytes).
    pub fn max_header_list_bytes(mut self, bytes: usize) -> Self {
        self.max_header_list_bytes = bytes;
        self
    }

    /// The memory cap in 64 KiB wasm pages (at least one).
    pub(crate) fn memory_pages(&self) -> u32 {
        (self.memory_bytes / 65_536).clamp(1, 65_536) as u32
    }
}
