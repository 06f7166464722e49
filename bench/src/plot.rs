//! The run's plot as a self-contained SVG: latency percentiles per window (log scale) above,
//! throughput per window below.
//!
//! Written by hand rather than with a plotting crate: two line charts need a few dozen lines
//! of SVG, and the harness stays a light build.

use std::fmt::Write;

use crate::broker_report::{BrokerReport, Window};

const WIDTH: f64 = 900.0;
const PANEL_HEIGHT: f64 = 260.0;
const MARGIN_LEFT: f64 = 70.0;
const MARGIN_RIGHT: f64 = 170.0;
const MARGIN_TOP: f64 = 40.0;
const GAP: f64 = 70.0;

/// One line of a chart.
struct Series<'a> {
    name: &'a str,
    color: &'a str,
    value: fn(&Window) -> f64,
}

/// The SVG document for `r`.
pub fn svg(r: &BrokerReport) -> String {
    let mut out = String::new();
    let height = MARGIN_TOP + 2.0 * PANEL_HEIGHT + GAP + 50.0;
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let title = format!(
        "{} — {} ({} B, target {})",
        escape(&r.workload_name),
        escape(&r.broker_address),
        r.workload.message_size,
        if r.workload.producer_rate == 0.0 {
            "max".to_string()
        } else {
            format!("{:.0} rec/s", r.workload.producer_rate)
        }
    );
    let _ = writeln!(
        out,
        r#"<text x="{MARGIN_LEFT}" y="22" font-size="15">{title}</text>"#
    );
    let latency = [
        Series {
            name: "publish p50",
            color: "#1f77b4",
            value: |w| w.publish_latency_p50_ms,
        },
        Series {
            name: "publish p99",
            color: "#ff7f0e",
            value: |w| w.publish_latency_p99_ms,
        },
        Series {
            name: "publish p99.9",
            color: "#d62728",
            value: |w| w.publish_latency_p99_9_ms,
        },
        Series {
            name: "publish max",
            color: "#7f7f7f",
            value: |w| w.publish_latency_max_ms,
        },
        Series {
            name: "end-to-end p99",
            color: "#2ca02c",
            value: |w| w.end_to_end_latency_p99_ms,
        },
    ];
    let throughput = [
        Series {
            name: "publish MB/s",
            color: "#1f77b4",
            value: |w| w.publish_mb_per_s,
        },
        Series {
            name: "consume MB/s",
            color: "#2ca02c",
            value: |w| w.consume_mb_per_s,
        },
    ];
    panel(
        &mut out,
        &r.windows,
        MARGIN_TOP,
        "latency per window (ms, log scale)",
        &latency,
        true,
    );
    let top = MARGIN_TOP + PANEL_HEIGHT + GAP;
    panel(
        &mut out,
        &r.windows,
        top,
        "throughput per window (MB/s)",
        &throughput,
        false,
    );
    let _ = writeln!(
        out,
        r#"<text x="{MARGIN_LEFT}" y="{}">time since the first send (s); shaded: warm-up and backlog</text>"#,
        height - 12.0
    );
    out.push_str("</svg>\n");
    out
}

fn panel(
    out: &mut String,
    windows: &[Window],
    top: f64,
    title: &str,
    series: &[Series<'_>],
    log: bool,
) {
    let plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let x_max = windows
        .iter()
        .map(|w| w.start_s + w.duration_s)
        .fold(1.0f64, f64::max);
    let values = windows
        .iter()
        .flat_map(|w| series.iter().map(move |s| (s.value)(w)));
    let y_max = values
        .clone()
        .fold(0.0f64, f64::max)
        .max(if log { 1.0 } else { 0.001 });
    let y_min_log = values
        .filter(|v| *v > 0.0)
        .fold(f64::MAX, f64::min)
        .min(y_max / 10.0)
        .max(0.001);
    let (lo, hi) = if log {
        (
            y_min_log.log10().floor(),
            y_max.log10().ceil().max(y_min_log.log10().floor() + 1.0),
        )
    } else {
        (0.0, nice_ceiling(y_max))
    };
    let x = |s: f64| MARGIN_LEFT + s / x_max * plot_w;
    let y = |v: f64| {
        let f = if log {
            (v.max(10f64.powf(lo)).log10() - lo) / (hi - lo)
        } else {
            v / hi
        };
        top + PANEL_HEIGHT - f.clamp(0.0, 1.0) * PANEL_HEIGHT
    };
    let _ = writeln!(
        out,
        r#"<text x="{MARGIN_LEFT}" y="{}" font-weight="bold">{title}</text>"#,
        top - 8.0
    );
    for w in windows
        .iter()
        .filter(|w| !matches!(w.phase, crate::run::Phase::Test | crate::run::Phase::Drain))
    {
        let _ = writeln!(
            out,
            r##"<rect x="{:.1}" y="{top}" width="{:.1}" height="{PANEL_HEIGHT}" fill="#eeeeee"/>"##,
            x(w.start_s),
            (x(w.start_s + w.duration_s) - x(w.start_s)).max(0.0)
        );
    }
    let _ = writeln!(
        out,
        r#"<rect x="{MARGIN_LEFT}" y="{top}" width="{plot_w}" height="{PANEL_HEIGHT}" fill="none" stroke="black"/>"#
    );
    let ticks: Vec<f64> = if log {
        (lo as i32..=hi as i32).map(|e| 10f64.powi(e)).collect()
    } else {
        (0..=4).map(|i| hi * f64::from(i) / 4.0).collect()
    };
    for t in ticks {
        let ty = y(t);
        let _ = writeln!(
            out,
            r##"<line x1="{MARGIN_LEFT}" x2="{:.1}" y1="{ty:.1}" y2="{ty:.1}" stroke="#dddddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            MARGIN_LEFT + plot_w,
            MARGIN_LEFT - 6.0,
            ty + 4.0,
            label(t)
        );
    }
    for i in 0..=4 {
        let s = x_max * f64::from(i) / 4.0;
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x(s),
            top + PANEL_HEIGHT + 16.0,
            label(s)
        );
    }
    for (i, s) in series.iter().enumerate() {
        let points: Vec<String> = windows
            .iter()
            .filter(|w| w.duration_s > 0.0 && (!log || (s.value)(w) > 0.0))
            .map(|w| {
                format!(
                    "{:.1},{:.1}",
                    x(w.start_s + w.duration_s / 2.0),
                    y((s.value)(w))
                )
            })
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            s.color,
            points.join(" ")
        );
        let ly = top + 14.0 + 18.0 * i as f64;
        let lx = MARGIN_LEFT + plot_w + 12.0;
        let _ = writeln!(
            out,
            r#"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            lx + 20.0,
            s.color,
            lx + 26.0,
            ly + 4.0,
            s.name
        );
    }
}

/// 1, 2 or 5 times a power of ten, at least `v`.
fn nice_ceiling(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

fn label(v: f64) -> String {
    if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the axis bounds: a nice ceiling is never below the data.
    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.7), 1.0);
        assert_eq!(nice_ceiling(13.0), 20.0);
        assert_eq!(nice_ceiling(450.0), 500.0);
        assert_eq!(nice_ceiling(100.0), 100.0);
    }
}
