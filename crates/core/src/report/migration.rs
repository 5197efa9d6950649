//! The migration report of one run: per mailbox what the pass did, and every message it could
//! not copy with the server's words.

use std::borrow::Cow;

use serde::Serialize;

use super::{escape, human_bytes, write_csv};
pub use crate::model::KeywordsDropped;
use crate::model::{EntryId, EntryState, Failure, RunEntry, RunId, RunKind, Uid};
use crate::ports::{RunInfo, Store, StoreError};

/// What a run did, as recorded.
#[derive(Debug, Clone)]
pub struct Summary {
    pub run: RunId,
    pub entries: Vec<RunEntry>,
    pub failures: Vec<Failure>,
    pub seconds: f64,
}

impl Summary {
    pub fn copied(&self) -> u64 {
        self.entries.iter().map(|e| e.copied).sum()
    }
    pub fn failed(&self) -> u64 {
        self.entries.iter().map(|e| e.failed).sum()
    }
    pub fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.bytes).sum()
    }
    /// Whether any entry failed or has messages that could not be copied (exit status 1).
    pub fn has_failures(&self) -> bool {
        self.entries.iter().any(|e| e.state != EntryState::Migrated)
    }
    pub fn migrated(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.state == EntryState::Migrated)
            .count()
    }
    fn errors_of<'a>(&'a self, entry: &'a EntryId) -> impl Iterator<Item = &'a Failure> {
        self.failures.iter().filter(move |f| &f.entry_id == entry)
    }
}

/// The summary of the latest `migrate` run, rebuilt from the store.
pub fn last_migration(store: &dyn Store) -> Result<Option<Summary>, StoreError> {
    match store.last_run(RunKind::Migrate)? {
        Some(info) => summary_of(store, &info).map(Some),
        None => Ok(None),
    }
}

/// The summary of one `migrate` run, rebuilt from the store.
pub fn summary_of(store: &dyn Store, info: &RunInfo) -> Result<Summary, StoreError> {
    let seconds = match (
        chrono::DateTime::parse_from_rfc3339(&info.started),
        info.finished
            .as_deref()
            .map(chrono::DateTime::parse_from_rfc3339),
    ) {
        (Ok(a), Some(Ok(b))) => (b - a).num_milliseconds() as f64 / 1000.0,
        _ => 0.0,
    };
    Ok(Summary {
        run: info.id,
        entries: store.run_entries(info.id)?,
        failures: store.failures(info.id)?,
        seconds,
    })
}

/// `migrate --json` and `report --format json` (SPEC §4 keys).
#[derive(Debug, Clone, Serialize)]
pub struct MigrationReport {
    pub run: RunId,
    pub entries: Vec<EntryReport>,
    pub copied: u64,
    pub failed: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// This process's peak resident memory, when the caller measured it (`migrate --json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EntryReport {
    pub id: EntryId,
    pub state: EntryState,
    pub copied: u64,
    pub skipped: u64,
    pub failed: u64,
    pub bytes: u64,
    pub moved: u64,
    pub flags_updated: u64,
    pub seconds: f64,
    pub error: Option<String>,
    pub errors: Vec<MessageError>,
    /// Custom keywords the target could not store (a profile without keywords, such as
    /// Exchange Online's), dropped from the copied messages, per folder: never a failure.
    /// Kept in the pass's run line; the key is left out when none were dropped.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keywords_dropped: Vec<KeywordsDropped>,
    /// Seconds the pass's sessions waited on throttling servers (source and target), when
    /// they waited at all. Kept in the pass's run line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttled_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MessageError {
    pub folder: String,
    pub uid: Option<Uid>,
    pub size: Option<u64>,
    pub message_id: Option<String>,
    pub reason: String,
}

