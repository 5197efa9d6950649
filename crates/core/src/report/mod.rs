//! Reports: the same facts as JSON (stable keys, SPEC §4), CSV and HTML, for a migration run
//! ([`migration`]) and for Refresh email addresses ([`refresh`]).
//!
//! Everything shown comes from servers, directories or files, so every HTML value is escaped
//! and every CSV cell that a spreadsheet would read as a formula is neutralised.

pub mod migration;
pub mod refresh;

pub use migration::{KeywordsDropped, MigrationReport, Summary};
pub use refresh::RefreshReport;

/// Text for HTML: `&`, `<`, `>` and `"` escaped.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A CSV cell that no spreadsheet runs as a formula (OWASP "CSV injection"): a cell starting
/// with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'`, which spreadsheets
/// take as "this is text" and do not show.
pub fn csv_cell(s: &str) -> std::borrow::Cow<'_, str> {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}").into()
    } else {
        s.into()
    }
}

/// Writes CSV rows, every cell through [`csv_cell`].
pub(crate) fn write_csv<'a>(
    rows: impl IntoIterator<Item = Vec<std::borrow::Cow<'a, str>>>,
) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    for row in rows {
        // Writing to a Vec cannot fail.
        let _ = w.write_record(row.iter().map(|c| csv_cell(c).into_owned()));
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KB", "MB", "GB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_never_start_a_formula() {
        for bad in [
            "=HYPERLINK(\"http://x\")",
            "+SUM(1+1)",
            "-2+3",
            "@cmd",
            "\tx",
        ] {
            let out = write_csv([vec![bad.into(), "plain".into()]]);
            assert!(
                out.starts_with("'") || out.starts_with("\"'"),
                "{bad}: {out}"
            );
            assert!(out.contains("plain"));
        }
        assert_eq!(csv_cell("INBOX"), "INBOX");
        assert_eq!(csv_cell(""), "");
    }

    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_500_000), "1.5 MB");
    }
}
