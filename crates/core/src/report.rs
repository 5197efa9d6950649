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
