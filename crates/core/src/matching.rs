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

use std::collections::{HashMap, HashSet};

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

/// The target mailboxes indexed by what each rule compares, built once for a whole `match
/// --auto`: each source mailbox then costs a few lookups instead of a scan of every target
/// (10,000 × 10,000 comparisons took 47 s).
pub struct TargetIndex<'a> {
    targets: &'a [DirEntry],
    primary: HashMap<String, Vec<usize>>,
    any: HashMap<String, Vec<usize>>,
    local: HashMap<String, Vec<usize>>,
    name: HashMap<String, Vec<usize>>,
}

/// The key two values share when a rule calls them the same: equal ignoring ASCII case.
fn key(s: &str) -> String {
    s.to_ascii_lowercase()
}

impl<'a> TargetIndex<'a> {
    pub fn new(targets: &'a [DirEntry]) -> TargetIndex<'a> {
        let mut index = TargetIndex {
            targets,
            primary: HashMap::new(),
            any: HashMap::new(),
            local: HashMap::new(),
            name: HashMap::new(),
        };
        for (i, t) in targets.iter().enumerate() {
            if let Some(p) = t.addresses.first() {
                index.primary.entry(key(p)).or_default().push(i);
                index.local.entry(key(local_part(p))).or_default().push(i);
            }
            for a in &t.addresses {
                let list = index.any.entry(key(a)).or_default();
                if list.last() != Some(&i) {
                    list.push(i);
                }
            }
            if let Some(n) = t.display_name.as_deref().map(str::trim)
                && !n.is_empty()
            {
                index.name.entry(key(n)).or_default().push(i);
            }
        }
        index
    }

    /// The targets a rule finds for a source mailbox, in the directory's order.
    fn candidates(
        &self,
        rule: Rule,
        addresses: &[String],
        display_name: Option<&str>,
    ) -> Vec<usize> {
        let get = |map: &HashMap<String, Vec<usize>>, k: &str| -> Vec<usize> {
            map.get(&key(k)).cloned().unwrap_or_default()
        };
        let primary = addresses.first().map(String::as_str).unwrap_or("");
        let mut found = match rule {
            Rule::PrimaryAddress if !primary.is_empty() => get(&self.primary, primary),
            Rule::Alias => addresses.iter().flat_map(|a| get(&self.any, a)).collect(),
            Rule::LocalPart if !primary.is_empty() => get(&self.local, local_part(primary)),
            Rule::DisplayName => match display_name.map(str::trim) {
                Some(n) if !n.is_empty() => get(&self.name, n),
                _ => Vec::new(),
            },
            _ => Vec::new(),
        };
        found.sort_unstable();
        found.dedup();
        found
    }

    /// Applies the rules to one source mailbox (its addresses, primary first, and display
    /// name); targets already `taken` by another entry are no candidates.
    pub fn decide(
        &self,
        addresses: &[String],
        display_name: Option<&str>,
        taken: &HashSet<MailboxId>,
    ) -> Decision {
        let rules = [
            Rule::PrimaryAddress,
            Rule::Alias,
            Rule::LocalPart,
            Rule::DisplayName,
        ];
        for rule in rules {
            let found: Vec<&DirEntry> = self
                .candidates(rule, addresses, display_name)
                .into_iter()
                .map(|i| &self.targets[i])
                .filter(|t| !taken.contains(&t.id))
                .collect();
            debug_assert!(
                found
                    .iter()
                    .all(|t| rule.applies(t, addresses, display_name))
            );
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
}

/// Applies the rules to one source mailbox against these targets (see [`TargetIndex`] to
/// match many).
pub fn auto_match(
    addresses: &[String],
    display_name: Option<&str>,
    targets: &[DirEntry],
    taken: &HashSet<MailboxId>,
) -> Decision {
    TargetIndex::new(targets).decide(addresses, display_name, taken)
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

    /// The old scan of every target, kept as the reference the index must agree with.
    fn by_scan(
        addresses: &[String],
        display_name: Option<&str>,
        targets: &[DirEntry],
        taken: &HashSet<MailboxId>,
    ) -> Decision {
        let free: Vec<&DirEntry> = targets.iter().filter(|t| !taken.contains(&t.id)).collect();
        for rule in [
            Rule::PrimaryAddress,
            Rule::Alias,
            Rule::LocalPart,
            Rule::DisplayName,
        ] {
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
                        candidates: many.iter().map(|t| t.addresses[0].clone()).collect(),
                    };
                }
            }
        }
        Decision::NoCandidate
    }

    #[test]
    fn the_index_decides_exactly_as_a_scan_of_every_target() {
        // Small alphabets, so that collisions (and thus ambiguity) are frequent.
        let locals = ["al", "AL", "bo", "cy", "al.x"];
        let domains = ["old.example", "NEW.example", "x.example"];
        let names = ["Al", " al ", "Bo", ""];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for round in 0..300 {
            let address = |next: &mut dyn FnMut(usize) -> usize| {
                format!(
                    "{}@{}",
                    locals[next(locals.len())],
                    domains[next(domains.len())]
                )
            };
            let targets: Vec<DirEntry> = (0..next(8))
                .map(|i| {
                    let n = 1 + next(3);
                    target(
                        &format!("t{i}"),
                        &(0..n)
                            .map(|_| address(&mut next))
                            .collect::<Vec<_>>()
                            .iter()
                            .map(String::as_str)
                            .collect::<Vec<_>>(),
                        names[next(names.len())],
                    )
                })
                .collect();
            let source: Vec<String> = (0..next(3)).map(|_| address(&mut next)).collect();
            let name = Some(names[next(names.len())]);
            let taken: HashSet<MailboxId> = targets
                .iter()
                .filter(|_| next(4) == 0)
                .map(|t| t.id.clone())
                .collect();
            assert_eq!(
                auto_match(&source, name, &targets, &taken),
                by_scan(&source, name, &targets, &taken),
                "round {round}: {source:?} {name:?} against {targets:#?}"
            );
        }
    }
}
