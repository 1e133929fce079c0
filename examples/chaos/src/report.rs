//! What the run measured, per scenario: requests, availability, latency
//! during the fault, time to recover — as text and as an SVG timeline.

use std::fmt::Write as _;

use crate::load::{Outcome, Record};

/// A fault as it happened, in milliseconds into the run.
#[derive(Clone, Debug)]
pub(crate) struct Window {
    pub(crate) name: &'static str,
    pub(crate) start_ms: u32,
    pub(crate) end_ms: u32,
    /// Until when its recovery is watched (the next fault's start).
    pub(crate) watch_until_ms: u32,
}

/// One scenario's figures.
#[derive(Clone, Debug)]
pub(crate) struct Figures {
    pub(crate) name: &'static str,
    /// Requests due from the fault's start to the end of its watch.
    pub(crate) requests: usize,
    /// Of those, answered without a 5xx.
    pub(crate) availability: f64,
    /// 503s (a fail-closed answer), counted apart.
    pub(crate) unavailable: usize,
    pub(crate) server_errors: usize,
    pub(crate) transport: usize,
    /// Latency of the requests due during the fault.
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    /// From the fault's end to the end of the last 250 ms in which fewer
    /// than 99 % of requests were available, or 0.
    pub(crate) recovery_ms: u32,
}

const BUCKET_MS: u32 = 250;

fn percentile(mut v: Vec<u32>, p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    f64::from(v[i]) / 1000.0
}

/// Figures of `w` from `records` (sorted by due time).
pub(crate) fn figures(records: &[Record], w: &Window) -> Figures {
    let from = records.partition_point(|r| r.at_ms < w.start_ms);
    let to = records.partition_point(|r| r.at_ms < w.watch_until_ms);
    let all = &records[from..to];
    let count = |o: Outcome| all.iter().filter(|r| r.outcome == o).count();
    let available = all.iter().filter(|r| r.outcome.available()).count();
    let during: Vec<u32> = all
        .iter()
        .filter(|r| r.at_ms < w.end_ms)
        .map(|r| r.latency_us)
        .collect();
    // The last bad bucket after the fault ended.
    let mut recovery_ms = 0;
    let mut at = w.end_ms;
    while at < w.watch_until_ms {
        let a = records.partition_point(|r| r.at_ms < at);
        let b = records.partition_point(|r| r.at_ms < at + BUCKET_MS);
        let bucket = &records[a..b];
        if !bucket.is_empty() {
            let ok = bucket.iter().filter(|r| r.outcome.available()).count();
            if (ok as f64) < 0.99 * bucket.len() as f64 {
                recovery_ms = at + BUCKET_MS - w.end_ms;
            }
        }
        at += BUCKET_MS;
    }
    Figures {
        name: w.name,
        requests: all.len(),
        availability: if all.is_empty() {
            1.0
        } else {
            available as f64 / all.len() as f64
        },
        unavailable: count(Outcome::Unavailable),
        server_errors: count(Outcome::ServerError),
        transport: count(Outcome::Transport),
        p50_ms: percentile(during.clone(), 0.50),
        p99_ms: percentile(during, 0.99),
        recovery_ms,
    }
}

/// The figures as a Markdown table.
pub(crate) fn table(rows: &[Figures], total: &Figures) -> String {
    let mut s = String::from(
        "| scenario | requests | availability | 503 | other 5xx | no answer | p50 during | p99 during | recovered after |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for f in rows.iter().chain([total]) {
        let _ = writeln!(
            s,
            "| {} | {} | {:.3} % | {} | {} | {} | {:.1} ms | {:.1} ms | {:.2} s |",
            f.name,
            f.requests,
            f.availability * 100.0,
            f.unavailable,
            f.server_errors,
            f.transport,
            f.p50_ms,
            f.p99_ms,
            f64::from(f.recovery_ms) / 1000.0
        );
    }
    s
}

/// A timeline: availability and p99 latency per second, the faults shaded.
pub(crate) fn svg(records: &[Record], windows: &[Window], end_ms: u32) -> String {
    let (w, h, left, top, plot_h) = (1000.0, 360.0, 60.0, 20.0, 260.0);
    let plot_w = w - left - 20.0;
    let secs = (end_ms / 1000 + 1) as usize;
    let x = |ms: f64| left + plot_w * ms / f64::from(end_ms.max(1));
    let mut per_sec = vec![(0usize, 0usize, Vec::new()); secs];
    for r in records {
        let s = &mut per_sec[(r.at_ms / 1000) as usize];
        s.0 += 1;
        s.1 += usize::from(r.outcome.available());
        s.2.push(r.latency_us);
    }
    let p99: Vec<f64> = per_sec
        .iter()
        .map(|s| percentile(s.2.clone(), 0.99))
        .collect();
    let max_ms = p99.iter().copied().fold(10.0_f64, f64::max);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n"
    );
    for (i, win) in windows.iter().enumerate() {
        let (a, b) = (x(f64::from(win.start_ms)), x(f64::from(win.end_ms)));
        let _ = writeln!(
            s,
            "<rect x=\"{a:.1}\" y=\"{top}\" width=\"{:.1}\" height=\"{plot_h}\" fill=\"#f4c7c3\"/>\
             <text x=\"{a:.1}\" y=\"{:.1}\" fill=\"#a33\">{}</text>",
            (b - a).max(1.0),
            top + plot_h + 14.0 + 12.0 * (i % 3) as f64,
            i + 1
        );
    }
    // Axes: availability 90–100 % on the left, p99 on the right.
    let y_avail = |a: f64| top + plot_h * (1.0 - ((a - 0.9) / 0.1).clamp(0.0, 1.0));
    let y_lat = |ms: f64| top + plot_h * (1.0 - (ms / max_ms).clamp(0.0, 1.0));
    let _ = writeln!(
        s,
        "<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{:.1}\" stroke=\"#444\"/>\
         <line x1=\"{left}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#444\"/>\
         <text x=\"4\" y=\"{:.1}\">100 %</text><text x=\"4\" y=\"{:.1}\">90 %</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#36c\">p99 {max_ms:.0} ms</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{} s</text>",
        top + plot_h,
        top + plot_h,
        left + plot_w,
        top + plot_h,
        top + 4.0,
        top + plot_h,
        left + plot_w,
        top + 10.0,
        left + plot_w,
        top + plot_h + 14.0,
        end_ms / 1000
    );
    let mut avail = String::new();
    let mut lat = String::new();
    for (i, (n, ok, _)) in per_sec.iter().enumerate() {
        if *n == 0 {
            continue;
        }
        let px = x(i as f64 * 1000.0 + 500.0);
        let _ = write!(avail, "{px:.1},{:.1} ", y_avail(*ok as f64 / *n as f64));
        let _ = write!(lat, "{px:.1},{:.1} ", y_lat(p99[i]));
    }
    let _ = writeln!(
        s,
        "<polyline points=\"{lat}\" fill=\"none\" stroke=\"#36c\" stroke-width=\"1\"/>\n\
         <polyline points=\"{avail}\" fill=\"none\" stroke=\"#2a2\" stroke-width=\"1.5\"/>\n\
         <text x=\"{left}\" y=\"{:.1}\" fill=\"#2a2\">availability per second (green, 90–100 %), p99 latency per second (blue), faults shaded and numbered</text>\n</svg>",
        h - 6.0
    );
    s
}
