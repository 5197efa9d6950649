//! Entries: turning CSV rows into entries, and finding entries by what an admin types.

use crate::csvfile::CsvRow;
use crate::model::{Entry, EntryState, Origin, same_address};

/// Entries from CSV rows. A row with target addresses is matched (origin `csv`); a row without
/// stays unmatched until `match` pairs it. Logins default to the primary addresses.
pub fn entries_from_csv(rows: &[CsvRow], existing: &[Entry]) -> Vec<Entry> {
    rows.iter()
        .map(|r| {
            let previous = existing.iter().find(|e| e.id == r.source_id);
            let target_login = r
                .target_login
                .clone()
                .or_else(|| r.target_addresses.first().cloned());
            let origin = if target_login.is_some() {
                Origin::Csv
            } else {
                previous
                    .map(|p| p.origin)
                    .filter(|o| *o != Origin::Csv)
                    .unwrap_or(Origin::Unmatched)
            };
            let kept_target = target_login.clone();
            let (target_login, target_addresses) = if target_login.is_some() {
                (target_login, r.target_addresses.clone())
            } else {
                previous
                    .map(|p| (p.target_login.clone(), p.target_addresses.clone()))
                    .unwrap_or((None, Vec::new()))
            };
            Entry {
                id: r.source_id.as_str().into(),
                source_login: r
                    .source_login
                    .clone()
                    .or_else(|| r.source_addresses.first().cloned())
                    .unwrap_or_default(),
                source_addresses: r.source_addresses.clone(),
                target_login,
                target_addresses,
                origin,
                stage: r.stage.or(previous.and_then(|p| p.stage)),
                state: previous.map_or(EntryState::New, |p| p.state),
                copied: 0,
                failed: 0,
                last_pass: None,
                last_error: None,
                source_display_name: previous.and_then(|p| p.source_display_name.clone()),
                // The target's directory ID stays only while the entry keeps its target.
                target_id: previous
                    .filter(|p| p.target_login == kept_target)
                    .and_then(|p| p.target_id.clone()),
                match_note: None,
                missing_source: false,
            }
        })
        .collect()
}

/// Whether `m` names this entry: its ID, a source or target address, or a login
/// (addresses compared case-insensitively).
pub fn entry_matches(e: &Entry, m: &str) -> bool {
    e.id == m
        || same_address(&e.source_login, m)
        || e.target_login
            .as_deref()
            .is_some_and(|l| same_address(l, m))
        || e.source_addresses.iter().any(|a| same_address(a, m))
        || e.target_addresses.iter().any(|a| same_address(a, m))
}

/// Which entries a command works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    /// What an admin types: an entry ID, a source or target address, or a login.
    Mailboxes(Vec<String>),
    Stage(u32),
    /// Exactly these entry IDs (the web UI's selection).
    Ids(Vec<String>),
}

/// The selected entries, or the names that match no entry (or more than one).
pub fn select<'a>(entries: &'a [Entry], selection: &Selection) -> Result<Vec<&'a Entry>, String> {
    match selection {
        Selection::All => Ok(entries.iter().collect()),
        Selection::Stage(n) => Ok(entries.iter().filter(|e| e.stage == Some(*n)).collect()),
        Selection::Ids(ids) => {
            if ids.is_empty() {
                return Err("Select at least one mailbox".to_owned());
            }
            // Indexed: the web console selects thousands of entries at once.
            let by_id: std::collections::HashMap<&str, &Entry> =
                entries.iter().map(|e| (e.id.as_str(), e)).collect();
            let mut seen = std::collections::HashSet::new();
            let mut out: Vec<&Entry> = Vec::new();
            let mut unknown = Vec::new();
            for id in ids {
                match by_id.get(id.as_str()) {
                    Some(e) if seen.insert(e.id.as_str()) => out.push(e),
                    Some(_) => {}
                    None => unknown.push(format!("No entry has the ID {id:?}")),
                }
            }
            if unknown.is_empty() {
                Ok(out)
            } else {
                Err(unknown.join("; "))
            }
        }
        Selection::Mailboxes(names) => {
            let mut out: Vec<&Entry> = Vec::new();
            let mut problems = Vec::new();
            for m in names {
                let found: Vec<&Entry> = entries.iter().filter(|e| entry_matches(e, m)).collect();
                match found.as_slice() {
                    [] => problems.push(format!("No entry matches {m:?}")),
                    [e] => {
                        if !out.iter().any(|o| o.id == e.id) {
                            out.push(e);
                        }
                    }
                    many => problems.push(format!(
                        "{m:?} matches {} entries ({}); use the entry ID",
                        many.len(),
                        many.iter()
                            .map(|e| e.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                }
            }
            if problems.is_empty() {
                Ok(out)
            } else {
                Err(problems.join("; "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, src: &str, dst: Option<&str>) -> CsvRow {
        CsvRow {
            line: 2,
            source_id: id.into(),
            source_addresses: vec![src.into()],
            source_login: None,
            source_password: None,
            target_addresses: dst.map(|d| vec![d.to_string()]).unwrap_or_default(),
            target_login: None,
            target_password: None,
            stage: None,
        }
    }

    #[test]
    fn csv_rows_become_entries_with_default_logins() {
        let e = entries_from_csv(&[row("1", "a@old.example", Some("a@new.example"))], &[]);
        assert_eq!(e[0].source_login, "a@old.example");
        assert_eq!(e[0].target_login.as_deref(), Some("a@new.example"));
        assert_eq!(e[0].origin, crate::model::Origin::Csv);
        let e = entries_from_csv(&[row("2", "b@old.example", None)], &[]);
        assert_eq!(e[0].origin, crate::model::Origin::Unmatched);
        assert_eq!(e[0].target_login, None);
    }

    #[test]
    fn selection_by_address_login_or_id() {
        let e = entries_from_csv(
            &[
                row("1", "a@old.example", Some("a@new.example")),
                row("2", "b@old.example", None),
            ],
            &[],
        );
        let pick = |m: &str| {
            select(&e, &Selection::Mailboxes(vec![m.into()]))
                .map(|v| v.iter().map(|e| e.id.clone()).collect::<Vec<_>>())
        };
        assert_eq!(pick("A@NEW.example").unwrap(), vec!["1"]);
        assert_eq!(pick("2").unwrap(), vec!["2"]);
        assert!(pick("nobody@x").unwrap_err().contains("No entry matches"));
    }
}
