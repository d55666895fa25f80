//! `confab bench chart`: one SVG of confab beside Socket.IO from the JSON lines
//! of `confab bench ... --json` (as bench/compare.sh writes them).
//!
//! Panels: throughput; deliveries per server CPU-second; latency p50/p99/p999
//! (log scale); the sweep curve (p99 against offered deliveries/s); server memory
//! per idle connection. The issue's goals are drawn as dashed marks.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use plotters::coord::Shift;
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;

use super::ChartArgs;

const WIDTH: u32 = 1500;
const HEIGHT: u32 = 1480;
const FONT: &str = "sans-serif";

const CONFAB: RGBColor = RGBColor(31, 119, 180);
const SOCKETIO: RGBColor = RGBColor(230, 115, 0);
/// Light, middle, dark: p50, p99, p999.
const CONFAB_SHADES: [RGBColor; 3] = [
    RGBColor(158, 202, 225),
    RGBColor(66, 146, 198),
    RGBColor(8, 69, 148),
];
const SOCKETIO_SHADES: [RGBColor; 3] = [
    RGBColor(253, 208, 162),
    RGBColor(241, 105, 19),
    RGBColor(140, 45, 4),
];
const GOAL: RGBColor = RGBColor(200, 0, 60);
const FLOOR: RGBColor = RGBColor(150, 150, 150);
const TARGETS: [&str; 2] = ["confab", "socketio"];

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

