//! A run's timeline as a self-contained SVG: acknowledged records per second for each topic
//! and read records per second (all topics), one point per window, over translucent bands
//! where faults were in force, one color per fault kind.
//!
//! Rules: x is seconds since the run began, from 0 to the end of the window holding the last
//! event; a rate is the window's count divided by the full window length (so the last,
//! partial window reads low); a fault never healed extends to the last event; every text
//! from the history is escaped for XML. Written by hand rather than with a plotting crate, as
//! the bench's plot is.

use std::collections::BTreeSet;
use std::fmt::Write;

use crate::check::{fault_intervals, FaultInterval};
use crate::history::{Event, FaultKind, History};

const WIDTH: f64 = 900.0;
const PANEL_HEIGHT: f64 = 320.0;
const MARGIN_LEFT: f64 = 70.0;
const MARGIN_RIGHT: f64 = 190.0;
const MARGIN_TOP: f64 = 60.0;
const MARGIN_BOTTOM: f64 = 50.0;
const LEGEND_STEP: f64 = 18.0;
/// At most this many windows are drawn; a narrower window is widened to fit.
const WINDOWS_MAX: u64 = 5000;
const TOPIC_COLORS: [&str; 8] = [
    "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f",
];
const READ_COLOR: &str = "#000000";

/// One line of the chart: a rate per window.
struct Series {
    name: String,
    color: &'static str,
    dashed: bool,
    per_s: Vec<f64>,
}

/// The windows the run is cut into.
#[derive(Debug, Clone, Copy)]
struct Windows {
    window_ms: u64,
    count: u64,
    /// The time of the last event (0 without events).
    last_ms: u64,
}

impl Windows {
    fn new(h: &History, window_ms: u64) -> Self {
        let last_ms = h.events.iter().map(Event::t_ms).max().unwrap_or(0);
        let window_ms = window_ms.max(1).max((last_ms + 1).div_ceil(WINDOWS_MAX));
        Windows {
            window_ms,
            count: last_ms / window_ms + 1,
            last_ms,
        }
    }

    fn span_ms(self) -> u64 {
        self.count * self.window_ms
    }

    /// Records per second in each window, of the events `counts` picks.
    fn rate(self, h: &History, counts: impl Fn(&Event) -> bool) -> Vec<f64> {
        let mut per_window = vec![0u64; usize::try_from(self.count).unwrap_or(0)];
        for e in h.events.iter().filter(|e| counts(e)) {
            let i = usize::try_from(e.t_ms() / self.window_ms).unwrap_or(usize::MAX);
            if let Some(n) = per_window.get_mut(i) {
                *n += 1;
            }
        }
        let seconds = self.window_ms as f64 / 1000.0;
        per_window.iter().map(|n| *n as f64 / seconds).collect()
    }
}

/// The SVG document of `h`, with rates per `window_ms` (at least 1 ms, and wide enough for at
/// most 5000 windows).
pub fn svg(h: &History, window_ms: u64) -> String {
    let windows = Windows::new(h, window_ms);
    let series = series(h, windows);
    let faults = fault_intervals(h);
    let kinds: BTreeSet<FaultKind> = faults.iter().map(|f| f.fault).collect();
    let legend_rows = series.len() + kinds.len() + usize::from(!kinds.is_empty());
    let legend_height = LEGEND_STEP * legend_rows as f64 + 10.0;
    let height = MARGIN_TOP + PANEL_HEIGHT.max(legend_height) + MARGIN_BOTTOM;
    let chart = Chart::new(windows, &series);

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    title(&mut out, windows, faults.len());
    for f in &faults {
        band(&mut out, &chart, f, windows.last_ms);
    }
    axes(&mut out, &chart);
    for s in &series {
        line(&mut out, &chart, windows, s);
    }
    legend(&mut out, &series, &kinds);
    let _ = writeln!(
        out,
        r#"<text x="{MARGIN_LEFT}" y="{:.1}">seconds since the run began</text>"#,
        MARGIN_TOP + PANEL_HEIGHT + 38.0
    );
    out.push_str("</svg>\n");
    out
}

