//! Migration reports: the same facts as JSON (stable keys, SPEC §4), CSV and HTML.

use serde_json::{Value, json};

use crate::migrate::Summary;
use crate::store::{Failure, Store, StoreError};

/// The summary of the latest `migrate` run, rebuilt from the store.
pub fn last_migration(store: &Store) -> Result<Option<Summary>, StoreError> {
    let Some((run, started, finished)) = store.last_run()? else {
        return Ok(None);
    };
    let seconds = match (
        chrono::DateTime::parse_from_rfc3339(&started),
        finished
            .as_deref()
            .map(chrono::DateTime::parse_from_rfc3339),
    ) {
        (Ok(a), Some(Ok(b))) => (b - a).num_milliseconds() as f64 / 1000.0,
        _ => 0.0,
    };
    Ok(Some(Summary {
        run,
        entries: store.run_entries(run)?,
        failures: store.failures(run)?,
        seconds,
    }))
}

fn errors_of<'a>(s: &'a Summary, entry: &'a str) -> impl Iterator<Item = &'a Failure> {
    s.failures.iter().filter(move |f| f.entry_id == entry)
}

pub fn migration_json(s: &Summary) -> Value {
    let entries: Vec<Value> = s
        .entries
        .iter()
        .map(|e| {
            let errors: Vec<Value> = errors_of(s, &e.entry_id)
                .map(|f| {
                    json!({"folder": f.folder, "uid": f.uid, "size": f.size,
                           "message_id": f.message_id, "reason": f.reason})
                })
                .collect();
            json!({
                "id": e.entry_id, "state": e.state, "copied": e.copied, "skipped": e.skipped,
                "failed": e.failed, "bytes": e.bytes, "moved": e.moved,
                "flags_updated": e.flags_updated, "seconds": e.seconds, "error": e.error,
                "errors": errors,
            })
        })
        .collect();
    json!({
        "run": s.run,
        "entries": entries,
        "copied": s.copied(),
        "failed": s.failed(),
        "bytes": s.bytes(),
        "seconds": s.seconds,
    })
}

/// One row per entry (`record` = `entry`) followed by one row per message that could not be
/// copied (`record` = `message`).
pub fn migration_csv(s: &Summary) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record([
        "record",
        "entry",
        "state",
        "copied",
        "skipped",
        "failed",
        "bytes",
        "seconds",
        "folder",
        "uid",
        "size",
        "message_id",
        "reason",
    ]);
    for e in &s.entries {
        let _ = w.write_record([
            "entry",
            &e.entry_id,
            &e.state,
            &e.copied.to_string(),
            &e.skipped.to_string(),
            &e.failed.to_string(),
            &e.bytes.to_string(),
            &format!("{:.1}", e.seconds),
            "",
            "",
            "",
            "",
            e.error.as_deref().unwrap_or(""),
        ]);
    }
    for f in &s.failures {
        let _ = w.write_record([
            "message",
            &f.entry_id,
            "failed",
            "",
            "",
            "",
            "",
            "",
            &f.folder,
            &f.uid.map(|u| u.to_string()).unwrap_or_default(),
            &f.size.map(|u| u.to_string()).unwrap_or_default(),
            f.message_id.as_deref().unwrap_or(""),
            &f.reason,
        ]);
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn migration_html(job_name: &str, s: &Summary) -> String {
    let mut rows = String::new();
    for e in &s.entries {
        rows.push_str(&format!(
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td></tr>\n",
            escape(&e.state),
            escape(&e.entry_id),
            escape(&e.state),
            e.copied,
            e.skipped,
            e.failed,
            human_bytes(e.bytes),
            e.seconds,
            escape(e.error.as_deref().unwrap_or(""))
        ));
    }
    let mut failures = String::new();
    for f in &s.failures {
        failures.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            escape(&f.entry_id),
            escape(&f.folder),
            f.uid.map(|u| u.to_string()).unwrap_or_default(),
            f.size.map(human_bytes).unwrap_or_default(),
            escape(f.message_id.as_deref().unwrap_or("")),
            escape(&f.reason)
        ));
    }
    if failures.is_empty() {
        failures =
            "<tr><td colspan=\"6\">None: every selected message was copied.</td></tr>".into();
    }
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mailferry migration report: {name}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; margin-bottom: 2em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; }}
tr.failed td, tr.partial td {{ background: #fee; }}
</style></head><body>
<h1>Migration report: {name}</h1>
<p>Run {run}: {copied} messages copied ({bytes}), {failed} failed, in {secs:.1} s.</p>
<h2>Mailboxes</h2>
<table><tr><th>Entry</th><th>State</th><th>Copied</th><th>Skipped</th><th>Failed</th><th>Bytes</th><th>Seconds</th><th>Error</th></tr>
{rows}</table>
<h2>Messages not copied</h2>
<table><tr><th>Entry</th><th>Folder</th><th>UID</th><th>Size</th><th>Message-ID</th><th>Reason</th></tr>
{failures}</table>
</body></html>
"#,
        name = escape(job_name),
        run = s.run,
        copied = s.copied(),
        bytes = human_bytes(s.bytes()),
        failed = s.failed(),
        secs = s.seconds,
    )
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
    use crate::store::RunEntry;

    fn summary() -> Summary {
        Summary {
            run: 3,
            entries: vec![RunEntry {
                entry_id: "u1".into(),
                state: "partial".into(),
                copied: 5,
                failed: 1,
                bytes: 1234,
                ..RunEntry::default()
            }],
            failures: vec![Failure {
                entry_id: "u1".into(),
                folder: "INBOX".into(),
                uid: Some(7),
                size: Some(0),
                message_id: None,
                reason: "APPEND failed: <script>".into(),
            }],
            seconds: 1.5,
        }
    }

    #[test]
    fn json_has_the_stable_keys() {
        let v = migration_json(&summary());
        assert_eq!(v["copied"], 5);
        assert_eq!(v["entries"][0]["errors"][0]["uid"], 7);
        assert_eq!(v["entries"][0]["errors"][0]["folder"], "INBOX");
    }

    #[test]
    fn html_escapes_server_words_and_csv_lists_failures() {
        let h = migration_html("job", &summary());
        assert!(h.contains("&lt;script&gt;"));
        assert!(!h.contains("<script>"));
        let c = migration_csv(&summary());
        assert_eq!(c.lines().count(), 3);
        assert!(c.lines().nth(2).unwrap().starts_with("message,u1,failed"));
    }
}

