//! Horizontal bar charts as plain SVG text (no plotting dependency): one chart is a column of
//! panels, each panel a list of labelled bars (a bar may be stacked from several segments),
//! on a linear or logarithmic axis.

use std::fmt::Write;

pub struct Segment {
    pub value: f64,
    pub color: &'static str,
}

pub struct Bar {
    pub label: String,
    pub segments: Vec<Segment>,
    /// Text right of the plot area (the value, a ratio, or why there is no bar).
    pub note: String,
    /// Drawn in the highlight style (tasklet's own bars).
    pub highlight: bool,
}

pub struct Panel {
    pub title: String,
    pub unit: String,
    pub log: bool,
    pub bars: Vec<Bar>,
}

pub const TASKLET: &str = "#1f77b4";
pub const PEER: &str = "#9aa5b1";
pub const USER: &str = "#1f77b4";
pub const SYSTEM: &str = "#f0a35e";

const WIDTH: f64 = 980.0;
const LABEL_W: f64 = 300.0;
const PLOT_X: f64 = 310.0;
const PLOT_W: f64 = 420.0;
const NOTE_X: f64 = 740.0;
const ROW_H: f64 = 20.0;
const BAR_H: f64 = 13.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A "nice" step for about `target` ticks over `0..max`.
fn nice_step(max: f64, target: f64) -> f64 {
    let raw = max / target;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v >= 1e6 {
        format!("{}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{}k", v / 1e3)
    } else if v >= 1.0 {
        format!("{v}")
    } else {
        format!("{v:.2}").trim_end_matches('0').to_owned()
    }
}

/// Renders the chart: `title`, a `subtitle` line, the panels, and a legend.
pub fn chart(title: &str, subtitle: &str, panels: &[Panel], legend: &[(&str, &str)]) -> String {
    let mut body = String::new();
    let mut y = 58.0;
    for panel in panels {
        y = draw_panel(&mut body, panel, y) + 14.0;
    }
    let mut legend_x = PLOT_X;
    let legend_y = y + 4.0;
    for (name, color) in legend {
        let _ = write!(
            body,
            r#"<rect x="{legend_x}" y="{}" width="12" height="12" fill="{color}"/><text x="{}" y="{}" class="small">{}</text>"#,
            legend_y - 10.0,
            legend_x + 16.0,
            legend_y,
            esc(name)
        );
        legend_x += 24.0 + 7.0 * name.chars().count() as f64;
    }
    let height = y + if legend.is_empty() { 6.0 } else { 20.0 };
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">
<style>text {{ font-size: 12px; fill: #222; }} .title {{ font-size: 16px; font-weight: bold; }} .panel {{ font-size: 13px; font-weight: bold; }} .small {{ font-size: 11px; fill: #444; }} .hl {{ font-weight: bold; }}</style>
<rect width="100%" height="100%" fill="white"/>
<text x="12" y="24" class="title">{}</text>
<text x="12" y="44" class="small">{}</text>
"#,
        esc(title),
        esc(subtitle)
    );
    svg.push_str(&body);
    svg.push_str("\n</svg>\n");
    svg
}

/// Draws one panel from `y`; returns the y below it.
fn draw_panel(out: &mut String, panel: &Panel, mut y: f64) -> f64 {
    let _ = write!(out, r#"<text x="12" y="{}" class="panel">{}</text>"#, y + 12.0, esc(&panel.title));
    y += 22.0;
    let totals: Vec<f64> = panel.bars.iter().map(|b| b.segments.iter().map(|s| s.value).sum()).collect();
    let positive: Vec<f64> = totals.iter().copied().filter(|v| *v > 0.0 && v.is_finite()).collect();
    let max = positive.iter().copied().fold(0.0, f64::max);
    let min = positive.iter().copied().fold(f64::INFINITY, f64::min);
    // Axis: [lo, hi] in data units.
    let (lo, hi) = if panel.log && positive.is_empty() {
        (1.0, 10.0) // nothing measured (a partial run): an empty decade, not an endless tick loop
    } else if panel.log {
        let lo = 10f64.powf(min.max(1e-9).log10().floor());
        let hi = 10f64.powf(max.max(lo * 10.0).log10().ceil());
        (lo, hi)
    } else {
        let step = nice_step(max.max(1e-9), 5.0);
        (0.0, (max / step).ceil().max(1.0) * step)
    };
    let x_of = |v: f64| -> f64 {
        if panel.log {
            if v <= lo {
                0.0
            } else {
                PLOT_W * (v.log10() - lo.log10()) / (hi.log10() - lo.log10())
            }
        } else {
            PLOT_W * v / hi
        }
    };
    let top = y;
    // Axis line and ticks.
    let axis_y = top + ROW_H * panel.bars.len() as f64 + 2.0;
    let _ = write!(
        out,
        r##"<line x1="{PLOT_X}" y1="{axis_y}" x2="{}" y2="{axis_y}" stroke="#888"/>"##,
        PLOT_X + PLOT_W
    );
    let mut ticks = Vec::new();
    if panel.log {
        let mut t = lo;
        while t <= hi * 1.0001 {
            ticks.push(t);
            t *= 10.0;
        }
    } else {
        let step = nice_step(hi, 5.0);
        let mut t = 0.0;
        while t <= hi * 1.0001 {
            ticks.push(t);
            t += step;
        }
    }
    for t in ticks {
        let x = PLOT_X + x_of(t);
        let _ = write!(
            out,
            r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="#ddd"/><line x1="{x:.1}" y1="{axis_y}" x2="{x:.1}" y2="{}" stroke="#888"/><text x="{x:.1}" y="{}" text-anchor="middle" class="small">{}</text>"##,
            top - 2.0,
            axis_y,
            axis_y + 4.0,
            axis_y + 16.0,
            fmt_tick(t)
        );
    }
    for (bar, total) in panel.bars.iter().zip(&totals) {
        let class = if bar.highlight { r#" class="hl""# } else { "" };
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end"{class}>{}</text>"#,
            LABEL_W,
            y + BAR_H - 2.0,
            esc(&bar.label)
        );
        if *total > 0.0 && total.is_finite() {
            // Stacked segments: on a log axis the whole bar is scaled by its total and the
            // segments split it in proportion.
            let full = x_of(*total).max(1.5);
            let mut x = PLOT_X;
            for seg in &bar.segments {
                let w = full * seg.value / total;
                if w > 0.0 {
                    let _ = write!(
                        out,
                        r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{BAR_H}" fill="{}"/>"#,
                        seg.color
                    );
                }
                x += w;
            }
        }
        let _ = write!(
            out,
            r#"<text x="{NOTE_X}" y="{}" class="small">{}</text>"#,
            y + BAR_H - 2.0,
            esc(&bar.note)
        );
        y += ROW_H;
    }
    let _ = write!(
        out,
        r#"<text x="{}" y="{}" text-anchor="end" class="small">{}{}</text>"#,
        LABEL_W,
        axis_y + 16.0,
        esc(&panel.unit),
        if panel.log { " (log scale)" } else { "" }
    );
    axis_y + 22.0
}