/// A line of acknowledged records per topic, then one of read records.
fn series(h: &History, windows: Windows) -> Vec<Series> {
    let mut topics: BTreeSet<&str> = h.topics.keys().map(String::as_str).collect();
    for e in &h.events {
        if let Event::Ack { topic, .. } = e {
            topics.insert(topic);
        }
    }
    let mut out: Vec<Series> = topics
        .iter()
        .zip(TOPIC_COLORS.iter().cycle())
        .map(|(topic, color)| Series {
            name: format!("{topic} acknowledged"),
            color,
            dashed: false,
            per_s: windows.rate(
                h,
                |e| matches!(e, Event::Ack { topic: t, .. } if t == topic),
            ),
        })
        .collect();
    out.push(Series {
        name: "read (all topics)".to_string(),
        color: READ_COLOR,
        dashed: true,
        per_s: windows.rate(h, |e| matches!(e, Event::Read { .. })),
    });
    out
}

/// The mapping from data to the plot area.
struct Chart {
    x_max_s: f64,
    /// The distance between y ticks, and the top of the y axis (a multiple of it, above the
    /// highest rate).
    y_step: f64,
    y_max: f64,
}

impl Chart {
    fn new(windows: Windows, series: &[Series]) -> Self {
        let peak = series
            .iter()
            .flat_map(|s| s.per_s.iter().copied())
            .fold(0.0f64, f64::max);
        let y_step = nice_ceiling(peak / 4.0);
        Chart {
            x_max_s: windows.span_ms() as f64 / 1000.0,
            y_step,
            y_max: y_step * ((peak / y_step).floor() + 1.0),
        }
    }

    fn plot_width() -> f64 {
        WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    }

    fn x(&self, s: f64) -> f64 {
        MARGIN_LEFT + (s / self.x_max_s).clamp(0.0, 1.0) * Self::plot_width()
    }

    fn y(&self, v: f64) -> f64 {
        MARGIN_TOP + PANEL_HEIGHT - (v / self.y_max).clamp(0.0, 1.0) * PANEL_HEIGHT
    }
}

fn title(out: &mut String, windows: Windows, faults: usize) {
    let _ = writeln!(
        out,
        r#"<text x="{MARGIN_LEFT}" y="24" font-size="15">tern chaos run: {} s, {faults} faults</text>"#,
        tick_label(windows.last_ms as f64 / 1000.0, 0.1)
    );
    let _ = writeln!(
        out,
        r#"<text x="{MARGIN_LEFT}" y="{:.1}" font-weight="bold">records per second ({} ms windows); shaded: faults in force</text>"#,
        MARGIN_TOP - 10.0,
        windows.window_ms
    );
}

/// One fault's translucent band, with its kind, target and times as a tooltip.
fn band(out: &mut String, chart: &Chart, f: &FaultInterval, last_ms: u64) {
    let end_ms = f.end_ms.unwrap_or(last_ms).max(f.start_ms);
    let (start_s, end_s) = (f.start_ms as f64 / 1000.0, end_ms as f64 / 1000.0);
    let x0 = chart.x(start_s);
    let width = (chart.x(end_s) - x0).max(1.0);
    let healed = if f.end_ms.is_some() {
        ""
    } else {
        ", not healed"
    };
    let _ = writeln!(
        out,
        r#"<rect class="fault-band" x="{x0:.1}" y="{MARGIN_TOP}" width="{width:.1}" height="{PANEL_HEIGHT}" fill="{}" fill-opacity="0.25"><title>{} {}: {start_s:.3}–{end_s:.3} s{healed}</title></rect>"#,
        fault_color(f.fault),
        f.fault.name(),
        escape(&f.target),
    );
}

fn axes(out: &mut String, chart: &Chart) {
    let plot_w = Chart::plot_width();
    let _ = writeln!(
        out,
        r#"<rect x="{MARGIN_LEFT}" y="{MARGIN_TOP}" width="{plot_w}" height="{PANEL_HEIGHT}" fill="none" stroke="black"/>"#
    );
    let y_ticks = (chart.y_max / chart.y_step).round() as u32;
    for i in 0..=y_ticks {
        let v = chart.y_step * f64::from(i);
        let ty = chart.y(v);
        let _ = writeln!(
            out,
            r##"<line x1="{MARGIN_LEFT}" x2="{:.1}" y1="{ty:.1}" y2="{ty:.1}" stroke="#dddddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            MARGIN_LEFT + plot_w,
            MARGIN_LEFT - 6.0,
            ty + 4.0,
            tick_label(v, chart.y_step)
        );
    }
    let step_s = nice_ceiling(chart.x_max_s / 8.0);
    let ticks = (chart.x_max_s / step_s).floor() as u32;
    for i in 0..=ticks {
        let s = step_s * f64::from(i);
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            chart.x(s),
            MARGIN_TOP + PANEL_HEIGHT + 16.0,
            tick_label(s, step_s)
        );
    }
    let mid_y = MARGIN_TOP + PANEL_HEIGHT / 2.0;
    let _ = writeln!(
        out,
        r#"<text x="16" y="{mid_y:.1}" text-anchor="middle" transform="rotate(-90 16 {mid_y:.1})">records/s</text>"#
    );
}