pub(super) fn run(a: &ChartArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&a.input)
        .with_context(|| format!("cannot read {}", a.input.display()))?;
    let rows: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{} line {}: not JSON", a.input.display(), i + 1))
        })
        .collect::<anyhow::Result<_>>()?;
    if rows.is_empty() {
        bail!("{}: no results", a.input.display());
    }
    let output = a
        .output
        .clone()
        .unwrap_or_else(|| a.input.with_extension("svg"));
    draw(&rows, &output, a.subtitle.as_deref())?;
    println!("{}", output.display());
    if a.png {
        match png(&output) {
            Ok(p) => println!("{}", p.display()),
            Err(e) => eprintln!("confab: no PNG: {e:#}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Converts the SVG to a PNG beside it with `rsvg-convert`.
fn png(svg: &Path) -> anyhow::Result<PathBuf> {
    let out = svg.with_extension("png");
    let status = std::process::Command::new("rsvg-convert")
        .args(["--background-color", "white", "-o"])
        .arg(&out)
        .arg(svg)
        .status()
        .context("cannot run rsvg-convert (Debian: apt-get install librsvg2-bin)")?;
    if !status.success() {
        bail!("rsvg-convert failed: {status}");
    }
    Ok(out)
}

// ---------------------------------------------------------------- data

fn f(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

fn u(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn target_index(v: &Value) -> Option<usize> {
    let t = v.get("target").and_then(Value::as_str)?;
    TARGETS.iter().position(|&n| n == t)
}

/// 1000 → "1k", 10000 → "10k", 1500 → "1.5k".
fn count(n: u64) -> String {
    if n >= 1000 && n % 100 == 0 {
        let k = n as f64 / 1000.0;
        if k.fract() == 0.0 {
            format!("{k:.0}k")
        } else {
            format!("{k:.1}k")
        }
    } else {
        n.to_string()
    }
}

fn bytes(n: u64) -> String {
    if n >= 1024 && n % 1024 == 0 {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} B")
    }
}

/// 1234567 → "1.23M", 99612 → "99.6k", 950 → "950".
fn si(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// One scenario's figures for one target.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    throughput: Option<f64>,
    per_cpu: Option<f64>,
    lat: [Option<f64>; 3],
}

/// One scenario: its label, goals and figures per target.
#[derive(Debug, Default)]
struct Group {
    key: String,
    label: (String, String),
    goal_throughput: Option<f64>,
    goal_per_cpu: Option<f64>,
    goal_p99: Option<f64>,
    /// Has latency figures (the sweep's saturation point has only throughput).
    latency: bool,
    /// Deliveries/s offered (fan-out: rate × members; 0: unknown).
    offered: f64,
    /// Members and rate of a fan-out.
    fanout: Option<(u64, u64)>,
    /// p99 of `confab bench floor` for as many members: the kernel alone,
    /// with no server.
    floor_p99: Option<f64>,
    by_target: [Option<Figures>; 2],
}

/// The bar groups, in order of first appearance (a later run of the same
/// scenario and target replaces an earlier one).
fn groups(rows: &[Value]) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    for r in rows {
        let Some(t) = target_index(r) else { continue };
        let scenario = r.get("scenario").and_then(Value::as_str).unwrap_or("");
        let (members, rate, payload) = (u(r, "members"), u(r, "rate"), u(r, "payload"));
        let kind = r.get("type").and_then(Value::as_str).unwrap_or("text");
        let mut g = Group::default();
        let figures = match scenario {
            "fanout" => {
                g.key = format!("fanout/{members}/{rate}/{payload}/{kind}");
                g.label = (
                    format!("{} × {rate}/s", count(members)),
                    format!("fan-out, {}", bytes(payload)),
                );
                g.offered = (members * rate) as f64;
                g.fanout = Some((members, rate));
                g.latency = true;
                if payload <= 64 {
                    g.goal_p99 = match (members, rate) {
                        (1000, 100) => Some(5.0),
                        (10_000, 10) => Some(20.0),
                        _ => None,
                    };
                    if (members, rate) == (1000, 1000) {
                        g.goal_per_cpu = Some(1_500_000.0);
                    }
                }
                Figures {
                    throughput: f(r, "deliveries_per_s"),
                    per_cpu: f(r, "deliveries_per_server_cpu_s"),
                    lat: [f(r, "p50_ms"), f(r, "p99_ms"), f(r, "p999_ms")],
                }
            }
            "peer" => {
                let (pairs, window) = (u(r, "pairs"), u(r, "window"));
                g.key = format!("peer/{pairs}/{window}/{payload}");
                g.label = (
                    format!("peer {pairs} × {window}"),
                    "durable, acks".to_owned(),
                );
                g.latency = true;
                g.goal_throughput = Some(50_000.0);
                g.goal_p99 = Some(10.0);
                Figures {
                    throughput: f(r, "acked_per_s"),
                    per_cpu: f(r, "deliveries_per_server_cpu_s"),
                    lat: [f(r, "ack_p50_ms"), f(r, "ack_p99_ms"), f(r, "ack_p999_ms")],
                }
            }
            "sweep" if r.get("summary").and_then(Value::as_bool) == Some(true) => {
                g.key = format!("sweep/{members}/{payload}");
                g.label = (
                    format!("sweep, {}", count(members)),
                    format!("best p99 ≤ {} ms", f(r, "p99_bound_ms").unwrap_or(0.0)),
                );
                Figures {
                    throughput: f(r, "saturation_deliveries_per_s"),
                    per_cpu: f(r, "saturation_deliveries_per_server_cpu_s"),
                    lat: [None, f(r, "saturation_p99_ms"), None],
                }
            }
            _ => continue,
        };
        match out.iter_mut().find(|x| x.key == g.key) {
            Some(existing) => existing.by_target[t] = Some(figures),
            None => {
                g.by_target[t] = Some(figures);
                out.push(g);
            }
        }
    }
    // The kernel's floor goes beside the fan-outs of small bodies to as many
    // members: the floor at the fan-out's rate, or else the fastest slower one
    // (a single burst's p99 bounds every load with such bursts). A floor whose
    // bursts queued is no bound and is left out.
    for g in &mut out {
        let Some((members, rate)) = g.fanout.filter(|_| g.key.ends_with("/64/text")) else {
            continue;
        };
        g.floor_p99 = rows
            .iter()
            .filter(|r| {
                r.get("scenario").and_then(Value::as_str) == Some("floor")
                    && r.get("queued").and_then(Value::as_bool) != Some(true)
                    && u(r, "members") == members
                    && u(r, "rate") <= rate
            })
            .max_by_key(|r| u(r, "rate"))
            .and_then(|r| f(r, "p99_ms"));
    }
    out
}

// ---------------------------------------------------------------- drawing

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {e}")
}

fn draw(rows: &[Value], output: &Path, subtitle: Option<&str>) -> anyhow::Result<()> {
    let groups = groups(rows);
    let root = SVGBackend::new(output, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (head, body) = root.split_vertically(70);
    head.draw(&Text::new(
        "confab beside Socket.IO — confab bench",
        (20, 12),
        (FONT, 28).into_font().style(FontStyle::Bold),
    ))
    .map_err(err)?;
    let sub = subtitle.map_or_else(
        || "same machine, loopback, one load generator for both".to_owned(),
        str::to_owned,
    );
    head.draw(&Text::new(
        format!("{sub}   ·   dashed red: issue 7 goal"),
        (20, 46),
        (FONT, 16).into_font().color(&RGBColor(80, 80, 80)),
    ))
    .map_err(err)?;
    let (row1, rest) = body.split_vertically(430);
    let (row2, row3) = rest.split_vertically(480);
    let (throughput, per_cpu) = row1.split_horizontally(WIDTH / 2);
    let (sweep, memory) = row3.split_horizontally(WIDTH * 2 / 3);

    let two = vec![
        ("confab".to_owned(), CONFAB),
        ("Socket.IO".to_owned(), SOCKETIO),
    ];
    let labels: Vec<_> = groups.iter().map(|g| g.label.clone()).collect();
    let pick = |g: &Group, get: fn(&Figures) -> Option<f64>| -> Vec<Option<f64>> {
        g.by_target
            .iter()
            .map(|t| t.as_ref().and_then(get))
            .collect()
    };
    bars(
        &throughput,
        &Bars {
            title: "Throughput (deliveries/s; peer: acknowledged sends/s)",
            y_desc: "per second",
            log: false,
            labels: labels.clone(),
            series: two.clone(),
            values: groups.iter().map(|g| pick(g, |f| f.throughput)).collect(),
            goals: groups
                .iter()
                .map(|g| g.goal_throughput.map(|v| (v, format!("≥ {}", si(v)))))
                .collect(),
            fmt: si,
            // Upper right: the tall fan-out bars sit on the left.
            legend: SeriesLabelPosition::UpperRight,
        },
    )?;
    bars(
        &per_cpu,
        &Bars {
            title: "Deliveries per server CPU-second",
            y_desc: "deliveries / CPU s",
            log: false,
            labels: labels.clone(),
            series: two.clone(),
            values: groups.iter().map(|g| pick(g, |f| f.per_cpu)).collect(),
            goals: groups
                .iter()
                .map(|g| g.goal_per_cpu.map(|v| (v, format!("≥ {}", si(v)))))
                .collect(),
            fmt: si,
            legend: SeriesLabelPosition::UpperRight,
        },
    )?;
    // Overload runs (every server below half the offered rate) measure queues,
    // not latency: they stay out of the latency panel.
    let overloaded = |g: &Group| {
        g.offered > 0.0
            && g.by_target
                .iter()
                .flatten()
                .all(|f| f.throughput.unwrap_or(0.0) < g.offered / 2.0)
    };
    let lat_groups: Vec<&Group> = groups
        .iter()
        .filter(|g| g.latency && !overloaded(g))
        .collect();
    let mut lat_series = Vec::new();
    for (name, shades) in [("confab", CONFAB_SHADES), ("Socket.IO", SOCKETIO_SHADES)] {
        for (q, color) in ["p50", "p99", "p999"].iter().zip(shades) {
            lat_series.push((format!("{name} {q}"), color));
        }
    }
    let with_floor = lat_groups.iter().any(|g| g.floor_p99.is_some());
    if with_floor {
        lat_series.push((
            "kernel alone p99, no server (bench floor)".to_owned(),
            FLOOR,
        ));
    }
    bars(
        &row2,
        &Bars {
            title: "Latency, send → delivery (peer: send → ack), ms, log scale; loads that overload every server left out",
            y_desc: "ms",
            log: true,
            labels: lat_groups.iter().map(|g| g.label.clone()).collect(),
            series: lat_series,
            values: lat_groups
                .iter()
                .map(|g| {
                    let mut v: Vec<Option<f64>> = g
                        .by_target
                        .iter()
                        .flat_map(|t| (0..3).map(move |q| t.as_ref().and_then(|f| f.lat[q])))
                        .collect();
                    if with_floor {
                        v.push(g.floor_p99);
                    }
                    v
                })
                .collect(),
            goals: lat_groups
                .iter()
                .map(|g| g.goal_p99.map(|v| (v, format!("p99 ≤ {v} ms"))))
                .collect(),
            fmt: ms,
            legend: SeriesLabelPosition::UpperLeft,
        },
    )?;
    sweep_panel(&sweep, rows)?;
    let mut mem = vec![None, None];
    let mut clients = 0;
    for r in rows {
        if r.get("scenario").and_then(Value::as_str) == Some("connect") {
            if let Some(t) = target_index(r) {
                mem[t] = f(r, "server_rss_per_connection_kb");
                clients = clients.max(u(r, "clients"));
            }
        }
    }
    bars(
        &memory,
        &Bars {
            title: "Server memory per idle connection",
            y_desc: "KiB",
            log: false,
            labels: vec![(
                format!("{} idle clients", count(clients)),
                "RSS growth / clients".to_owned(),
            )],
            series: two.clone(),
            values: vec![mem],
            goals: vec![Some((4.0, "≤ 4 KiB".to_owned()))],
            fmt: |v| format!("{v:.1}"),
            legend: SeriesLabelPosition::UpperLeft,
        },
    )?;
    root.present().map_err(err)?;
    Ok(())
}

/// A grouped bar chart.
#[derive(Debug)]
struct Bars<'a> {
    title: &'a str,
    y_desc: &'a str,
    log: bool,
    /// Two lines per group.
    labels: Vec<(String, String)>,
    series: Vec<(String, RGBColor)>,
    /// `[group][series]`.
    values: Vec<Vec<Option<f64>>>,
    /// Per group: a goal value and its label.
    goals: Vec<Option<(f64, String)>>,
    fmt: fn(f64) -> String,
    legend: SeriesLabelPosition,
}

fn bars(area: &Area<'_>, b: &Bars<'_>) -> anyhow::Result<()> {
    let all = b
        .values
        .iter()
        .flatten()
        .flatten()
        .copied()
        .chain(b.goals.iter().flatten().map(|g| g.0))
        .filter(|v| v.is_finite() && *v > 0.0);
    let (lo, hi) = all.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi <= 0.0 {
        return empty(area, b.title);
    }
    if b.log {
        let lo = 10f64.powf((lo / 2.0).log10().floor());
        let hi = 10f64.powf((hi * 3.0).log10().ceil());
        let y: LogCoord<f64> = (lo..hi).log_scale().into();
        bars_on(area, b, y, lo)
    } else {
        let y: RangedCoordf64 = (0.0..hi * 1.18).into();
        bars_on(area, b, y, 0.0)
    }
}

fn bars_on<Y>(area: &Area<'_>, b: &Bars<'_>, y: Y, base: f64) -> anyhow::Result<()>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let n = b.labels.len().max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(b.title, (FONT, 19).into_font().style(FontStyle::Bold))
        .margin(14)
        .margin_right(24)
        .x_label_area_size(52)
        .y_label_area_size(78)
        .build_cartesian_2d(-0.5..(n as f64 - 0.5), y)
        .map_err(err)?;
    let fmt = b.fmt;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(b.y_desc)
        .y_label_formatter(&|v| fmt(*v))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(err)?;
    // Group labels, two lines, under the axis.
    let (ox, oy) = area.get_base_pixel();
    for (i, (l1, l2)) in b.labels.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(i as f64, base));
        let style = TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
        area.draw(&Text::new(
            l1.clone(),
            (px - ox, py - oy + 8),
            style.clone(),
        ))
        .map_err(err)?;
        let style2 = (FONT, 12)
            .into_font()
            .color(&RGBColor(90, 90, 90))
            .pos(Pos::new(HPos::Center, VPos::Top));
        area.draw(&Text::new(l2.clone(), (px - ox, py - oy + 26), style2))
            .map_err(err)?;
    }
    let k = b.series.len().max(1);
    let slot = 0.8 / k as f64;
    let value_style = TextStyle::from((FONT, if k > 3 { 10 } else { 12 }).into_font())
        .pos(Pos::new(HPos::Center, VPos::Bottom));
    for (j, (name, color)) in b.series.iter().enumerate() {
        let color = *color;
        let rects: Vec<_> = b
            .values
            .iter()
            .enumerate()
            .filter_map(|(i, vals)| {
                let v = vals.get(j).copied().flatten()?;
                let x0 = i as f64 - 0.4 + j as f64 * slot;
                Some(Rectangle::new(
                    [(x0 + slot * 0.06, base), (x0 + slot * 0.94, v.max(base))],
                    color.filled(),
                ))
            })
            .collect();
        chart
            .draw_series(rects)
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
        let texts: Vec<_> = b
            .values
            .iter()
            .enumerate()
            .filter_map(|(i, vals)| {
                let v = vals.get(j).copied().flatten()?;
                let x = i as f64 - 0.4 + (j as f64 + 0.5) * slot;
                Some(Text::new(fmt(v), (x, v.max(base)), value_style.clone()))
            })
            .collect();
        chart.draw_series(texts).map_err(err)?;
    }
    let mut goal_legend = false;
    for (i, g) in b.goals.iter().enumerate() {
        let Some((v, label)) = g else { continue };
        let (x0, x1) = (i as f64 - 0.46, i as f64 + 0.46);
        let series = chart
            .draw_series(DashedLineSeries::new(
                [(x0, *v), (x1, *v)],
                7,
                4,
                GOAL.stroke_width(2),
            ))
            .map_err(err)?;
        if !goal_legend {
            goal_legend = true;
            series
                .label("issue 7 goal")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 14, y)], GOAL.stroke_width(2)));
        }
        // The label sits on a white patch above the line's right end, so bars
        // behind it do not hide it.
        let (px, py) = chart.backend_coord(&(x1, *v));
        let (px, py) = (px - ox, py - oy);
        let width = (label.chars().count() as f64 * 6.2) as i32 + 6;
        area.draw(&Rectangle::new(
            [(px - width, py - 17), (px, py - 2)],
            WHITE.mix(0.85).filled(),
        ))
        .map_err(err)?;
        area.draw(&Text::new(
            label.clone(),
            (px - 3, py - 4),
            (FONT, 12)
                .into_font()
                .style(FontStyle::Bold)
                .color(&GOAL)
                .pos(Pos::new(HPos::Right, VPos::Bottom)),
        ))
        .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(b.legend.clone())
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .draw()
        .map_err(err)?;
    Ok(())
}