impl MigrationReport {
    pub fn new(s: &Summary) -> MigrationReport {
        let entries = s
            .entries
            .iter()
            .map(|e| EntryReport {
                id: e.entry_id.clone(),
                state: e.state,
                copied: e.copied,
                skipped: e.skipped,
                failed: e.failed,
                bytes: e.bytes,
                moved: e.moved,
                flags_updated: e.flags_updated,
                seconds: e.seconds,
                error: e.error.clone(),
                errors: s
                    .errors_of(&e.entry_id)
                    .map(|f| MessageError {
                        folder: f.folder.clone(),
                        uid: f.uid,
                        size: f.size,
                        message_id: f.message_id.clone(),
                        reason: f.reason.clone(),
                    })
                    .collect(),
                keywords_dropped: e.keywords_dropped.clone(),
                throttled_seconds: (e.throttled_seconds > 0.0).then_some(e.throttled_seconds),
            })
            .collect();
        MigrationReport {
            run: s.run,
            entries,
            copied: s.copied(),
            failed: s.failed(),
            bytes: s.bytes(),
            seconds: s.seconds,
            peak_rss_bytes: None,
        }
    }
}

/// One row per entry (`record` = `entry`) followed by one row per message that could not be
/// copied (`record` = `message`), then one per folder where custom keywords were dropped
/// (`record` = `keywords`: the folder and its count in `keywords_dropped`).
pub fn csv(s: &Summary) -> String {
    let header = [
        "record",
        "entry",
        "state",
        "copied",
        "skipped",
        "failed",
        "bytes",
        "seconds",
        "keywords_dropped",
        "throttled_seconds",
        "folder",
        "uid",
        "size",
        "message_id",
        "reason",
    ];
    let mut rows: Vec<Vec<Cow<'_, str>>> = vec![header.iter().map(|h| (*h).into()).collect()];
    for e in &s.entries {
        rows.push(vec![
            "entry".into(),
            e.entry_id.as_str().into(),
            e.state.as_str().into(),
            e.copied.to_string().into(),
            e.skipped.to_string().into(),
            e.failed.to_string().into(),
            e.bytes.to_string().into(),
            format!("{:.1}", e.seconds).into(),
            e.keywords_dropped_total().to_string().into(),
            format!("{:.1}", e.throttled_seconds).into(),
            "".into(),
            "".into(),
            "".into(),
            "".into(),
            e.error.as_deref().unwrap_or("").into(),
        ]);
    }
    for f in &s.failures {
        rows.push(vec![
            "message".into(),
            f.entry_id.as_str().into(),
            "failed".into(),
            "".into(),
            "".into(),
            "".into(),
            "".into(),
            "".into(),
            "".into(),
            "".into(),
            f.folder.as_str().into(),
            f.uid.map(|u| u.to_string()).unwrap_or_default().into(),
            f.size.map(|u| u.to_string()).unwrap_or_default().into(),
            f.message_id.as_deref().unwrap_or("").into(),
            f.reason.as_str().into(),
        ]);
    }
    for e in &s.entries {
        for k in &e.keywords_dropped {
            let mut row: Vec<Cow<'_, str>> = vec!["".into(); header.len()];
            row[0] = "keywords".into();
            row[1] = e.entry_id.as_str().into();
            row[8] = k.count.to_string().into();
            row[10] = k.folder.as_str().into();
            rows.push(row);
        }
    }
    write_csv(rows)
}

