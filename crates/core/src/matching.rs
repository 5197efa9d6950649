//! Automatic matching: which target directory mailbox a source mailbox goes to.
//!
//! The rules are tried in order, and the first that finds exactly one candidate wins:
//! 1. the same primary address;
//! 2. the same address among all addresses, aliases included;
//! 3. the same local part of the primary address (the domain-change case:
//!    `alice@old.example` → `alice@new.example`);
//! 4. the same display name.
//!
//! A rule that finds more than one candidate matches nothing: guessing would migrate one
//! person's mail into another's mailbox. The entry then says which rule and which candidates,
//! so the admin can match it by hand. Target mailboxes already matched to another entry are no
//! candidates.

use std::collections::HashSet;

use crate::model::{DirectoryMailbox as DirEntry, MailboxId, local_part};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    PrimaryAddress,
    Alias,
    LocalPart,
    DisplayName,
}

impl Rule {
    /// Whether target `t` is a candidate for a source mailbox under this rule.
    fn applies(self, t: &DirEntry, addresses: &[String], display_name: Option<&str>) -> bool {
        let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        let primary = addresses.first().map(String::as_str).unwrap_or("");
        let target_primary = t.addresses.first().map(String::as_str);
        match self {
            Rule::PrimaryAddress => target_primary.is_some_and(|p| same(p, primary)),
            Rule::Alias => t
                .addresses
                .iter()
                .any(|ta| addresses.iter().any(|sa| same(ta, sa))),
            Rule::LocalPart => {
                !primary.is_empty()
                    && target_primary.is_some_and(|p| same(local_part(p), local_part(primary)))
            }
            Rule::DisplayName => match (display_name, t.display_name.as_deref()) {
                (Some(a), Some(b)) => !a.trim().is_empty() && same(a.trim(), b.trim()),
                _ => false,
            },
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Rule::PrimaryAddress => "the same primary address",
            Rule::Alias => "the same address among the aliases",
            Rule::LocalPart => "the same local part",
            Rule::DisplayName => "the same display name",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Match {
        target: DirEntry,
        rule: Rule,
    },
    /// A rule found several candidates (their primary addresses).
    Ambiguous {
        rule: Rule,
        candidates: Vec<String>,
    },
    NoCandidate,
}

impl Decision {
    /// Why an entry stays unmatched, for `status` and the entry's note.
    pub fn note(&self) -> Option<String> {
        match self {
            Decision::Match { .. } => None,
            Decision::Ambiguous { rule, candidates } => Some(format!(
                "{} matches {} target mailboxes ({}); match it with --set",
                rule.describe(),
                candidates.len(),
                candidates.join(", ")
            )),
            Decision::NoCandidate => Some(
                "no target mailbox has the same address, local part or display name; match it \
                 with --set or create it with --create"
                    .into(),
            ),
        }
    }
}

/// Applies the rules to one source mailbox (its addresses, primary first, and display name).
pub fn auto_match(
    addresses: &[String],
    display_name: Option<&str>,
    targets: &[DirEntry],
    taken: &HashSet<MailboxId>,
) -> Decision {
    let free: Vec<&DirEntry> = targets.iter().filter(|t| !taken.contains(&t.id)).collect();
    let rules = [
        Rule::PrimaryAddress,
        Rule::Alias,
        Rule::LocalPart,
        Rule::DisplayName,
    ];
    for rule in rules {
        let found: Vec<&DirEntry> = free
            .iter()
            .copied()
            .filter(|t| rule.applies(t, addresses, display_name))
            .collect();
        match found.as_slice() {
            [] => continue,
            [one] => {
                return Decision::Match {
                    target: (*one).clone(),
                    rule,
                };
            }
            many => {
                return Decision::Ambiguous {
                    rule,
                    candidates: many
                        .iter()
                        .map(|t| {
                            t.addresses
                                .first()
                                .cloned()
                                .unwrap_or_else(|| t.login.clone())
                        })
                        .collect(),
                };
            }
        }
    }
    Decision::NoCandidate
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(id: &str, addresses: &[&str], name: &str) -> DirEntry {
        DirEntry {
            id: id.into(),
            dn: format!("uid={id},ou=people,dc=new"),
            login: id.into(),
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            display_name: Some(name.into()),
        }
    }

    fn addrs(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn rule_of(d: Decision) -> Option<(String, Rule)> {
        match d {
            Decision::Match { target, rule } => Some((target.id.into_string(), rule)),
            _ => None,
        }
    }

    #[test]
    fn rules_apply_in_order() {
        let targets = vec![
            target("t1", &["alice@old.example"], "Alice A"),
            target(
                "t2",
                &["a.smith@new.example", "ally@old.example"],
                "Alice Smith",
            ),
            target("t3", &["bob@new.example"], "Robert"),
            target("t4", &["carol.x@new.example"], "Carol Jones"),
        ];
        let none = HashSet::new();
        let m = |a: &[&str], n: &str| rule_of(auto_match(&addrs(a), Some(n), &targets, &none));
        assert_eq!(
            m(&["alice@old.example"], "x"),
            Some(("t1".into(), Rule::PrimaryAddress))
        );
        assert_eq!(
            m(&["al@old.example", "ally@old.example"], "x"),
            Some(("t2".into(), Rule::Alias))
        );
        assert_eq!(
            m(&["bob@old.example"], "x"),
            Some(("t3".into(), Rule::LocalPart))
        );
        assert_eq!(
            m(&["cj@old.example"], "carol jones"),
            Some(("t4".into(), Rule::DisplayName))
        );
        assert_eq!(
            auto_match(&addrs(&["zed@old.example"]), Some("Zed"), &targets, &none),
            Decision::NoCandidate
        );
    }

    #[test]
    fn two_candidates_match_nothing_and_say_why() {
        let targets = vec![
            target("t1", &["sam@new.example"], "Sam"),
            target("t2", &["sam@other.example"], "Sam Two"),
        ];
        let d = auto_match(
            &addrs(&["sam@old.example"]),
            None,
            &targets,
            &HashSet::new(),
        );
        assert_eq!(
            d,
            Decision::Ambiguous {
                rule: Rule::LocalPart,
                candidates: vec!["sam@new.example".into(), "sam@other.example".into()]
            }
        );
        assert!(
            d.note()
                .unwrap()
                .contains("the same local part matches 2 target mailboxes")
        );
    }

    #[test]
    fn taken_targets_are_not_candidates() {
        let targets = vec![target("t1", &["sam@new.example"], "Sam")];
        let taken: HashSet<MailboxId> = ["t1".into()].into();
        assert_eq!(
            auto_match(&addrs(&["sam@old.example"]), None, &targets, &taken),
            Decision::NoCandidate
        );
    }
}
