//! Refresh email addresses (SPEC §6): the decision for each side of each entry, without I/O.
//!
//! The caller looks each mailbox up by its stable ID in that side's directory and hands the
//! result here; this module says which of the five results applies and what is stored after.

use crate::directory::DirEntry;
use crate::store::Entry;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    Source,
    Target,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Target => "target",
        }
    }
}

/// The five results of SPEC §6, in the order the summary lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    Refreshed,
    NotChanged,
    Missing,
    Manual,
    NotCreated,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Refreshed,
        Outcome::NotChanged,
        Outcome::Missing,
        Outcome::Manual,
        Outcome::NotCreated,
    ];

    /// The stable key in `--json` output and reports.
    pub fn key(self) -> &'static str {
        match self {
            Outcome::Refreshed => "refreshed",
            Outcome::NotChanged => "not_changed",
            Outcome::Missing => "missing",
            Outcome::Manual => "manual",
            Outcome::NotCreated => "not_created",
        }
    }

    /// The words an admin reads (SPEC §6).
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Refreshed => "Refreshed",
            Outcome::NotChanged => "Not changed",
            Outcome::Missing => "Not refreshed - missing mailboxes",
            Outcome::Manual => "Not refreshed - addresses entered manually",
            Outcome::NotCreated => "Not refreshed - mailboxes not created yet",
        }
    }

    pub fn from_key(key: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.key() == key)
    }

    /// Whether this result can occur on a side (source mailboxes are never manual or waiting).
    pub fn applies_to(self, side: Side) -> bool {
        side == Side::Target
            || matches!(
                self,
                Outcome::Refreshed | Outcome::NotChanged | Outcome::Missing
            )
    }
}

/// What refreshing one side of one entry found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub before: Vec<String>,
    pub after: Vec<String>,
    /// The directory entry found, whose login and display name the caller stores too.
    pub found: Option<DirEntry>,
}

fn same_addresses(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.eq_ignore_ascii_case(y))
}

fn compare(before: &[String], found: Option<DirEntry>) -> Decision {
    match found {
        None => Decision {
            outcome: Outcome::Missing,
            before: before.to_vec(),
            after: before.to_vec(),
            found: None,
        },
        Some(d) if same_addresses(before, &d.addresses) => Decision {
            outcome: Outcome::NotChanged,
            before: before.to_vec(),
            after: before.to_vec(),
            found: Some(d),
        },
        Some(d) => Decision {
            outcome: Outcome::Refreshed,
            before: before.to_vec(),
            after: d.addresses.clone(),
            found: Some(d),
        },
    }
}

/// The source side: the entry's ID is the source mailbox ID; `found` is the directory's entry
/// with that ID, if any.
pub fn source(entry: &Entry, found: Option<DirEntry>) -> Decision {
    compare(&entry.source_addresses, found)
}

/// What the target side needs before a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetStep {
    /// No target yet (unmatched or skipped without one): no target result at all.
    NoResult,
    /// The result is known without asking the directory.
    Decided(Decision),
    /// Look this ID up in the target directory (`None`: the entry has no target ID, so the
    /// directory cannot have it).
    Lookup(Option<String>),
}

pub fn target_step(entry: &Entry) -> TargetStep {
    let keep = |outcome| {
        TargetStep::Decided(Decision {
            outcome,
            before: entry.target_addresses.clone(),
            after: entry.target_addresses.clone(),
            found: None,
        })
    };
    match entry.origin.as_str() {
        "pending-creation" => keep(Outcome::NotCreated),
        "manual" => keep(Outcome::Manual),
        _ if entry.target_login.is_none() => TargetStep::NoResult,
        _ => TargetStep::Lookup(entry.target_id.clone()),
    }
}

/// The target side after a lookup.
pub fn target(entry: &Entry, found: Option<DirEntry>) -> Decision {
    compare(&entry.target_addresses, found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(origin: &str, target: Option<&str>) -> Entry {
        Entry {
            id: "src-1".into(),
            source_login: "alice".into(),
            source_addresses: vec!["alice@old.example".into(), "a@old.example".into()],
            target_login: target.map(str::to_string),
            target_addresses: target
                .map(|t| vec![format!("{t}@new.example")])
                .unwrap_or_default(),
            origin: origin.into(),
            stage: None,
            state: "new".into(),
            copied: 0,
            failed: 0,
            last_pass: None,
            last_error: None,
            source_display_name: None,
            target_id: target.map(|_| "dst-1".to_string()),
            match_note: None,
            missing_source: false,
        }
    }

    fn dir(addresses: &[&str]) -> DirEntry {
        DirEntry {
            id: "x".into(),
            dn: "uid=x".into(),
            login: "x".into(),
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            display_name: None,
        }
    }

    #[test]
    fn source_results() {
        let e = entry("auto", Some("alice"));
        assert_eq!(source(&e, None).outcome, Outcome::Missing);
        let same = source(&e, Some(dir(&["ALICE@old.example", "a@old.example"])));
        assert_eq!(same.outcome, Outcome::NotChanged);
        assert_eq!(same.after, e.source_addresses);
        let changed = source(&e, Some(dir(&["alice@new.example", "a@new.example"])));
        assert_eq!(changed.outcome, Outcome::Refreshed);
        assert_eq!(changed.before, e.source_addresses);
        assert_eq!(changed.after, vec!["alice@new.example", "a@new.example"]);
    }

    #[test]
    fn target_steps_by_origin() {
        assert_eq!(target_step(&entry("unmatched", None)), TargetStep::NoResult);
        let TargetStep::Decided(d) = target_step(&entry("manual", Some("alice"))) else {
            panic!()
        };
        assert_eq!(d.outcome, Outcome::Manual);
        let TargetStep::Decided(d) = target_step(&entry("pending-creation", None)) else {
            panic!()
        };
        assert_eq!(d.outcome, Outcome::NotCreated);
        assert_eq!(
            target_step(&entry("auto", Some("alice"))),
            TargetStep::Lookup(Some("dst-1".into()))
        );
        assert_eq!(
            target(&entry("csv", Some("alice")), None).outcome,
            Outcome::Missing
        );
    }

    #[test]
    fn labels_are_the_specs_words() {
        assert_eq!(
            Outcome::Missing.label(),
            "Not refreshed - missing mailboxes"
        );
        assert_eq!(Outcome::from_key("not_created"), Some(Outcome::NotCreated));
        assert!(!Outcome::Manual.applies_to(Side::Source));
    }
}
