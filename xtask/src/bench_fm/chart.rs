//! The benchmark's figures as a picture: one SVG bar chart, a row per
//! operation, each row scaled to its own fastest target (sign-ins and reads
//! differ by three orders of magnitude), with the issue's target for Kura
//! drawn as a dashed line at that multiple of PocketBase.

use std::fmt::Write as _;

use super::wrk::Measured;

/// Operations in the order they are run, with the issue's target multiple
/// of PocketBase (none for sign-in).
const ROWS: &[(&str, &str, Option<f64>)] = &[
    ("get_one", "get one record", Some(5.0)),
    ("find_50", "_find, 50 records", Some(3.0)),
    ("create", "create", Some(3.0)),
    ("edit", "edit", Some(3.0)),
    ("sign_in", "app-account sign-in", None),
];

/// Targets in the order their bars are drawn, with their colours.
const TARGETS: &[(&str, &str)] = &[
    ("ceiling", "#9aa0a6"),
    ("pocketbase", "#e8710a"),
    ("kura", "#1a73e8"),
];

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 190.0;
const BAR_SPACE: f64 = 480.0;
const BAR: f64 = 18.0;
const GAP: f64 = 4.0;
const ROW_GAP: f64 = 26.0;

/// Renders the results of one run as an SVG document.
pub fn svg(results: &[Measured], title: &str) -> String {
    let find = |target: &str, op: &str| results.iter().find(|m| m.target == target && m.op == op);
    let mut body = String::new();
    let mut y = 70.0;
    for (op, label, target) in ROWS {
        let bars: Vec<(&Measured, &str)> = TARGETS
            .iter()
            .filter_map(|(t, colour)| find(t, op).map(|m| (m, *colour)))
            .collect();
        if bars.is_empty() {
            continue;
        }
        let pb = find("pocketbase", op).map(|m| m.rps);
        // (rate, label, label above the row?)
        let mut goals: Vec<(f64, String, bool)> = target
            .zip(pb)
            .map(|(k, pb)| (k * pb, format!("target {k}× PocketBase"), true))
            .into_iter()
            .collect();
        if *op == "get_one"
            && let Some(ceiling) = find("ceiling", op)
        {
            goals.push((ceiling.rps / 2.0, "target 50% of ceiling".into(), false));
        }
        let max = bars
            .iter()
            .map(|(m, _)| m.rps)
            .chain(goals.iter().map(|g| g.0))
            .fold(1.0_f64, f64::max);
        let scale = BAR_SPACE / max;
        let height = bars.len() as f64 * (BAR + GAP) - GAP;
        let _ = write!(
            body,
            r#"<text x="{x}" y="{ty:.1}" class="op">{label}</text>"#,
            x = LEFT - 12.0,
            ty = y + height / 2.0 + 5.0,
        );
        for (rate, text, above) in &goals {
            let gx = LEFT + rate * scale;
            let _ = write!(
                body,
                concat!(
                    r#"<line x1="{gx:.1}" y1="{y1:.1}" x2="{gx:.1}" y2="{y2:.1}" class="goal"/>"#,
                    r#"<text x="{gx:.1}" y="{ty:.1}" class="g">{text}</text>"#,
                ),
                y1 = y - 4.0,
                y2 = y + height + 4.0,
                ty = if *above { y - 7.0 } else { y + height + 15.0 },
                gx = gx,
                text = text,
            );
        }
        for (i, (m, colour)) in bars.iter().enumerate() {
            let by = y + i as f64 * (BAR + GAP);
            let w = (m.rps * scale).max(1.0);
            let ratio = match (m.target.as_str(), pb) {
                ("kura", Some(pb)) if pb > 0.0 => format!(" · {:.2}× PocketBase", m.rps / pb),
                _ => String::new(),
            };
            let _ = write!(
                body,
                concat!(
                    r#"<rect x="{x}" y="{by:.1}" width="{w:.1}" height="{BAR}" fill="{colour}"/>"#,
                    r#"<text x="{tx:.1}" y="{ly:.1}" class="v">{target} {rps} req/s{ratio}</text>"#,
                ),
                x = LEFT,
                tx = LEFT + w + 6.0,
                ly = by + BAR - 5.0,
                target = m.target,
                rps = thousands(m.rps),
                by = by,
                w = w,
                BAR = BAR,
                colour = colour,
                ratio = ratio,
            );
        }
        let below = if goals.iter().any(|g| !g.2) {
            16.0
        } else {
            0.0
        };
        y += height + ROW_GAP + 10.0 + below;
    }
    let height = y + 10.0;
    let mut legend = String::new();
    for (i, (t, colour)) in TARGETS.iter().enumerate() {
        let lx = LEFT + i as f64 * 130.0;
        let _ = write!(
            legend,
            r#"<rect x="{lx}" y="36" width="12" height="12" fill="{colour}"/><text x="{tx}" y="46" class="v">{t}</text>"#,
            tx = lx + 18.0,
        );
    }
    format!(
        concat!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}">"#,
            "<style>text{{font-family:sans-serif;font-size:13px;fill:#202124}}",
            ".v,.g{{paint-order:stroke;stroke:#fff;stroke-width:3px}}",
            ".op{{text-anchor:end;font-weight:bold}}.g{{font-size:11px;fill:#c5221f;text-anchor:middle}}",
            ".goal{{stroke:#c5221f;stroke-width:1.5;stroke-dasharray:4 3}}.t{{font-size:16px;font-weight:bold}}</style>",
            r##"<rect width="100%" height="100%" fill="#ffffff"/>"##,
            r#"<text x="16" y="24" class="t">{title}</text>{legend}{body}</svg>"#,
        ),
        title = escape(title),
        WIDTH = WIDTH,
        height = height,
        legend = legend,
        body = body,
    )
}