/// A series as a polyline through the middle of each window.
fn line(out: &mut String, chart: &Chart, windows: Windows, s: &Series) {
    let window_s = windows.window_ms as f64 / 1000.0;
    let points: Vec<String> = s
        .per_s
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let mid_s = (i as f64 + 0.5) * window_s;
            format!("{:.1},{:.1}", chart.x(mid_s), chart.y(*v))
        })
        .collect();
    let dash = if s.dashed {
        r#" stroke-dasharray="5,3""#
    } else {
        ""
    };
    let _ = writeln!(
        out,
        r#"<polyline fill="none" stroke="{}" stroke-width="1.5"{dash} points="{}"/>"#,
        s.color,
        points.join(" ")
    );
}

/// The series, then the fault kinds that occur.
fn legend(out: &mut String, series: &[Series], kinds: &BTreeSet<FaultKind>) {
    let lx = MARGIN_LEFT + Chart::plot_width() + 12.0;
    let mut ly = MARGIN_TOP + 10.0;
    for s in series {
        let dash = if s.dashed {
            r#" stroke-dasharray="5,3""#
        } else {
            ""
        };
        let _ = writeln!(
            out,
            r#"<line x1="{lx}" x2="{:.1}" y1="{ly:.1}" y2="{ly:.1}" stroke="{}" stroke-width="3"{dash}/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 20.0,
            s.color,
            lx + 26.0,
            ly + 4.0,
            escape(&s.name)
        );
        ly += LEGEND_STEP;
    }
    if kinds.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        r#"<text x="{lx}" y="{:.1}" font-weight="bold">faults</text>"#,
        ly + 4.0
    );
    ly += LEGEND_STEP;
    for kind in kinds {
        let _ = writeln!(
            out,
            r#"<rect x="{lx}" y="{:.1}" width="20" height="10" fill="{}" fill-opacity="0.25"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            ly - 5.0,
            fault_color(*kind),
            lx + 26.0,
            ly + 4.0,
            kind.name()
        );
        ly += LEGEND_STEP;
    }
}

fn fault_color(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::KillNode => "#d62728",
        FaultKind::KillLeader => "#ff7f0e",
        FaultKind::KillController => "#8b0000",
        FaultKind::Pause => "#1f77b4",
        FaultKind::Isolate => "#9467bd",
        FaultKind::Split => "#e377c2",
        FaultKind::OneWay => "#17becf",
        FaultKind::Bandwidth => "#bcbd22",
        FaultKind::DiskFull => "#8c564b",
        FaultKind::Delay => "#7f7f7f",
    }
}