pub fn html(job_name: &str, s: &Summary) -> String {
    let mut rows = String::new();
    for e in &s.entries {
        rows.push_str(&format!(
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            e.state,
            escape(&e.entry_id),
            e.state,
            e.copied,
            e.skipped,
            e.failed,
            human_bytes(e.bytes),
            e.seconds,
            keywords_cell(e),
            if e.throttled_seconds > 0.0 {
                format!("{:.1} s", e.throttled_seconds)
            } else {
                String::new()
            },
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
<table><tr><th>Entry</th><th>State</th><th>Copied</th><th>Skipped</th><th>Failed</th><th>Bytes</th><th>Seconds</th><th>Keywords dropped</th><th>Throttled</th><th>Error</th></tr>
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

/// The HTML report's keywords cell: the total and, per folder, its count (escaped: folder
/// names come from a server); empty when none were dropped.
fn keywords_cell(e: &RunEntry) -> String {
    if e.keywords_dropped.is_empty() {
        return String::new();
    }
    let folders: Vec<String> = e
        .keywords_dropped
        .iter()
        .map(|k| format!("{} {}", escape(&k.folder), k.count))
        .collect();
    format!("{} ({})", e.keywords_dropped_total(), folders.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Summary {
        let mut e = RunEntry::new("u1".into());
        e.state = EntryState::Partial;
        e.copied = 5;
        e.failed = 1;
        e.bytes = 1234;
        e.keywords_dropped = vec![
            KeywordsDropped {
                folder: "INBOX".into(),
                count: 2,
            },
            KeywordsDropped {
                folder: "@SUM(1+1)<b>".into(),
                count: 3,
            },
        ];
        e.throttled_seconds = 12.3;
        Summary {
            run: RunId(3),
            entries: vec![e],
            failures: vec![Failure {
                entry_id: "u1".into(),
                folder: "=HYPERLINK(\"http://x\")".into(),
                uid: Some(crate::testing::uid(7)),
                size: Some(0),
                message_id: None,
                reason: "APPEND failed: <script>".into(),
            }],
            seconds: 1.5,
        }
    }

    #[test]
    fn json_has_the_stable_keys() {
        let v = serde_json::to_value(MigrationReport::new(&summary())).unwrap();
        assert_eq!(v["run"], 3);
        assert_eq!(v["copied"], 5);
        assert_eq!(v["entries"][0]["state"], "partial");
        assert_eq!(v["entries"][0]["errors"][0]["uid"], 7);
        assert_eq!(
            v["entries"][0]["errors"][0]["reason"],
            "APPEND failed: <script>"
        );
        assert!(v.get("peak_rss_bytes").is_none());
        assert_eq!(
            v["entries"][0]["keywords_dropped"][1]["folder"],
            "@SUM(1+1)<b>"
        );
        assert_eq!(v["entries"][0]["keywords_dropped"][1]["count"], 3);
        assert_eq!(v["entries"][0]["throttled_seconds"], 12.3);
        // Without any, the keys are left out (SPEC §4's keys stay as they were).
        let mut quiet = summary();
        quiet.entries[0].keywords_dropped.clear();
        quiet.entries[0].throttled_seconds = 0.0;
        let v = serde_json::to_value(MigrationReport::new(&quiet)).unwrap();
        assert!(v["entries"][0].get("keywords_dropped").is_none());
        assert!(v["entries"][0].get("throttled_seconds").is_none());
    }

    #[test]
    fn html_escapes_server_words_and_csv_lists_failures() {
        let h = html("job", &summary());
        assert!(h.contains("&lt;script&gt;"));
        assert!(!h.contains("<script>"));
        assert!(
            h.contains("<td>5 (INBOX 2, @SUM(1+1)&lt;b&gt; 3)</td><td>12.3 s</td>"),
            "{h}"
        );
        let c = csv(&summary());
        assert_eq!(c.lines().count(), 5);
        let entry = c.lines().nth(1).unwrap();
        assert!(
            entry.starts_with("entry,u1,partial,5,0,1,1234,0.0,5,12.3,"),
            "{entry}"
        );
        let keywords: Vec<&str> = c.lines().skip(3).collect();
        assert_eq!(keywords[0], "keywords,u1,,,,,,,2,,INBOX,,,,");
        // A folder name from the server never reaches a spreadsheet as a formula.
        assert_eq!(keywords[1], "keywords,u1,,,,,,,3,,'@SUM(1+1)<b>,,,,");
        let failure = c.lines().nth(2).unwrap();
        assert!(failure.starts_with("message,u1,failed"));
        // A folder name from the server never reaches a spreadsheet as a formula.
        assert!(
            failure.contains("\"'=HYPERLINK(\"\"http://x\"\")\""),
            "{failure}"
        );
    }
}