/// Refresh email addresses: the JSON of SPEC §4 (`source`/`target` with every result counted,
/// zeros included; `mailboxes`; `removed_next`; `report`).
pub mod refresh {
    use serde_json::{Value, json};

    use super::escape;
    use crate::refresh::{Outcome, Side};
    use crate::store::{RefreshLine, RefreshRecord};

    fn counts(r: &RefreshRecord, side: Side) -> Value {
        let mut m = serde_json::Map::new();
        for o in Outcome::ALL {
            let n = r
                .lines
                .iter()
                .filter(|l| l.side == side.as_str() && l.result == o.key())
                .count();
            m.insert(o.key().into(), json!(n));
        }
        Value::Object(m)
    }

    fn side(r: &RefreshRecord, side: Side) -> Value {
        let (available, reason) = match side {
            Side::Source => (r.source_available, &r.source_reason),
            Side::Target => (r.target_available, &r.target_reason),
        };
        json!({"available": available, "reason": reason, "counts": counts(r, side)})
    }

    pub fn json(r: &RefreshRecord, removed_next: &[String], report: Option<&str>) -> Value {
        let mailboxes: Vec<Value> = r
            .lines
            .iter()
            .map(|l| {
                json!({"side": l.side, "result": l.result, "entry": l.entry, "id": l.id,
                       "before": l.before, "after": l.after})
            })
            .collect();
        json!({
            "started": r.started,
            "source": side(r, Side::Source),
            "target": side(r, Side::Target),
            "mailboxes": mailboxes,
            "removed_next": removed_next,
            "report": report,
        })
    }

    fn label(l: &RefreshLine) -> &'static str {
        Outcome::from_key(&l.result).map_or("?", Outcome::label)
    }

    pub fn csv(r: &RefreshRecord) -> String {
        let mut w = csv::Writer::from_writer(Vec::new());
        let _ = w.write_record([
            "Side",
            "Result",
            "Entry",
            "Mailbox ID",
            "Addresses before",
            "Addresses after",
        ]);
        for l in &r.lines {
            let _ = w.write_record([
                l.side.as_str(),
                label(l),
                &l.entry,
                l.id.as_deref().unwrap_or(""),
                &l.before.join(";"),
                &l.after.join(";"),
            ]);
        }
        String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
    }

    /// The terminal summary: per side, either why it could not be refreshed or the count of
    /// each result that applies to it.
    pub fn summary(r: &RefreshRecord, removed_next: &[String]) -> String {
        let mut out = String::new();
        for (s, available, reason) in [
            (Side::Source, r.source_available, &r.source_reason),
            (Side::Target, r.target_available, &r.target_reason),
        ] {
            let title = match s {
                Side::Source => "Source mailboxes",
                Side::Target => "Target mailboxes",
            };
            out.push_str(&format!("{title}:\n"));
            if !available {
                out.push_str(&format!(
                    "  Not refreshed: {}\n",
                    reason.as_deref().unwrap_or("")
                ));
                continue;
            }
            for o in Outcome::ALL.into_iter().filter(|o| o.applies_to(s)) {
                let n = r
                    .lines
                    .iter()
                    .filter(|l| l.side == s.as_str() && l.result == o.key())
                    .count();
                out.push_str(&format!("  {:<45} {n:>6}\n", o.label()));
            }
        }
        let changed: Vec<&RefreshLine> =
            r.lines.iter().filter(|l| l.result == "refreshed").collect();
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
            .filter(|l| !matches!(l.result.as_str(), "refreshed" | "not_changed"))
            .collect();
        if !attention.is_empty() {
            out.push_str("Not refreshed:\n");
            for l in attention {
                out.push_str(&format!(
                    "  {} {}: {} ({})\n",
                    l.side,
                    l.entry,
                    label(l),
                    l.before.join(", ")
                ));
            }
        }
        if !removed_next.is_empty() {
            out.push_str(&format!(
                "Entries whose source mailbox is missing are removed the next time the job file \
                 changes or `migrate` starts: {}\n",
                removed_next.join(", ")
            ));
        }
        out
    }

    pub fn html(job_name: &str, r: &RefreshRecord, removed_next: &[String]) -> String {
        let mut rows = String::new();
        for l in &r.lines {
            rows.push_str(&format!(
                "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                escape(&l.result),
                escape(&l.side),
                escape(label(l)),
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
}