fn empty(area: &Area<'_>, title: &str) -> anyhow::Result<()> {
    area.draw(&Text::new(
        format!("{title}: no results"),
        (20, 20),
        (FONT, 16).into_font(),
    ))
    .map_err(err)?;
    Ok(())
}

/// p99 (and p50) latency against offered deliveries/s for each target's sweep.
fn sweep_panel(area: &Area<'_>, rows: &[Value]) -> anyhow::Result<()> {
    let title = "Sweep: latency as the rate grows (log–log)";
    // Per target: (offered deliveries/s, p50, p99) per step, and the bound.
    let mut curves: [Vec<(f64, f64, f64)>; 2] = [Vec::new(), Vec::new()];
    let mut bound = None;
    let mut members = 0;
    for r in rows {
        if r.get("scenario").and_then(Value::as_str) != Some("sweep") || r.get("step").is_none() {
            continue;
        }
        let Some(t) = target_index(r) else { continue };
        if u(r, "step") == 1 {
            curves[t].clear();
        }
        let offered = (u(r, "rate") * u(r, "members")) as f64;
        if let (Some(p50), Some(p99)) = (f(r, "p50_ms"), f(r, "p99_ms")) {
            curves[t].push((offered, p50, p99));
        }
        bound = f(r, "p99_bound_ms").or(bound);
        members = u(r, "members");
    }
    let pts = curves.iter().flatten();
    let (mut x_lo, mut x_hi, mut y_lo, mut y_hi) = (f64::MAX, 0.0f64, f64::MAX, 0.0f64);
    for &(x, p50, p99) in pts {
        x_lo = x_lo.min(x);
        x_hi = x_hi.max(x);
        y_lo = y_lo.min(p50.max(0.001));
        y_hi = y_hi.max(p99);
    }
    if x_hi <= 0.0 {
        return empty(area, title);
    }
    if let Some(b) = bound {
        y_hi = y_hi.max(b);
        y_lo = y_lo.min(b);
    }
    let x = (x_lo / 1.6)..(x_hi * 1.6);
    let y = 10f64.powf((y_lo / 1.5).log10().floor())..10f64.powf((y_hi * 2.0).log10().ceil());
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{title}, {} members", count(members)),
            (FONT, 19).into_font().style(FontStyle::Bold),
        )
        .margin(14)
        .margin_right(24)
        .x_label_area_size(52)
        .y_label_area_size(78)
        .build_cartesian_2d(x.clone().log_scale(), y.log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("offered deliveries/s (rate × members)")
        .x_labels(30)
        .y_desc("ms")
        .x_label_formatter(&|v| {
            // Only 1, 2 and 5 times a power of ten: readable, never crowded.
            let lead = *v / 10f64.powf(v.log10().floor());
            if [1.0, 2.0, 5.0].iter().any(|m| (lead - m).abs() < 0.01) {
                si(*v)
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|v| ms(*v))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(err)?;
    for (t, (name, color)) in [("confab", CONFAB), ("Socket.IO", SOCKETIO)]
        .into_iter()
        .enumerate()
    {
        let c = &curves[t];
        if c.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(
                c.iter().map(|p| (p.0, p.2)),
                color.stroke_width(3),
            ))
            .map_err(err)?
            .label(format!("{name} p99"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(3)));
        chart
            .draw_series(c.iter().map(|p| Circle::new((p.0, p.2), 4, color.filled())))
            .map_err(err)?;
        chart
            .draw_series(DashedLineSeries::new(
                c.iter().map(|p| (p.0, p.1)),
                6,
                4,
                color.mix(0.7).stroke_width(2),
            ))
            .map_err(err)?
            .label(format!("{name} p50"))
            .legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 16, y)], color.mix(0.7).stroke_width(2))
            });
        // The saturation point: the last step within the bound.
        if let Some(b) = bound {
            if let Some(s) = c.iter().rev().find(|p| p.2 <= b) {
                chart
                    .draw_series([EmptyElement::at((s.0, s.2))
                        + Circle::new((0, 0), 9, color.stroke_width(2))
                        + Text::new(
                            format!("{} /s", si(s.0)),
                            (-10, -24),
                            (FONT, 13).into_font().color(&color),
                        )])
                    .map_err(err)?;
            }
        }
    }
    if let Some(b) = bound {
        chart
            .draw_series(DashedLineSeries::new(
                [(x.start, b), (x.end, b)],
                7,
                4,
                GOAL.stroke_width(2),
            ))
            .map_err(err)?
            .label(format!("p99 bound {b} ms"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], GOAL.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .draw()
        .map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(count(1000), "1k");
        assert_eq!(count(10_000), "10k");
        assert_eq!(count(1500), "1.5k");
        assert_eq!(count(50), "50");
        assert_eq!(bytes(1024), "1 KiB");
        assert_eq!(bytes(64), "64 B");
        assert_eq!(si(1_234_567.0), "1.23M");
        assert_eq!(si(99_612.0), "100k");
        assert_eq!(si(1_500.0), "1.5k");
        assert_eq!(ms(0.4213), "0.42");
        assert_eq!(ms(2200.0), "2200");
    }

    #[test]
    fn draws_a_chart() {
        let rows: Vec<Value> = [
            r#"{"scenario":"fanout","target":"confab","members":1000,"rate":100,"payload":64,"type":"text","deliveries_per_s":99000.0,"deliveries_per_server_cpu_s":500000.0,"p50_ms":1.2,"p99_ms":4.0,"p999_ms":7.0}"#,
            r#"{"scenario":"fanout","target":"socketio","members":1000,"rate":100,"payload":64,"type":"text","deliveries_per_s":98000.0,"deliveries_per_server_cpu_s":100000.0,"p50_ms":20.0,"p99_ms":63.0,"p999_ms":90.0}"#,
            r#"{"scenario":"peer","target":"confab","pairs":50,"window":8,"payload":64,"acked_per_s":15000.0,"deliveries_per_server_cpu_s":13000.0,"ack_p50_ms":20.0,"ack_p99_ms":40.0,"ack_p999_ms":60.0}"#,
            r#"{"scenario":"sweep","step":1,"target":"confab","members":1000,"rate":100,"p50_ms":1.0,"p99_ms":3.0,"p99_bound_ms":50.0}"#,
            r#"{"scenario":"sweep","step":2,"target":"confab","members":1000,"rate":200,"p50_ms":2.0,"p99_ms":80.0,"p99_bound_ms":50.0}"#,
            r#"{"scenario":"sweep","summary":true,"target":"confab","members":1000,"p99_bound_ms":50.0,"saturation_deliveries_per_s":99000.0,"saturation_p99_ms":3.0}"#,
            r#"{"scenario":"connect","target":"confab","clients":1000,"server_rss_per_connection_kb":3.5}"#,
            r#"{"scenario":"floor","target":"kernel","members":1000,"rate":100,"payload":320,"p50_ms":90.0,"p99_ms":300.0,"queued":true}"#,
            r#"{"scenario":"floor","target":"kernel","members":1000,"rate":10,"payload":320,"p50_ms":1.0,"p99_ms":2.5,"queued":false}"#,
            r#"{"scenario":"floor","target":"kernel","members":1000,"rate":1,"payload":320,"p50_ms":1.0,"p99_ms":2.0,"queued":false}"#,
            r#"{"scenario":"floor","target":"kernel","members":1000,"rate":200,"payload":320,"p50_ms":1.0,"p99_ms":1.0,"queued":false}"#,
        ]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
        let g = groups(&rows);
        assert_eq!(g.len(), 3, "{g:?}");
        assert_eq!(g[0].goal_p99, Some(5.0));
        assert!(g[0].by_target.iter().all(Option::is_some));
        assert_eq!(
            g[0].floor_p99,
            Some(2.5),
            "the fastest unqueued floor at or below the fan-out's rate"
        );
        let dir = std::env::temp_dir().join(format!("confab-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("c.svg");
        draw(&rows, &out, Some("test")).unwrap();
        let svg = std::fs::read_to_string(&out).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
        for text in [
            "1k × 100/s",
            "Socket.IO",
            "p99 ≤ 5 ms",
            "Sweep",
            "kernel alone",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
