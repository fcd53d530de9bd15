//! `admin experiments report NAME --format html`: the report as one self-contained page —
//! the same figures as the JSON, with inline SVG charts (value per 1 000 views with its
//! credible interval, probability to beat the control, traffic shares, views per day). No
//! script, no external font, stylesheet or image: it opens offline and passes a strict CSP.

use std::fmt::Write as _;

use crate::report::Report;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Minor units as a major amount with the currency's decimals, e.g. `1234.50 USD`.
fn money(minor: i64, exponent: u32, currency: &str) -> String {
    let code = currency.to_uppercase();
    if exponent == 0 {
        return format!("{minor} {code}");
    }
    let unit = 10_i64.pow(exponent);
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    let unit = unit.unsigned_abs();
    format!(
        "{sign}{}.{:0width$} {code}",
        abs / unit,
        abs % unit,
        width = exponent as usize
    )
}

const COLOURS: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];

/// One bar: its label, its value, an optional whisker `(low, high)` and the text at its end.
type Bar = (String, i64, Option<(i64, i64)>, String);

/// A horizontal bar chart: one bar per label, an optional whisker `(low, high)` per bar, the
/// value printed at its end.
fn bars(title: &str, rows: &[Bar], max: i64, id: &str) -> String {
    let (width, left, bar_h, gap) = (640_i64, 140_i64, 22_i64, 10_i64);
    let plot = width - left - 150;
    let height = 30 + i64::try_from(rows.len()).unwrap_or(0) * (bar_h + gap);
    let scale = |v: i64| v.clamp(0, max.max(1)) * plot / max.max(1);
    let mut svg = format!(
        "<figure><svg role=\"img\" aria-labelledby=\"{id}\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\"><title id=\"{id}\">{}</title>",
        escape(title)
    );
    for (i, (label, value, whisker, text)) in rows.iter().enumerate() {
        let y = 20 + i64::try_from(i).unwrap_or(0) * (bar_h + gap);
        let colour = COLOURS[i % COLOURS.len()];
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text><rect x=\"{left}\" y=\"{y}\" width=\"{}\" height=\"{bar_h}\" fill=\"{colour}\"/>",
            left - 8,
            y + 16,
            escape(label),
            scale(*value).max(1)
        );
        if let Some((low, high)) = whisker {
            let (x1, x2, mid) = (left + scale(*low), left + scale(*high), y + bar_h / 2);
            let _ = write!(
                svg,
                "<line x1=\"{x1}\" x2=\"{x2}\" y1=\"{mid}\" y2=\"{mid}\" stroke=\"#222\" stroke-width=\"2\"/><line x1=\"{x1}\" x2=\"{x1}\" y1=\"{}\" y2=\"{}\" stroke=\"#222\"/><line x1=\"{x2}\" x2=\"{x2}\" y1=\"{}\" y2=\"{}\" stroke=\"#222\"/>",
                y + 4,
                y + bar_h - 4,
                y + 4,
                y + bar_h - 4
            );
        }
        let end = left + scale(*value).max(whisker.map_or(0, |(_, high)| scale(high)));
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\">{}</text>",
            end + 6,
            y + 16,
            escape(text)
        );
    }
    let _ = write!(
        svg,
        "</svg><figcaption>{}</figcaption></figure>",
        escape(title)
    );
    svg
}

