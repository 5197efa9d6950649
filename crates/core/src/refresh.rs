//! Refresh email addresses (SPEC §6): the decision for each side of each entry, without I/O.
//!
//! The caller looks each mailbox up by its stable ID in that side's directory and hands the
//! result here; this module says which of the five results applies and what is stored after.

use crate::model::{DirectoryMailbox, Entry, MailboxId, Origin, RefreshResult, same_addresses};

/// What refreshing one side of one entry found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: RefreshResult,
    pub before: Vec<String>,
    pub after: Vec<String>,
    /// The directory entry found, whose login and display name the caller stores too.
    pub found: Option<DirectoryMailbox>,
}

fn compare(before: &[String], found: Option<DirectoryMailbox>) -> Decision {
    match found {
        None => Decision {
            outcome: RefreshResult::Missing,
            before: before.to_vec(),
            after: before.to_vec(),
            found: None,
        },
        Some(d) if same_addresses(before, &d.addresses) => Decision {
            outcome: RefreshResult::NotChanged,
            before: before.to_vec(),
            after: before.to_vec(),
            found: Some(d),
        },
        Some(d) => Decision {
            outcome: RefreshResult::Refreshed,
            before: before.to_vec(),
            after: d.addresses.clone(),
            found: Some(d),
        },
    }
}

/// The source side: the entry's ID is the source mailbox ID; `found` is the directory's entry
/// with that ID, if any.
pub fn source(entry: &Entry, found: Option<DirectoryMailbox>) -> Decision {
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
    Lookup(Option<MailboxId>),
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
    match entry.origin {
        Origin::PendingCreation => keep(RefreshResult::NotCreated),
        Origin::Manual => keep(RefreshResult::Manual),
        _ if entry.target_login.is_none() => TargetStep::NoResult,
        _ => TargetStep::Lookup(entry.target_id.clone()),
    }
}

/// The target side after a lookup.
pub fn target(entry: &Entry, found: Option<DirectoryMailbox>) -> Decision {
    compare(&entry.target_addresses, found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Side;

    fn entry(origin: &str, target: Option<&str>) -> Entry {
        let mut e = Entry::new(
            "src-1".into(),
            "alice".into(),
            Origin::parse(origin).unwrap(),
        );
        e.source_addresses = vec!["alice@old.example".into(), "a@old.example".into()];
        e.target_login = target.map(str::to_string);
        e.target_addresses = target
            .map(|t| vec![format!("{t}@new.example")])
            .unwrap_or_default();
        e.target_id = target.map(|_| "dst-1".into());
        e
    }

    fn dir(addresses: &[&str]) -> DirectoryMailbox {
        DirectoryMailbox {
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
        assert_eq!(source(&e, None).outcome, RefreshResult::Missing);
        let same = source(&e, Some(dir(&["ALICE@old.example", "a@old.example"])));
        assert_eq!(same.outcome, RefreshResult::NotChanged);
        assert_eq!(same.after, e.source_addresses);
        let changed = source(&e, Some(dir(&["alice@new.example", "a@new.example"])));
        assert_eq!(changed.outcome, RefreshResult::Refreshed);
        assert_eq!(changed.before, e.source_addresses);
        assert_eq!(changed.after, vec!["alice@new.example", "a@new.example"]);
    }

    #[test]
    fn target_steps_by_origin() {
        assert_eq!(target_step(&entry("unmatched", None)), TargetStep::NoResult);
        let TargetStep::Decided(d) = target_step(&entry("manual", Some("alice"))) else {
            panic!()
        };
        assert_eq!(d.outcome, RefreshResult::Manual);
        let TargetStep::Decided(d) = target_step(&entry("pending-creation", None)) else {
            panic!()
        };
        assert_eq!(d.outcome, RefreshResult::NotCreated);
        assert_eq!(
            target_step(&entry("auto", Some("alice"))),
            TargetStep::Lookup(Some("dst-1".into()))
        );
        assert_eq!(
            target(&entry("csv", Some("alice")), None).outcome,
            RefreshResult::Missing
        );
    }

    #[test]
    fn labels_are_the_specs_words() {
        assert_eq!(
            RefreshResult::Missing.label(),
            "Not refreshed - missing mailboxes"
        );
        assert_eq!(
            RefreshResult::parse("not_created"),
            Some(RefreshResult::NotCreated)
        );
        assert!(!RefreshResult::Manual.applies_to(Side::Source));
    }
}