/// 1, 2 or 5 times a power of ten, at least `v` (1 for anything not above 0).
fn nice_ceiling(v: f64) -> f64 {
    if !(v > 0.0 && v.is_finite()) {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

/// `v` with as many decimals as ticks `step` apart need.
fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 || !step.is_finite() || step <= 0.0 {
        0
    } else {
        (-step.log10().floor()).clamp(0.0, 6.0) as usize
    };
    format!("{v:.decimals$}")
}

/// `s` safe inside XML text and attribute values.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::history::{Acks, RecordId};

    fn ack(t_ms: u64, topic: &str, seq: u64) -> Event {
        Event::Ack {
            t_ms,
            topic: topic.to_string(),
            id: RecordId {
                producer: 0,
                partition: 0,
                seq,
            },
            offset: seq as i64,
        }
    }

    fn read(t_ms: u64, topic: &str, offset: i64) -> Event {
        Event::Read {
            t_ms,
            consumer: 0,
            topic: topic.to_string(),
            partition: 0,
            offset,
            value: format!("0-0-{offset}"),
        }
    }

    fn fault(t_ms: u64, fault: FaultKind, start: bool) -> Event {
        let target = "node 1".to_string();
        if start {
            Event::FaultStart {
                t_ms,
                fault,
                target,
            }
        } else {
            Event::FaultEnd {
                t_ms,
                fault,
                target,
            }
        }
    }

    fn run() -> History {
        let mut events = vec![fault(500, FaultKind::Pause, true)];
        for i in 0..50u64 {
            events.push(ack(i * 100, "orders", i));
            events.push(ack(i * 100 + 7, "payments", i));
            events.push(read(i * 100 + 50, "orders", i as i64));
        }
        events.push(fault(1500, FaultKind::Pause, false));
        events.push(fault(2000, FaultKind::KillNode, true));
        events.push(fault(2500, FaultKind::KillNode, false));
        events.push(fault(3000, FaultKind::Pause, true));
        events.sort_by_key(Event::t_ms);
        History {
            events,
            topics: BTreeMap::from([
                ("orders".to_string(), Acks::All),
                ("payments".to_string(), Acks::One),
            ]),
            final_log: vec![],
        }
    }

    fn assert_well_formed(svg: &str) {
        let trimmed = svg.trim();
        assert!(trimmed.starts_with("<svg"), "{svg}");
        assert!(trimmed.ends_with("</svg>"), "{svg}");
        for bad in ["NaN", "inf"] {
            assert!(!svg.contains(bad), "{bad} in {svg}");
        }
    }

    #[test]
    fn a_run_draws_as_a_well_formed_svg() {
        let svg = svg(&run(), 1000);
        assert_well_formed(&svg);
        assert!(svg.contains("orders acknowledged"));
        assert!(svg.contains("payments acknowledged"));
        assert!(svg.contains("read (all topics)"));
        assert_eq!(svg.matches("<polyline").count(), 3);
    }

    #[test]
    fn one_band_per_fault_interval_and_an_open_one_reaches_the_last_event() {
        let svg = svg(&run(), 1000);
        assert_eq!(svg.matches(r#"class="fault-band""#).count(), 3);
        assert!(
            svg.contains("pause node 1: 3.000–4.950 s, not healed"),
            "{svg}"
        );
        assert!(
            svg.contains("kill-node node 1: 2.000–2.500 s</title>"),
            "{svg}"
        );
        // The legend lists each kind that occurs once, and no other.
        assert_eq!(svg.matches(">pause</text>").count(), 1);
        assert_eq!(svg.matches(">kill-node</text>").count(), 1);
        assert!(!svg.contains(">split</text>"));
    }

    #[test]
    fn rates_are_per_second() {
        let h = run();
        let windows = Windows::new(&h, 1000);
        assert_eq!(windows.count, 5);
        let orders = windows.rate(
            &h,
            |e| matches!(e, Event::Ack { topic, .. } if topic == "orders"),
        );
        assert_eq!(orders, vec![10.0; 5]);
        let half = Windows::new(&h, 500);
        assert_eq!(half.rate(&h, |e| matches!(e, Event::Read { .. }))[0], 10.0);
    }

    #[test]
    fn empty_history_draws_without_nan() {
        let svg = svg(&History::default(), 1000);
        assert_well_formed(&svg);
        assert!(!svg.contains("fault-band"));
        let svg = super::svg(&History::default(), 0);
        assert_well_formed(&svg);
    }

    #[test]
    fn tiny_windows_over_a_long_run_are_widened() {
        let h = History {
            events: vec![ack(0, "t", 0), ack(3_600_000, "t", 1)],
            ..History::default()
        };
        let windows = Windows::new(&h, 1);
        assert!(windows.count <= WINDOWS_MAX);
        assert_well_formed(&svg(&h, 1));
    }

    #[test]
    fn text_is_escaped() {
        let mut h = run();
        h.topics.insert("a<b&\"c\"".to_string(), Acks::All);
        h.events.push(Event::FaultStart {
            t_ms: 4950,
            fault: FaultKind::Split,
            target: "1,2 | 3 <&>".to_string(),
        });
        let svg = svg(&h, 1000);
        assert!(
            svg.contains("a&lt;b&amp;&quot;c&quot; acknowledged"),
            "{svg}"
        );
        assert!(svg.contains("split 1,2 | 3 &lt;&amp;&gt;"), "{svg}");
        assert!(!svg.contains("<b&"));
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.7), 1.0);
        assert_eq!(nice_ceiling(13.0), 20.0);
        assert_eq!(nice_ceiling(450.0), 500.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(f64::NAN), 1.0);
    }

    #[test]
    fn tick_labels_follow_the_step() {
        assert_eq!(tick_label(10.0, 5.0), "10");
        assert_eq!(tick_label(0.5, 0.5), "0.5");
        assert_eq!(tick_label(0.25, 0.05), "0.25");
        assert_eq!(tick_label(3.0, f64::NAN), "3");
    }
}
