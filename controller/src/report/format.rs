//! Small formatting rules shared by the report's text: offsets, durations, times, shares, and the
//! escaping that keeps commit messages and pod names from breaking the Markdown around them.

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// An offset on the timeline: `+1.20s`, `-0.35s`, `+2m05.30s`, `+3h10m02s`.
pub(crate) fn offset(secs: f64) -> String {
    let sign = if secs < 0.0 { "-" } else { "+" };
    format!("{sign}{}", compact(secs.abs()))
}

/// A length of time without sign, compact: `1.20s`, `2m05.30s`, `3h10m02s`.
pub(crate) fn compact(secs: f64) -> String {
    // Round once, to centiseconds, so 59.999 reads as 1m00.00s rather than 60.00s.
    let cs = (secs * 100.0).round() as u64;
    let (h, m, s) = (cs / 360_000, (cs / 6_000) % 60, (cs % 6_000) as f64 / 100.0);
    if h > 0 {
        format!("{h}h{m:02}m{:02}s", s.floor() as u64)
    } else if m > 0 {
        format!("{m}m{s:05.2}s")
    } else {
        format!("{s:.2}s")
    }
}

/// A length of time in prose: `1.20 s`, `2 min 05 s`, `3 h 10 min`.
pub(crate) fn span(secs: f64) -> String {
    let secs = secs.max(0.0);
    if secs < 60.0 {
        format!("{secs:.2} s")
    } else if secs < 3_600.0 {
        let s = secs.round() as u64;
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        let m = (secs / 60.0).round() as u64;
        format!("{} h {:02} min", m / 60, m % 60)
    }
}

/// Time of day in UTC with milliseconds, `03:12:04.512`; with the date in front when asked.
pub(crate) fn utc(at: Timestamp, with_date: bool) -> String {
    let z = at.to_zoned_datetime(TimeZone::UTC);
    let time = format!(
        "{:02}:{:02}:{:02}.{:03}",
        z.hour(),
        z.minute(),
        z.second(),
        z.millisecond()
    );
    if with_date {
        format!("{:04}-{:02}-{:02} {time}", z.year(), z.month(), z.day())
    } else {
        time
    }
}

/// The UTC date of a timestamp, to decide when a time needs its date shown.
pub(crate) fn utc_date(at: Timestamp) -> jiff::civil::Date {
    at.to_zoned_datetime(TimeZone::UTC).date()
}

/// `0.127` → `12.7%`.
pub(crate) fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// `part / whole`, 0 for an empty whole.
pub(crate) fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// A statistic for people: `20`, `0.053`, `1.523e7`.
pub(crate) fn number(x: f64) -> String {
    if !x.is_finite() {
        return if x.is_nan() {
            "n/a".into()
        } else {
            "∞".into()
        };
    }
    if x != 0.0 && (x.abs() >= 1e6 || x.abs() < 1e-3) {
        return format!("{x:.3e}");
    }
    let s = format!("{x:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The first 7 characters of a commit id, as git shows it.
pub(crate) fn short_commit(commit: &str) -> String {
    commit.chars().take(7).collect()
}

/// The first line of a commit message.
pub(crate) fn subject(message: &str) -> String {
    message
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Text from commits or pods, made inert inside Markdown prose and table cells: no emphasis,
/// links, HTML, headings or column breaks, and on one line.
pub(crate) fn inline(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\r' => out.push(' '),
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '#' | '|' | '~' | '!' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// Inline code, with a backtick run longer than any inside the text (CommonMark's rule).
pub(crate) fn code(text: &str) -> String {
    let text = text.replace(['\n', '\r'], " ");
    let ticks = "`".repeat(longest_run(&text, '`') + 1);
    let pad = if text.starts_with('`') || text.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{ticks}{pad}{text}{pad}{ticks}")
}

/// A fenced block whose fence no line of `body` can close early.
pub(crate) fn fenced(info: &str, body: &str) -> String {
    let fence = "`".repeat((longest_run(body, '`') + 1).max(3));
    let nl = if body.ends_with('\n') || body.is_empty() {
        ""
    } else {
        "\n"
    };
    format!("{fence}{info}\n{body}{nl}{fence}\n")
}

fn longest_run(text: &str, c: char) -> usize {
    let (mut best, mut run) = (0, 0);
    for ch in text.chars() {
        run = if ch == c { run + 1 } else { 0 };
        best = best.max(run);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_spans() {
        assert_eq!(offset(1.2), "+1.20s");
        assert_eq!(offset(-0.351), "-0.35s");
        assert_eq!(offset(0.0), "+0.00s");
        assert_eq!(offset(59.999), "+1m00.00s");
        assert_eq!(offset(125.3), "+2m05.30s");
        assert_eq!(offset(-(3.0 * 3600.0 + 602.4)), "-3h10m02s");
        assert_eq!(span(1.2), "1.20 s");
        assert_eq!(span(125.4), "2 min 05 s");
        assert_eq!(span(9_000.0), "2 h 30 min");
    }

    #[test]
    fn numbers_times_and_escaping() {
        assert_eq!(number(20.0), "20");
        assert_eq!(number(0.053), "0.053");
        assert_eq!(number(15_230_000.0), "1.523e7");
        assert_eq!(number(f64::INFINITY), "∞");
        let at: Timestamp = "2025-03-14T03:12:04.512Z".parse().unwrap();
        assert_eq!(utc(at, false), "03:12:04.512");
        assert_eq!(utc(at, true), "2025-03-14 03:12:04.512");
        assert_eq!(
            inline("fix *all* | [x](y)\n<b>"),
            r"fix \*all\* \| \[x\](y) \<b\>"
        );
        assert_eq!(code("a`b"), "``a`b``");
        assert_eq!(code("`x"), "`` `x ``");
        assert_eq!(fenced("diff", "```\n"), "````diff\n```\n````\n");
        assert_eq!(fenced("text", "a"), "```text\na\n```\n");
        assert_eq!(short_commit("3f9c2ab1e0"), "3f9c2ab");
        assert_eq!(subject("  Move app\n\nbody"), "Move app");
    }
}