/// Cumulative views per day, one line per variant.
fn views_by_day(report: &Report) -> String {
    let mut days: Vec<&str> = report.days.iter().map(|d| d.day.as_str()).collect();
    days.dedup();
    if days.is_empty() {
        return "<p>No views counted yet.</p>".into();
    }
    let mut series: Vec<(String, Vec<i64>)> = report
        .variants
        .iter()
        .map(|v| (v.key.clone(), vec![0; days.len()]))
        .collect();
    if report.holdback.is_some() {
        series.push((String::new(), vec![0; days.len()]));
    }
    for d in &report.days {
        let (Some(day), Some(line)) = (
            days.iter().position(|x| *x == d.day),
            series.iter_mut().find(|(key, _)| *key == d.variant),
        ) else {
            continue;
        };
        line.1[day] += d.views;
    }
    for (_, values) in &mut series {
        let mut total = 0;
        for v in values.iter_mut() {
            total += *v;
            *v = total;
        }
    }
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .max()
        .unwrap_or(1)
        .max(1);
    let (width, height, left, bottom) = (640_i64, 260_i64, 60_i64, 30_i64);
    let n = i64::try_from(days.len()).unwrap_or(1).max(2) - 1;
    let x = |i: usize| left + i64::try_from(i).unwrap_or(0) * (width - left - 120) / n;
    let y = |v: i64| height - bottom - v * (height - bottom - 10) / max;
    let mut svg = format!(
        "<figure><svg role=\"img\" aria-labelledby=\"views-title\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\"><title id=\"views-title\">Views per variant, cumulative</title><line x1=\"{left}\" x2=\"{left}\" y1=\"10\" y2=\"{}\" stroke=\"#888\"/><line x1=\"{left}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#888\"/><text x=\"{}\" y=\"20\" text-anchor=\"end\">{max}</text><text x=\"{left}\" y=\"{}\">{}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
        height - bottom,
        width - 120,
        height - bottom,
        height - bottom,
        left - 4,
        height - 8,
        escape(days[0]),
        width - 120,
        height - 8,
        escape(days[days.len() - 1]),
    );
    for (i, (key, values)) in series.iter().enumerate() {
        let colour = if key.is_empty() {
            "#777"
        } else {
            COLOURS[i % COLOURS.len()]
        };
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(d, v)| format!("{},{}", x(d), y(*v)))
            .collect();
        // A dot per day: a single day is still seen.
        for (d, v) in values.iter().enumerate() {
            let _ = write!(
                svg,
                "<circle cx=\"{}\" cy=\"{}\" r=\"3\" fill=\"{colour}\"/>",
                x(d),
                y(*v)
            );
        }
        let label = if key.is_empty() { "holdback" } else { key };
        let last = values.last().copied().unwrap_or(0);
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/><text x=\"{}\" y=\"{}\">{} ({last})</text>",
            points.join(" "),
            width - 114,
            y(last) + 4,
            escape(label)
        );
    }
    svg.push_str("</svg><figcaption>Views per variant, cumulative by day</figcaption></figure>");
    svg
}

