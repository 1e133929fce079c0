//! Output: tables for people, stable JSON for scripts; data on stdout,
//! diagnostics on stderr.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// `s` as it may reach a terminal: control characters (an escape sequence
/// in a tenant's name, say, typed by whoever onboarded it) are written as
/// Rust escapes (`\u{1b}`), so stored text can never move the cursor,
/// retitle the window or hide a line. Line breaks stay when `lines`.
pub(crate) fn shown(s: &str, lines: bool) -> std::borrow::Cow<'_, str> {
    let kept = |c: char| !c.is_control() || (lines && c == '\n');
    if s.chars().all(kept) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if kept(c) {
            out.push(c);
        } else {
            out.extend(c.escape_default());
        }
    }
    out.into()
}

/// Where and how results are written.
pub(crate) struct Out {
    json: bool,
}

/// Rows under a header, printed in aligned columns.
pub(crate) struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, row: Vec<String>) {
        self.rows.push(
            row.into_iter()
                .map(|c| shown(&c, false).into_owned())
                .collect(),
        );
    }

    pub(crate) fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<w$}  "));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

impl Out {
    pub(crate) fn new(json: bool) -> Self {
        Out { json }
    }

    pub(crate) fn json(&self) -> bool {
        self.json
    }

    /// Raw text on stdout.
    #[allow(clippy::print_stdout)]
    pub(crate) fn text(&self, text: &str) {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
    }

    pub(crate) fn json_value(&self, value: &serde_json::Value) {
        let mut s = serde_json::to_string_pretty(value).expect("json serializes");
        s.push('\n');
        self.text(&s);
    }

    /// A change was made: a line on stderr for people, the object as JSON.
    pub(crate) fn done(&self, message: &str, json: serde_json::Value) {
        if self.json {
            self.json_value(&json);
        } else {
            eprintln!("{}", shown(message, true));
        }
    }

    /// A list: a table, or a JSON array.
    pub(crate) fn list(&self, table: Table, json: Vec<serde_json::Value>) {
        if self.json {
            self.json_value(&serde_json::Value::Array(json));
        } else {
            self.text(&table.render());
        }
    }

    /// One object: `field  value` lines, or JSON.
    pub(crate) fn record(&self, fields: &[(&str, String)], json: serde_json::Value) {
        if self.json {
            self.json_value(&json);
            return;
        }
        let w = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
        let mut s = String::new();
        for (k, v) in fields {
            let v = shown(v, false);
            s.push_str(format!("{:<w$} {v}", format!("{k}:")).trim_end());
            s.push('\n');
        }
        self.text(&s);
    }
}

/// A spinner on stderr while something slow runs (only on a terminal).
pub(crate) struct Progress {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    started: Instant,
    what: &'static str,
}

impl Progress {
    pub(crate) fn start(what: &'static str) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let thread = std::io::stderr().is_terminal().then(|| {
            let done = done.clone();
            std::thread::spawn(move || {
                let frames = ['|', '/', '-', '\\'];
                let mut i = 0;
                while !done.load(Ordering::Relaxed) {
                    eprint!("\r{} {what}…", frames[i % 4]);
                    i += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                eprint!("\r\x1b[2K");
            })
        });
        Progress {
            done,
            thread,
            started: Instant::now(),
            what,
        }
    }

    pub(crate) fn finish(mut self) {
        self.stop();
        if self.started.elapsed() > Duration::from_millis(500) || self.thread.is_none() {
            eprintln!(
                "{} done in {:.1} s",
                self.what,
                self.started.elapsed().as_secs_f64()
            );
        }
    }

    fn stop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop();
    }
}
