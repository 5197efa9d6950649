//! The Refresh email addresses report (SPEC §6): per side whether it could be refreshed and
//! the count of each result, every line with its addresses before and after, and the entries
//! that will be removed.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Serialize;

use super::{escape, write_csv};
use crate::model::{EntryId, RefreshLine, RefreshRecord, RefreshResult, Side};

/// `refresh-addresses --json` (SPEC §4): `source`/`target` with every result counted, zeros
/// included; `mailboxes`; `removed_next`; `report`.
#[derive(Debug, Clone, Serialize)]
pub struct RefreshReport {
    pub started: String,
    pub source: SideReport,
    pub target: SideReport,
    pub mailboxes: Vec<RefreshLine>,
    pub removed_next: Vec<EntryId>,
    /// The HTML report's absolute path, once written.
    pub report: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SideReport {
    pub available: bool,
    pub reason: Option<String>,
    pub counts: BTreeMap<&'static str, usize>,
}

impl RefreshReport {
    pub fn new(
        r: &RefreshRecord,
        removed_next: &[EntryId],
        report: Option<String>,
    ) -> RefreshReport {
        let side = |s: Side| {
            let (available, reason) = r.available(s);
            SideReport {
                available,
                reason: reason.map(str::to_owned),
                counts: RefreshResult::ALL
                    .iter()
                    .map(|o| (o.as_str(), count(r, s, *o)))
                    .collect(),
            }
        };
        RefreshReport {
            started: r.started.clone(),
            source: side(Side::Source),
            target: side(Side::Target),
            mailboxes: r.lines.clone(),
            removed_next: removed_next.to_vec(),
            report,
        }
    }
}

fn count(r: &RefreshRecord, side: Side, result: RefreshResult) -> usize {
    r.lines
        .iter()
        .filter(|l| l.side == side && l.result == result)
        .count()
}

pub fn csv(r: &RefreshRecord) -> String {
    let header = [
        "Side",
        "Result",
        "Entry",
        "Mailbox ID",
        "Addresses before",
        "Addresses after",
    ];
    let mut rows: Vec<Vec<Cow<'_, str>>> = vec![header.iter().map(|h| (*h).into()).collect()];
    for l in &r.lines {
        rows.push(vec![
            l.side.as_str().into(),
            l.result.label().into(),
            l.entry.as_str().into(),
            l.id.as_deref().unwrap_or("").into(),
            l.before.join(";").into(),
            l.after.join(";").into(),
        ]);
    }
    write_csv(rows)
}

/// The terminal summary: per side, either why it could not be refreshed or the count of
/// each result that applies to it.
pub fn summary(r: &RefreshRecord, removed_next: &[EntryId]) -> String {
    let mut out = String::new();
    for s in [Side::Source, Side::Target] {
        let title = match s {
            Side::Source => "Source mailboxes",
            Side::Target => "Target mailboxes",
        };
        out.push_str(&format!("{title}:\n"));
        let (available, reason) = r.available(s);
        if !available {
            out.push_str(&format!("  Not refreshed: {}\n", reason.unwrap_or("")));
            continue;
        }
        for o in RefreshResult::ALL.iter().filter(|o| o.applies_to(s)) {
            out.push_str(&format!("  {:<45} {:>6}\n", o.label(), count(r, s, *o)));
        }
    }
    let changed: Vec<&RefreshLine> = r
        .lines
        .iter()
        .filter(|l| l.result == RefreshResult::Refreshed)
        .collect();
    if !changed.is_empty() {
        out.push_str("Refreshed:\n");
        for l in changed {
            out.push_str(&format!(
                "  {} {}: {} -> {}\n",
                l.side,
                l.entry,
                l.before.join(", "),
                l.after.join(", ")
            ));
        }
    }
    let attention: Vec<&RefreshLine> = r
        .lines
        .iter()
        .filter(|l| {
            !matches!(
                l.result,
                RefreshResult::Refreshed | RefreshResult::NotChanged
            )
        })
        .collect();
    if !attention.is_empty() {
        out.push_str("Not refreshed:\n");
        for l in attention {
            out.push_str(&format!(
                "  {} {}: {} ({})\n",
                l.side,
                l.entry,
                l.result.label(),
                l.before.join(", ")
            ));
        }
    }
    if !removed_next.is_empty() {
        let ids: Vec<&str> = removed_next.iter().map(|i| i.as_str()).collect();
        out.push_str(&format!(
            "Entries whose source mailbox is missing are removed the next time the job file \
             changes or `migrate` starts: {}\n",
            ids.join(", ")
        ));
    }
    out
}

pub fn html(job_name: &str, r: &RefreshRecord, removed_next: &[EntryId]) -> String {
    let mut rows = String::new();
    for l in &r.lines {
        rows.push_str(&format!(
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            l.result,
            l.side,
            escape(l.result.label()),
            escape(&l.entry),
            escape(l.id.as_deref().unwrap_or("")),
            escape(&l.before.join(", ")),
            escape(&l.after.join(", "))
        ));
    }
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mailferry: refresh email addresses: {name}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; margin-bottom: 2em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; }}
tr.refreshed td {{ background: #efe; }}
tr.missing td, tr.manual td, tr.not_created td {{ background: #ffe; }}
pre {{ background: #f6f6f6; padding: 1em; }}
</style></head><body>
<h1>Refresh email addresses: {name}</h1>
<p>Run started {started}.</p>
<pre>{summary}</pre>
<table><tr><th>Side</th><th>Result</th><th>Entry</th><th>Mailbox ID</th><th>Addresses before</th><th>Addresses after</th></tr>
{rows}</table>
</body></html>
"#,
        name = escape(job_name),
        started = escape(&r.started),
        summary = escape(&summary(r, removed_next)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> RefreshRecord {
        let line = |side, result, entry: &str, before: &str, after: &str| RefreshLine {
            side,
            result,
            entry: entry.into(),
            id: Some(format!("id-{entry}").into()),
            before: vec![before.into()],
            after: vec![after.into()],
        };
        RefreshRecord {
            started: "2026-12-01T10:00:00Z".into(),
            source_available: true,
            source_reason: None,
            target_available: false,
            target_reason: Some("no directory".into()),
            lines: vec![
                line(
                    Side::Source,
                    RefreshResult::Refreshed,
                    "a",
                    "a@old",
                    "a@new",
                ),
                line(Side::Source, RefreshResult::Missing, "b", "b@old", "b@old"),
                line(
                    Side::Source,
                    RefreshResult::NotChanged,
                    "c",
                    "=cmd@x",
                    "=cmd@x",
                ),
            ],
        }
    }

    #[test]
    fn json_counts_every_result_per_side_zeros_included() {
        let v = serde_json::to_value(RefreshReport::new(&record(), &["b".into()], None)).unwrap();
        assert_eq!(v["source"]["available"], true);
        assert_eq!(v["source"]["counts"]["refreshed"], 1);
        assert_eq!(v["source"]["counts"]["missing"], 1);
        assert_eq!(v["source"]["counts"]["not_created"], 0);
        assert_eq!(v["source"]["counts"].as_object().unwrap().len(), 5);
        assert_eq!(v["target"]["available"], false);
        assert_eq!(v["target"]["reason"], "no directory");
        assert_eq!(v["mailboxes"][0]["side"], "source");
        assert_eq!(v["mailboxes"][0]["result"], "refreshed");
        assert_eq!(v["mailboxes"][0]["id"], "id-a");
        assert_eq!(v["removed_next"][0], "b");
        assert!(v["report"].is_null());
    }

    #[test]
    fn summary_and_csv_use_the_specs_words() {
        let s = summary(&record(), &["b".into()]);
        assert!(s.contains("Not refreshed - missing mailboxes"));
        assert!(s.contains("Target mailboxes:\n  Not refreshed: no directory"));
        assert!(s.contains("removed the next time the job file changes"));
        let c = csv(&record());
        assert!(c.contains("source,Refreshed,a,id-a,a@old,a@new"));
        assert!(c.contains("'=cmd@x"));
    }
}