/// The page.
#[must_use]
pub fn page(report: &Report) -> String {
    let cur = report.currency.as_str();
    let exp = report.exponent;
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\"><title>Experiment {name}</title><style>body{{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#111}}table{{border-collapse:collapse;margin:1rem 0}}th,td{{border-bottom:1px solid #ccc;padding:.3rem .6rem;text-align:right}}th:first-child,td:first-child{{text-align:left}}svg text{{font:12px system-ui,sans-serif;fill:#111}}figure{{margin:1.5rem 0}}.winner{{background:#e8f5e9;padding:.5rem 1rem}}.none{{background:#f5f5f5;padding:.5rem 1rem}}</style></head><body><main><h1>Experiment {name}</h1><p>Status <strong>{status}</strong>, method <strong>{method}</strong>{started}. Amounts in {code}.</p>",
        name = escape(&report.experiment),
        status = report.status,
        method = report.method,
        started = report
            .started_at
            .and_then(|t| t
                .format(&time::format_description::well_known::Rfc3339)
                .ok())
            .map(|t| format!(", started {t}"))
            .unwrap_or_default(),
        code = escape(&cur.to_uppercase()),
    );
    match &report.winner {
        Some(winner) => {
            let _ = write!(
                html,
                "<p class=\"winner\" data-winner=\"{w}\">Variant <strong>{w}</strong> beats the control with a probability above 0.95.</p>",
                w = escape(winner)
            );
        }
        None => html.push_str(
            "<p class=\"none\" data-winner=\"\">No variant beats the control with a probability above 0.95 yet.</p>",
        ),
    }
    html.push_str("<table id=\"variants\"><caption>Per variant</caption><thead><tr><th scope=\"col\">Variant</th><th scope=\"col\">Views</th><th scope=\"col\">Clicks</th><th scope=\"col\">Checkouts</th><th scope=\"col\">Payments</th><th scope=\"col\">Conversion</th><th scope=\"col\">Revenue</th><th scope=\"col\">First-year value per 1 000 views (95 % interval)</th><th scope=\"col\">P(beat control)</th><th scope=\"col\">Share</th></tr></thead><tbody>");
    for v in &report.variants {
        let _ = write!(
            html,
            "<tr data-variant=\"{key}\"><th scope=\"row\">{key}{control}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td data-value-per-1000=\"{}\">{} ({} – {})</td><td data-beat=\"{}\">{}</td><td>{}.{:02} %</td></tr>",
            v.views,
            v.clicks,
            v.checkouts,
            v.payments,
            escape(&v.conversion_rate),
            money(v.revenue_minor, exp, cur),
            v.value_per_1000_minor,
            money(v.value_per_1000_minor, exp, cur),
            money(v.value_per_1000_low_minor, exp, cur),
            money(v.value_per_1000_high_minor, exp, cur),
            v.probability_to_beat_control
                .map(|p| format!("{p:.4}"))
                .unwrap_or_default(),
            v.probability_to_beat_control
                .map_or_else(|| "control".to_owned(), |p| format!("{p:.3}")),
            v.share_bp / 100,
            v.share_bp % 100,
            key = escape(&v.key),
            control = if v.control { " (control)" } else { "" },
        );
    }
    html.push_str("</tbody></table>");
    if let Some(h) = &report.holdback {
        let _ = write!(
            html,
            "<p id=\"holdback\">Holdback (no ask): {} views, {} contributions given elsewhere, {} paid, {} revenue, {} first-year value per 1 000 views.</p>",
            h.views,
            h.checkouts,
            h.payments,
            money(h.revenue_minor, exp, cur),
            money(h.value_per_1000_minor, exp, cur)
        );
    }
    let max = report
        .variants
        .iter()
        .map(|v| v.value_per_1000_high_minor.max(v.value_per_1000_minor))
        .max()
        .unwrap_or(1);
    let value_rows: Vec<Bar> = report
        .variants
        .iter()
        .map(|v| {
            (
                v.key.clone(),
                v.value_per_1000_minor,
                Some((v.value_per_1000_low_minor, v.value_per_1000_high_minor)),
                money(v.value_per_1000_minor, exp, cur),
            )
        })
        .collect();
    html.push_str(&bars(
        "First-year value per 1 000 views, with its 95 % credible interval",
        &value_rows,
        max,
        "value-title",
    ));
    let beat_rows: Vec<Bar> = report
        .variants
        .iter()
        .filter_map(|v| {
            let p = v.probability_to_beat_control?;
            #[allow(clippy::float_arithmetic, clippy::cast_possible_truncation)]
            let per_mille = (p * 1_000.0).round() as i64;
            Some((v.key.clone(), per_mille, None, format!("{p:.3}")))
        })
        .collect();
    html.push_str(&bars(
        "Probability to beat the control (0 to 1)",
        &beat_rows,
        1_000,
        "beat-title",
    ));
    let share_rows: Vec<Bar> = report
        .variants
        .iter()
        .map(|v| {
            (
                v.key.clone(),
                i64::from(v.share_bp),
                None,
                format!("{}.{:02} %", v.share_bp / 100, v.share_bp % 100),
            )
        })
        .collect();
    html.push_str(&bars(
        "Current share of the views not held back",
        &share_rows,
        10_000,
        "share-title",
    ));
    html.push_str(&views_by_day(report));
    let val = &report.valuation;
    let _ = write!(
        html,
        "<h2>How a payment is valued</h2><p>{}.</p><p>Monthly plans: {} started, {} paid months, {} cancelled, {} failed; loss per month {} (with the prior); a new monthly plan is expected to make {}.{:04} payments in its first year. Annual plans: {} started, loss per year {}.</p></main></body></html>",
        escape(val.rule),
        val.monthly.plans,
        val.monthly.paid_periods,
        val.monthly.cancelled,
        val.monthly.failed,
        escape(&val.monthly.loss_rate),
        val.monthly_first_year_payments_bp / 10_000,
        val.monthly_first_year_payments_bp % 10_000,
        val.annual.plans,
        escape(&val.annual.loss_rate),
    );
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_read_as_money() {
        assert_eq!(money(123_450, 2, "usd"), "1234.50 USD");
        assert_eq!(money(-5, 2, "eur"), "-0.05 EUR");
        assert_eq!(money(700, 0, "jpy"), "700 JPY");
        assert_eq!(escape("<a href='x'>&"), "&lt;a href=&#39;x&#39;&gt;&amp;");
    }
}