/// A rate with thousands separators, e.g. `22,524`.
fn thousands(rps: f64) -> String {
    let digits = format!("{:.0}", rps.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(target: &str, op: &str, rps: f64) -> Measured {
        Measured {
            target: target.into(),
            op: op.into(),
            rps,
            requests: 0,
            p50_ms: 0.0,
            p99_ms: 0.0,
            non_2xx: 0,
            socket_errors: String::new(),
            server_cpu_ms_per_req: None,
            server_cores: None,
            load_avg_before: 0.0,
        }
    }

    #[test]
    fn each_row_scales_to_its_fastest_bar_and_marks_the_target() {
        let results = [
            measured("ceiling", "get_one", 100_000.0),
            measured("pocketbase", "get_one", 5_000.0),
            measured("kura", "get_one", 20_000.0),
            measured("pocketbase", "sign_in", 36.0),
            measured("kura", "sign_in", 126.0),
        ];
        let svg = svg(&results, "A & B");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("A &amp; B"));
        // get_one: the ceiling is the row's full width, Kura a fifth of it,
        // and the 5× target (25,000) a quarter.
        assert!(svg.contains(&format!(
            r##"width="{:.1}" height="18" fill="#9aa0a6""##,
            BAR_SPACE
        )));
        assert!(svg.contains(&format!(
            r##"width="{:.1}" height="18" fill="#1a73e8""##,
            BAR_SPACE / 5.0
        )));
        assert!(svg.contains("kura 20,000 req/s · 4.00× PocketBase"));
        assert!(svg.contains(&format!(r#"x1="{:.1}""#, LEFT + BAR_SPACE / 4.0)));
        assert!(svg.contains("target 5× PocketBase"));
        assert!(svg.contains(&format!(r#"x1="{:.1}""#, LEFT + BAR_SPACE / 2.0)));
        assert!(svg.contains("target 50% of ceiling"));
        // sign_in has no target line and scales to Kura's own bar.
        assert_eq!(svg.matches("class=\"goal\"").count(), 2);
        assert!(svg.contains("kura 126 req/s · 3.50× PocketBase"));
        // Operations without figures get no row.
        assert!(!svg.contains("_find"));
    }

    #[test]
    fn rates_get_thousands_separators() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1_000.0), "1,000");
        assert_eq!(thousands(117_448.2), "117,448");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
    }
}
