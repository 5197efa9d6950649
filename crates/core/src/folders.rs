//! Folder mapping: which source folders a job migrates, and what each is called on the target.
//!
//! Two IMAP servers rarely spell one folder tree the same way. A Courier-style source lists
//! `INBOX.Sent` with the delimiter '.' under the personal namespace prefix `INBOX.`; a Dovecot
//! target wants `Sent` with '/'. Names travel in modified UTF-7 (`Junk/&ANw-berpr&APw-ft`). One
//! server marks its sent folder `\Sent` (RFC 6154), another just calls it `Sent Items`. None of
//! that should reach the engine, the reports or the admin's job file, so this module works in one
//! vocabulary, the [`FolderPath`]: Unicode levels joined by '/', without namespace prefix, INBOX
//! always spelled `INBOX`.
//!
//! [`FolderTree::from_list`] turns one server's LIST answer into folders with such paths, and
//! [`FolderTree::raw_name_for`] turns a path back into that server's spelling. [`plan_folders`]
//! decides, for every source folder in scope, the target folder it goes to. The target path of a
//! source folder is chosen by the first rule that applies:
//!
//! 1. INBOX goes to INBOX.
//! 2. An explicit `folder_map` entry for the folder or its closest mapped ancestor: with
//!    `"Old Archive" = "Archive/Old"`, `Old Archive/2019` goes to `Archive/Old/2019`.
//! 3. A special use the target has too, again for the folder or its closest such ancestor: a
//!    `\Sent` source `Sent/2019` goes to `Sent Items/2019` when the target's `\Sent` folder is
//!    `Sent Items`. Only real folders take part (sent, drafts, trash, junk, archive); `\All` and
//!    `\Flagged` are usually virtual views (Gmail's All Mail, Dovecot's virtual plugin) that no
//!    message can be appended to.
//! 4. Otherwise the same path.
//!
//! Everything here is pure, so each of these rules is pinned by a unit test with exact server
//! names rather than by a server in a lab.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use crate::mutf7;

const INBOX: &str = "INBOX";
const SEPARATOR: char = '/';
/// Stands in for a character a level cannot hold: '/' in a [`FolderPath`] level, or the target
/// server's delimiter in a target level.
const REPLACEMENT: char = '_';

/// A folder name as the user sees it: Unicode, hierarchy levels joined by '/', no namespace
/// prefix. INBOX is always `INBOX`.
///
/// Levels are never empty and never contain '/'. A server level that contains '/' (possible on a
/// server whose delimiter is '.') has it replaced by '_' so the folder does not gain a level;
/// the server's own name stays available as [`Folder::raw_name`].
///
/// Paths order by their text, so a folder orders before its descendants.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FolderPath(String);

impl FolderPath {
    /// Builds a path from its levels, outermost first.
    ///
    /// Empty levels are skipped, '/' inside a level becomes '_', and a first level that is
    /// INBOX in any case becomes `INBOX` (RFC 3501 §5.1: INBOX is case-insensitive). Without a
    /// non-empty level the result is the empty path, which names no folder.
    pub fn new<I, S>(levels: I) -> FolderPath
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut path = String::new();
        for level in levels {
            let level = level.as_ref();
            if level.is_empty() {
                continue;
            }
            if path.is_empty() {
                if level.eq_ignore_ascii_case(INBOX) {
                    path.push_str(INBOX);
                    continue;
                }
            } else {
                path.push(SEPARATOR);
            }
            path.extend(level.chars().map(|c| match c {
                SEPARATOR => REPLACEMENT,
                c => c,
            }));
        }
        FolderPath(path)
    }

    /// Reads a '/'-separated path as an admin writes it in the job file (`"Archive/Old"`).
    pub fn parse(path: &str) -> FolderPath {
        FolderPath::new(path.split(SEPARATOR))
    }

    /// The INBOX.
    pub fn inbox() -> FolderPath {
        FolderPath(INBOX.to_owned())
    }

    /// The path as text, levels joined by '/'.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The levels, outermost first.
    pub fn levels(&self) -> impl Iterator<Item = &str> {
        self.0.split(SEPARATOR).filter(|level| !level.is_empty())
    }

    /// Whether this is the INBOX itself (not one of its children).
    pub fn is_inbox(&self) -> bool {
        self.0 == INBOX
    }

    /// The folder one level up, if there is one.
    pub fn parent(&self) -> Option<FolderPath> {
        self.0
            .rsplit_once(SEPARATOR)
            .map(|(parent, _)| FolderPath(parent.to_owned()))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the first level is INBOX: INBOX itself or one of its descendants.
    fn is_under_inbox(&self) -> bool {
        self.0
            .strip_prefix(INBOX)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(SEPARATOR))
    }

    /// What follows `ancestor` in this path: `Some("")` for the folder itself, `Some("a/b")`
    /// for a descendant, `None` when `ancestor` is neither.
    fn relative_to(&self, ancestor: &FolderPath) -> Option<&str> {
        let rest = self.0.strip_prefix(&ancestor.0)?;
        if rest.is_empty() {
            Some(rest)
        } else {
            rest.strip_prefix(SEPARATOR)
        }
    }

    /// This path with the '/'-separated `relative` path appended.
    fn join(&self, relative: &str) -> FolderPath {
        FolderPath::new(self.levels().chain(relative.split(SEPARATOR)))
    }

    /// This folder and its ancestors, innermost first.
    fn self_and_ancestors(&self) -> impl Iterator<Item = FolderPath> {
        std::iter::successors(Some(self.clone()), FolderPath::parent)
    }

    /// Orders a tree for creation: INBOX and its descendants first, then level by level, so a
    /// parent always comes before its children.
    fn creation_order(&self, other: &FolderPath) -> std::cmp::Ordering {
        other
            .is_under_inbox()
            .cmp(&self.is_under_inbox())
            .then_with(|| self.levels().cmp(other.levels()))
    }
}

impl fmt::Display for FolderPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a folder is for, from its special-use attribute (RFC 6154).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SpecialUse {
    Sent,
    Drafts,
    Trash,
    Junk,
    Archive,
    All,
    Flagged,
}

impl SpecialUse {
    /// Reads a LIST attribute such as `\Sent`, in any case. Gmail's pre-RFC 6154 XLIST names
    /// (`\Spam`, `\AllMail`, `\Starred`) are understood too, since some servers still send them.
    pub fn from_attribute(attribute: &str) -> Option<SpecialUse> {
        const ATTRIBUTES: [(&str, SpecialUse); 10] = [
            ("Sent", SpecialUse::Sent),
            ("Drafts", SpecialUse::Drafts),
            ("Trash", SpecialUse::Trash),
            ("Junk", SpecialUse::Junk),
            ("Archive", SpecialUse::Archive),
            ("All", SpecialUse::All),
            ("Flagged", SpecialUse::Flagged),
            ("Spam", SpecialUse::Junk),
            ("AllMail", SpecialUse::All),
            ("Starred", SpecialUse::Flagged),
        ];
        let name = attribute.strip_prefix('\\')?;
        ATTRIBUTES
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(name))
            .map(|&(_, special_use)| special_use)
    }

    /// The special use of a top-level folder called `name` on a server that marks none
    /// (Exchange's IMAP, older Courier and Cyrus setups).
    fn from_well_known_name(name: &str) -> Option<SpecialUse> {
        const NAMES: [(&str, SpecialUse); 12] = [
            ("Sent", SpecialUse::Sent),
            ("Sent Items", SpecialUse::Sent),
            ("Sent Messages", SpecialUse::Sent),
            ("Drafts", SpecialUse::Drafts),
            ("Trash", SpecialUse::Trash),
            ("Deleted Items", SpecialUse::Trash),
            ("Deleted Messages", SpecialUse::Trash),
            ("Junk", SpecialUse::Junk),
            ("Junk E-mail", SpecialUse::Junk),
            // Exchange 2013 and later, and Microsoft 365, dropped the hyphen.
            ("Junk Email", SpecialUse::Junk),
            ("Spam", SpecialUse::Junk),
            ("Archive", SpecialUse::Archive),
        ];
        NAMES
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(name))
            .map(|&(_, special_use)| special_use)
    }

    /// Whether messages can be appended to such a folder, so that mapping onto it makes sense.
    fn is_real_folder(self) -> bool {
        !matches!(self, SpecialUse::All | SpecialUse::Flagged)
    }
}

/// One mailbox as a server LISTs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFolder {
    /// Exactly as LISTed: modified UTF-7, namespace prefix included.
    pub raw_name: String,
    /// The hierarchy delimiter; `None` for a flat server (NIL).
    pub delimiter: Option<char>,
    /// LIST attributes with their backslash, e.g. `\Noselect`, `\HasChildren`, `\Sent`.
    pub attributes: Vec<String>,
    /// Whether LSUB (or LIST's `\Subscribed`) reported it.
    pub subscribed: bool,
}

/// The personal namespace from NAMESPACE (RFC 2342): `("INBOX.", '.')` on Courier and Cyrus
/// without altnamespace, `("", '/')` on a default Dovecot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub prefix: String,
    pub delimiter: Option<char>,
}

/// One folder of a [`FolderTree`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folder {
    pub path: FolderPath,
    /// The server's name for it, exactly as LISTed; use this to SELECT it.
    pub raw_name: String,
    /// False for `\Noselect` and `\NonExistent`: a node of the hierarchy holding no messages.
    pub selectable: bool,
    /// From its attribute or, on a server that marks no folder at all, from its name.
    pub special_use: Option<SpecialUse>,
    pub subscribed: bool,
}

/// One server's folders, by [`FolderPath`], with what it takes to spell new names its way.
#[derive(Debug, Clone)]
pub struct FolderTree {
    prefix: String,
    delimiter: char,
    folders: Vec<Folder>,
    /// Top-level names this server refuses to create, and the name used instead (a server
    /// profile's: Exchange Online reserves `Files`).
    reserved: Vec<(String, String)>,
}

impl FolderTree {
    /// Builds the tree from the personal namespace and the LIST answer.
    ///
    /// Each name loses the namespace prefix (with prefix `INBOX.`, `INBOX.Sent` is `Sent`, and
    /// `INBOX` stays `INBOX`), is split on its delimiter, and has each level decoded from
    /// modified UTF-7; a level that does not decode is kept as the server sent it. A name outside
    /// the prefix keeps all its levels. A flat server (no delimiter) is read as if it used '/'.
    /// The namespace's root (`INBOX.` itself, or `Mail` for the prefix `Mail/`) is not a folder
    /// and is left out; so is a repeated name, whose subscription counts for the first.
    ///
    /// When no folder carries a special-use attribute, top-level folders with well-known names
    /// (`Sent Items`, `Deleted Items`, `Junk E-mail`, ...) are taken to have that use. This
    /// happens only then: a server that marks some folders is trusted to mark all of them.
    pub fn from_list(namespace: &Namespace, folders: Vec<ServerFolder>) -> FolderTree {
        let delimiter = namespace
            .delimiter
            .or_else(|| folders.iter().find_map(|folder| folder.delimiter))
            .unwrap_or(SEPARATOR);
        let marks_special_use = folders.iter().any(|folder| {
            folder
                .attributes
                .iter()
                .any(|attribute| SpecialUse::from_attribute(attribute).is_some())
        });
        let mut tree = FolderTree {
            prefix: namespace.prefix.clone(),
            delimiter,
            folders: Vec::with_capacity(folders.len()),
            reserved: Vec::new(),
        };
        let mut seen: HashMap<String, usize> = HashMap::new();
        for listed in folders {
            if let Some(&index) = seen.get(raw_name_key(&listed.raw_name)) {
                tree.folders[index].subscribed |= listed.subscribed;
                continue;
            }
            let Some(path) = tree.path_of(&listed.raw_name, listed.delimiter.unwrap_or(delimiter))
            else {
                continue;
            };
            let has_attribute = |wanted: &str| {
                listed
                    .attributes
                    .iter()
                    .any(|attribute| attribute.eq_ignore_ascii_case(wanted))
            };
            let selectable = !has_attribute("\\Noselect") && !has_attribute("\\NonExistent");
            let special_use = listed
                .attributes
                .iter()
                .find_map(|attribute| SpecialUse::from_attribute(attribute))
                .or_else(|| {
                    let top_level = path.parent().is_none();
                    (!marks_special_use && top_level)
                        .then(|| SpecialUse::from_well_known_name(path.as_str()))
                        .flatten()
                });
            seen.insert(
                raw_name_key(&listed.raw_name).to_owned(),
                tree.folders.len(),
            );
            tree.folders.push(Folder {
                path,
                raw_name: listed.raw_name,
                selectable,
                special_use,
                subscribed: listed.subscribed,
            });
        }
        tree
    }

    /// The folders, in the server's LIST order.
    pub fn folders(&self) -> impl Iterator<Item = &Folder> {
        self.folders.iter()
    }

    /// The folder for a special use, a selectable one when there is a choice.
    pub fn by_special_use(&self, special_use: SpecialUse) -> Option<&Folder> {
        let mut candidates = self
            .folders
            .iter()
            .filter(|folder| folder.special_use == Some(special_use));
        let first = candidates.clone().next();
        candidates.find(|folder| folder.selectable).or(first)
    }

    /// The folder at `path`, the first one listed if several share it.
    pub fn get(&self, path: &FolderPath) -> Option<&Folder> {
        self.folders.iter().find(|folder| folder.path == *path)
    }

    /// The server's name for `path`, which need not exist yet.
    ///
    /// A listed folder keeps the exact name the server gave. Otherwise the name is the namespace
    /// prefix followed by the levels, each encoded in modified UTF-7, joined by the delimiter:
    /// with prefix `INBOX.` and delimiter '.', `Sent` is `INBOX.Sent` and `INBOX/Sub` is
    /// `INBOX.Sub` (the prefix already is INBOX's hierarchy), and INBOX is always `INBOX`.
    ///
    /// A level holding the delimiter itself (`a.b` on a '.' server) would silently become two
    /// levels, so the delimiter in a level is replaced by '_': the folder keeps its place in the
    /// tree and its name stays readable (`a_b`).
    pub fn raw_name_for(&self, path: &FolderPath) -> String {
        if let Some(folder) = self.get(path) {
            return folder.raw_name.clone();
        }
        if path.is_inbox() {
            return INBOX.to_owned();
        }
        let skip = usize::from(self.prefix_is_inbox() && path.is_under_inbox());
        let mut raw = self.prefix.clone();
        for (index, level) in path.levels().skip(skip).enumerate() {
            if index > 0 {
                raw.push(self.delimiter);
            }
            raw.push_str(&mutf7::encode(&self.storable_level(level)));
        }
        raw
    }

    /// The path of a listed name, or `None` for the namespace's root.
    fn path_of(&self, raw_name: &str, delimiter: char) -> Option<FolderPath> {
        if raw_name.eq_ignore_ascii_case(INBOX) {
            return Some(FolderPath::inbox());
        }
        let prefix_root = self.prefix.strip_suffix(delimiter).unwrap_or(&self.prefix);
        if !self.prefix.is_empty() && prefix_matches(raw_name, prefix_root) == Some("") {
            return None;
        }
        let relative = prefix_matches(raw_name, &self.prefix).unwrap_or(raw_name);
        let path = FolderPath::new(
            relative
                .split(delimiter)
                .map(|level| mutf7::decode(level).unwrap_or_else(|_| level.to_owned())),
        );
        (!path.is_empty()).then_some(path)
    }

    /// Whether the prefix is INBOX's own hierarchy (`INBOX.`), as on Courier and classic Cyrus.
    fn prefix_is_inbox(&self) -> bool {
        let root = self
            .prefix
            .strip_suffix(self.delimiter)
            .unwrap_or(&self.prefix);
        root.eq_ignore_ascii_case(INBOX)
    }

    fn storable_level(&self, level: &str) -> String {
        level.replace(self.delimiter, &REPLACEMENT.to_string())
    }

    /// `path` with every level made storable on this server, so that the path the plan shows
    /// is the one the server will list back.
    fn storable_path(&self, path: &FolderPath) -> FolderPath {
        FolderPath::new(path.levels().enumerate().map(|(i, level)| {
            let reserved = (i == 0)
                .then(|| {
                    self.reserved
                        .iter()
                        .find(|(name, _)| name.eq_ignore_ascii_case(level))
                })
                .flatten();
            match reserved {
                Some((_, instead)) => self.storable_level(instead),
                None => self.storable_level(level),
            }
        }))
    }

    /// Says which top-level names this server reserves (refuses to create) and the name a
    /// folder of that name gets instead, with its subfolders: `("Files", "Files (migrated)")`.
    pub fn reserve(&mut self, names: &[(&str, &str)]) {
        self.reserved = names
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
    }

    /// The listed folder with this server name.
    fn by_raw_name(&self, raw_name: &str) -> Option<&Folder> {
        let key = raw_name_key(raw_name);
        self.folders
            .iter()
            .find(|folder| raw_name_key(&folder.raw_name) == key)
    }
}

/// A server name for comparisons: INBOX in any case is the one INBOX.
fn raw_name_key(raw_name: &str) -> &str {
    if raw_name.eq_ignore_ascii_case(INBOX) {
        INBOX
    } else {
        raw_name
    }
}

/// `raw_name` without `prefix` if it starts with it. An INBOX at the start of the prefix
/// matches in any case, like INBOX itself; the rest must match exactly.
fn prefix_matches<'a>(raw_name: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = raw_name.get(prefix.len()..)?;
    // Bytes, not str slices: the INBOX length need not fall on a character boundary of a name.
    let (head, prefix) = (&raw_name.as_bytes()[..prefix.len()], prefix.as_bytes());
    let inbox_len = if prefix
        .get(..INBOX.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(INBOX.as_bytes()))
    {
        INBOX.len()
    } else {
        0
    };
    let (head_inbox, head_rest) = head.split_at(inbox_len);
    let (prefix_inbox, prefix_rest) = prefix.split_at(inbox_len);
    (head_inbox.eq_ignore_ascii_case(prefix_inbox) && head_rest == prefix_rest).then_some(rest)
}

/// The job's folder settings, as the validated job hands them over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderRules {
    /// Globs over source paths; a folder must match one. Empty means no folder is in scope.
    pub include: Vec<String>,
    /// Globs over source paths; a folder matching one is out of scope.
    pub exclude: Vec<String>,
    /// Explicit renames, source path to target path, both '/'-separated.
    pub folder_map: BTreeMap<String, String>,
}

impl Default for FolderRules {
    /// The job file's defaults: every folder, nothing excluded, nothing renamed.
    fn default() -> Self {
        FolderRules {
            include: vec!["*".to_owned()],
            exclude: Vec::new(),
            folder_map: BTreeMap::new(),
        }
    }
}

impl FolderRules {
    /// Whether the source folder at `path` is migrated: it matches an include pattern and no
    /// exclude pattern.
    ///
    /// Patterns are globs over the whole '/'-separated path: `*` matches any run of characters,
    /// '/' included, so `Lists/*` covers every level below `Lists`; `?` matches one character;
    /// there is no escape. Matching is case-sensitive, except that the letters of a leading
    /// INBOX level compare in any case, as INBOX does on every server (`inbox/*` matches
    /// `INBOX/Newsletters`).
    ///
    /// A pattern that matches a folder also matches all its descendants, because an admin who
    /// excludes `Junk` means the junk folder with everything filed under it: `Junk` excludes
    /// `Junk/Überprüft` (but not `Junkyard`), and including `Archive` includes `Archive/2002`.
    pub fn in_scope(&self, path: &FolderPath) -> bool {
        let matched = |patterns: &[String]| {
            patterns.iter().any(|pattern| {
                path.self_and_ancestors()
                    .any(|folder| glob_matches(pattern, &folder))
            })
        };
        matched(&self.include) && !matched(&self.exclude)
    }

    /// The `folder_map` target for `path`: the entry for the folder itself or, failing that,
    /// for its closest ancestor, with the rest of the path appended. Entries whose key or value
    /// names no folder are ignored; validating the job file is where they get reported.
    fn mapped(&self, path: &FolderPath) -> Option<FolderPath> {
        self.folder_map
            .iter()
            .map(|(from, to)| (FolderPath::parse(from), FolderPath::parse(to)))
            .filter(|(from, to)| !from.is_empty() && !to.is_empty())
            .filter_map(|(from, to)| {
                let relative = path.relative_to(&from)?;
                Some((from.levels().count(), to.join(relative)))
            })
            .max_by_key(|(depth, _)| *depth)
            .map(|(_, target)| target)
    }
}

/// Matches a glob against a whole path; see [`FolderRules::in_scope`].
fn glob_matches(pattern: &str, path: &FolderPath) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = path.as_str().chars().collect();
    let case_blind = if path.is_under_inbox() {
        INBOX.len()
    } else {
        0
    };
    let same = |p: char, t: usize| {
        p == '?' || p == text[t] || (t < case_blind && p.eq_ignore_ascii_case(&text[t]))
    };
    // Greedy matching that backtracks only to the last '*', which is enough for '*' and '?'.
    let (mut p, mut t) = (0, 0);
    let mut last_star: Option<(usize, usize)> = None;
    while t < text.len() {
        if pattern.get(p) == Some(&'*') {
            last_star = Some((p, t));
            p += 1;
        } else if pattern.get(p).is_some_and(|&c| same(c, t)) {
            p += 1;
            t += 1;
        } else if let Some((star, star_text)) = last_star {
            p = star + 1;
            t = star_text + 1;
            last_star = Some((star, t));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// One folder to have on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderPlanItem {
    /// The source folder whose messages go here, or `None` for a parent the target needs for
    /// its tree that is not itself an in-scope source folder (an out-of-scope or unlisted
    /// source parent, or a new parent such as `Archive` for a `folder_map` value
    /// `Archive/Old`). Such an item has nothing to copy, and its subscription is not the job's
    /// business.
    pub source: Option<Folder>,
    /// The target path, with the target's delimiter already replaced in its levels.
    pub target_path: FolderPath,
    /// The target server's name for it: CREATE, SELECT and APPEND with this.
    pub target_raw_name: String,
    /// Whether to CREATE it: the target lacks it (or has it only as `\Noselect` while messages
    /// are to be copied into it), and no earlier item of the plan creates it already.
    pub create: bool,
    /// Whether the target folder should be subscribed: the source folder is, or any other
    /// source folder merging into the same target folder is.
    pub subscribe: bool,
    /// Whether the source folder holds messages to copy; false for `\Noselect` source folders
    /// (created on the target all the same, so the tree exists) and for parent-only items.
    pub selectable: bool,
}

/// Plans the target folder tree: one item per in-scope source folder, plus one per missing
/// target parent, parents before children (INBOX's subtree first).
///
/// Scope is decided on source paths, before any mapping (see [`FolderRules::in_scope`]); the
/// target path follows the rules in the module documentation. `\Noselect` source folders in
/// scope are planned too, since every source folder in scope exists on the target, empty
/// parents included.
///
/// Two source folders may land on one target path (two `folder_map` keys with one value, or
/// `Sent` and `Sent Items` both being sent folders on an Exchange source). Both items stay in
/// the plan, so both folders' messages are copied and merge in that target folder; only the
/// first creates it, and it is subscribed if either source folder is.
pub fn plan_folders(
    source: &FolderTree,
    target: &FolderTree,
    rules: &FolderRules,
) -> Vec<FolderPlanItem> {
    let mut items: Vec<FolderPlanItem> = source
        .folders()
        .filter(|folder| rules.in_scope(&folder.path))
        .map(|folder| {
            let target_path = target.storable_path(&target_path_for(folder, source, target, rules));
            FolderPlanItem {
                source: Some(folder.clone()),
                target_raw_name: target.raw_name_for(&target_path),
                target_path,
                create: false,
                subscribe: folder.subscribed,
                selectable: folder.selectable,
            }
        })
        .collect();

    let planned: HashSet<&FolderPath> = items.iter().map(|item| &item.target_path).collect();
    let parents: BTreeSet<FolderPath> = items
        .iter()
        .flat_map(|item| item.target_path.self_and_ancestors().skip(1))
        .filter(|parent| !parent.is_inbox() && !planned.contains(parent))
        .collect();
    items.extend(parents.into_iter().map(|path| FolderPlanItem {
        source: None,
        target_raw_name: target.raw_name_for(&path),
        target_path: path,
        create: false,
        subscribe: false,
        selectable: false,
    }));

    // A stable sort keeps merging source folders in LIST order, so "first" is predictable.
    items.sort_by(|a, b| a.target_path.creation_order(&b.target_path));

    let subscribed: HashSet<String> = items
        .iter()
        .filter(|item| item.subscribe)
        .map(|item| raw_name_key(&item.target_raw_name).to_owned())
        .collect();
    let mut created: HashSet<String> = HashSet::new();
    for item in &mut items {
        let key = raw_name_key(&item.target_raw_name);
        item.subscribe = item.source.is_some() && subscribed.contains(key);
        // Every server has an INBOX, listed or not.
        let needed = !item.target_path.is_inbox()
            && match target.by_raw_name(&item.target_raw_name) {
                None => true,
                Some(existing) => item.selectable && !existing.selectable,
            };
        item.create = needed && created.insert(key.to_owned());
    }
    items
}

/// The target path of one source folder, by the rules in the module documentation.
fn target_path_for(
    folder: &Folder,
    source: &FolderTree,
    target: &FolderTree,
    rules: &FolderRules,
) -> FolderPath {
    if folder.path.is_inbox() {
        return FolderPath::inbox();
    }
    rules
        .mapped(&folder.path)
        .or_else(|| special_use_target(&folder.path, source, target))
        .unwrap_or_else(|| folder.path.clone())
}

/// Where `path` goes because it, or its closest ancestor with a usable special use, is a folder
/// whose use the target also has. A target folder at the same path with the same use wins over
/// any other, so `Sent` stays `Sent` on a target that has both `Sent` and `Sent Items`.
fn special_use_target(
    path: &FolderPath,
    source: &FolderTree,
    target: &FolderTree,
) -> Option<FolderPath> {
    path.self_and_ancestors().find_map(|ancestor| {
        let special_use = source
            .get(&ancestor)?
            .special_use
            .filter(|special_use| special_use.is_real_folder())?;
        let target_folder = target
            .get(&ancestor)
            .filter(|folder| folder.special_use == Some(special_use))
            .or_else(|| target.by_special_use(special_use))?;
        Some(target_folder.path.join(path.relative_to(&ancestor)?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(raw_name: &str, delimiter: char, attributes: &[&str]) -> ServerFolder {
        ServerFolder {
            raw_name: raw_name.to_owned(),
            delimiter: Some(delimiter),
            attributes: attributes.iter().map(|a| (*a).to_owned()).collect(),
            subscribed: true,
        }
    }

    /// A default Dovecot: no prefix, '/'.
    fn dovecot(folders: &[(&str, &[&str])]) -> FolderTree {
        let namespace = Namespace {
            prefix: String::new(),
            delimiter: Some('/'),
        };
        let folders = folders
            .iter()
            .map(|(name, attributes)| listed(name, '/', attributes))
            .collect();
        FolderTree::from_list(&namespace, folders)
    }

    /// Courier, or Cyrus without altnamespace: everything under "INBOX.", '.'.
    fn courier(folders: &[(&str, &[&str])]) -> FolderTree {
        let namespace = Namespace {
            prefix: "INBOX.".to_owned(),
            delimiter: Some('.'),
        };
        let folders = folders
            .iter()
            .map(|(name, attributes)| listed(name, '.', attributes))
            .collect();
        FolderTree::from_list(&namespace, folders)
    }

    fn path(text: &str) -> FolderPath {
        FolderPath::parse(text)
    }

    fn paths(tree: &FolderTree) -> Vec<&str> {
        tree.folders().map(|folder| folder.path.as_str()).collect()
    }

    /// (target path, target raw name, create, source path) per item, in plan order.
    fn summary(plan: &[FolderPlanItem]) -> Vec<(&str, &str, bool, Option<&str>)> {
        plan.iter()
            .map(|item| {
                (
                    item.target_path.as_str(),
                    item.target_raw_name.as_str(),
                    item.create,
                    item.source.as_ref().map(|folder| folder.path.as_str()),
                )
            })
            .collect()
    }

    fn rules(include: &[&str], exclude: &[&str], folder_map: &[(&str, &str)]) -> FolderRules {
        FolderRules {
            include: include.iter().map(|p| (*p).to_owned()).collect(),
            exclude: exclude.iter().map(|p| (*p).to_owned()).collect(),
            folder_map: folder_map
                .iter()
                .map(|(from, to)| ((*from).to_owned(), (*to).to_owned()))
                .collect(),
        }
    }

    /// The shared corpus's tree as a default Dovecot lists it.
    fn corpus_source() -> FolderTree {
        dovecot(&[
            ("INBOX", &[]),
            ("INBOX/Newsletters", &[]),
            ("Archive", &["\\Noselect", "\\HasChildren"]),
            ("Archive/2002", &[]),
            ("Junk", &["\\Junk", "\\HasChildren"]),
            ("Junk/&ANw-berpr&APw-ft", &[]),
            ("Lists", &["\\Noselect"]),
            ("Lists/usrp-users", &["\\Noselect"]),
            ("Lists/usrp-users/2019", &[]),
            ("Quirks", &["\\Noselect"]),
            ("Quirks/MIME samples", &[]),
            ("Sent", &["\\Sent"]),
        ])
    }

    #[test]
    fn a_path_is_built_from_levels_and_shown_with_slashes() {
        let p = FolderPath::new(["Junk", "Überprüft"]);
        assert_eq!(p.as_str(), "Junk/Überprüft");
        assert_eq!(p.to_string(), "Junk/Überprüft");
        assert_eq!(p.levels().collect::<Vec<_>>(), ["Junk", "Überprüft"]);
        assert_eq!(p.parent(), Some(path("Junk")));
        assert_eq!(path("Junk").parent(), None);
    }

    #[test]
    fn a_path_spells_inbox_one_way_but_only_as_its_first_level() {
        assert_eq!(FolderPath::new(["inbox", "Sub"]).as_str(), "INBOX/Sub");
        assert!(FolderPath::new(["Inbox"]).is_inbox());
        assert!(!path("INBOX/Sub").is_inbox());
        assert_eq!(path("Archive/inbox").as_str(), "Archive/inbox");
    }

    #[test]
    fn a_level_never_holds_a_slash_and_empty_levels_vanish() {
        assert_eq!(
            FolderPath::new(["Projects/2024", "Q1"]).as_str(),
            "Projects_2024/Q1"
        );
        assert_eq!(path("/Archive//Old/").as_str(), "Archive/Old");
        assert_eq!(FolderPath::new([""; 0]).as_str(), "");
    }

    #[test]
    fn special_use_attributes_are_read_in_any_case() {
        assert_eq!(SpecialUse::from_attribute("\\Sent"), Some(SpecialUse::Sent));
        assert_eq!(SpecialUse::from_attribute("\\JUNK"), Some(SpecialUse::Junk));
        assert_eq!(
            SpecialUse::from_attribute("\\flagged"),
            Some(SpecialUse::Flagged)
        );
        assert_eq!(SpecialUse::from_attribute("\\Spam"), Some(SpecialUse::Junk));
        assert_eq!(
            SpecialUse::from_attribute("\\AllMail"),
            Some(SpecialUse::All)
        );
        assert_eq!(SpecialUse::from_attribute("\\HasChildren"), None);
        assert_eq!(SpecialUse::from_attribute("Sent"), None);
    }

    #[test]
    fn courier_names_lose_the_inbox_prefix_and_use_slashes() {
        let tree = courier(&[
            ("INBOX", &[]),
            ("INBOX.Sent", &["\\Sent"]),
            ("INBOX.Archive", &["\\HasChildren"]),
            ("INBOX.Archive.2019", &[]),
            ("INBOX.Junk.&ANw-berpr&APw-ft", &[]),
        ]);
        assert_eq!(
            paths(&tree),
            ["INBOX", "Sent", "Archive", "Archive/2019", "Junk/Überprüft"]
        );
        let archive = tree.get(&path("Archive/2019")).expect("listed");
        assert_eq!(archive.raw_name, "INBOX.Archive.2019");
    }

    #[test]
    fn names_are_decoded_per_level() {
        let tree = dovecot(&[
            ("Junk/&ANw-berpr&APw-ft", &[]),
            ("&ZeVnLIqe-/R&AOk-unions", &[]),
        ]);
        assert_eq!(paths(&tree), ["Junk/Überprüft", "日本語/Réunions"]);
    }

    #[test]
    fn a_name_that_is_not_modified_utf7_is_kept_as_listed() {
        // "R&D" from a server that does not encode '&'; raw UTF-8 from one that ignores RFC 3501.
        let tree = dovecot(&[("R&D/Überprüft", &[])]);
        let folder = tree.get(&path("R&D/Überprüft")).expect("listed");
        assert_eq!(folder.raw_name, "R&D/Überprüft");
        assert_eq!(tree.raw_name_for(&folder.path), "R&D/Überprüft");
        // A server that does follow the RFC gets the proper encoding for the same path.
        assert_eq!(
            dovecot(&[]).raw_name_for(&folder.path),
            "R&-D/&ANw-berpr&APw-ft"
        );
    }

    #[test]
    fn inbox_is_recognised_in_any_case() {
        let tree = dovecot(&[("inbox", &[]), ("Inbox/Sub", &[])]);
        assert_eq!(paths(&tree), ["INBOX", "INBOX/Sub"]);
        assert_eq!(tree.raw_name_for(&FolderPath::inbox()), "inbox");
        let courier_tree = courier(&[("Inbox", &[]), ("inbox.Sent", &[]), ("aaaaÜber", &[])]);
        assert_eq!(paths(&courier_tree), ["INBOX", "Sent", "aaaaÜber"]);
    }

    #[test]
    fn list_attributes_give_selectability_special_use_and_subscription() {
        let mut folders = vec![
            listed("Archive", '/', &["\\NoSelect", "\\HasChildren"]),
            listed("Gone", '/', &["\\NonExistent"]),
            listed("Sent", '/', &["\\HasNoChildren", "\\Sent"]),
        ];
        folders[2].subscribed = false;
        let namespace = Namespace {
            prefix: String::new(),
            delimiter: Some('/'),
        };
        let tree = FolderTree::from_list(&namespace, folders);
        let summary: Vec<_> = tree
            .folders()
            .map(|f| (f.path.as_str(), f.selectable, f.special_use, f.subscribed))
            .collect();
        assert_eq!(
            summary,
            [
                ("Archive", false, None, true),
                ("Gone", false, None, true),
                ("Sent", true, Some(SpecialUse::Sent), false),
            ]
        );
        assert_eq!(
            tree.by_special_use(SpecialUse::Sent)
                .map(|f| f.raw_name.as_str()),
            Some("Sent")
        );
        assert_eq!(tree.by_special_use(SpecialUse::Trash), None);
    }

    #[test]
    fn the_namespace_root_is_not_a_folder() {
        let namespace = Namespace {
            prefix: "Mail/".to_owned(),
            delimiter: Some('/'),
        };
        let tree = FolderTree::from_list(
            &namespace,
            vec![
                listed("INBOX", '/', &[]),
                listed("Mail", '/', &["\\Noselect"]),
                listed("Mail/", '/', &["\\Noselect"]),
                listed("Mail/Sent", '/', &[]),
            ],
        );
        assert_eq!(paths(&tree), ["INBOX", "Sent"]);
        assert_eq!(tree.raw_name_for(&path("Drafts")), "Mail/Drafts");
    }

    #[test]
    fn a_repeated_name_is_one_folder_subscribed_if_either_was() {
        let mut second = listed("Sent", '/', &[]);
        second.subscribed = true;
        let mut first = listed("Sent", '/', &[]);
        first.subscribed = false;
        let namespace = Namespace {
            prefix: String::new(),
            delimiter: Some('/'),
        };
        let tree = FolderTree::from_list(&namespace, vec![first, second]);
        assert_eq!(paths(&tree), ["Sent"]);
        assert!(tree.get(&path("Sent")).is_some_and(|f| f.subscribed));
    }

    #[test]
    fn a_flat_server_is_read_as_if_its_delimiter_were_slash() {
        let namespace = Namespace {
            prefix: String::new(),
            delimiter: None,
        };
        let mut folder = listed("Archive/Old", '/', &[]);
        folder.delimiter = None;
        let tree = FolderTree::from_list(&namespace, vec![folder]);
        assert_eq!(paths(&tree), ["Archive/Old"]);
        assert_eq!(tree.raw_name_for(&path("Lists/2019")), "Lists/2019");
    }

    #[test]
    fn well_known_names_stand_in_for_attributes_on_a_server_that_marks_none() {
        let exchange = dovecot(&[
            ("INBOX", &[]),
            ("Sent Items", &[]),
            ("Deleted Items", &[]),
            ("junk e-mail", &[]),
            ("Junk Email", &[]),
            ("Archive", &[]),
            ("Projects/Sent", &[]),
        ]);
        let uses: Vec<_> = exchange.folders().map(|f| f.special_use).collect();
        assert_eq!(
            uses,
            [
                None,
                Some(SpecialUse::Sent),
                Some(SpecialUse::Trash),
                Some(SpecialUse::Junk),
                Some(SpecialUse::Junk),
                Some(SpecialUse::Archive),
                None,
            ]
        );
    }

    #[test]
    fn well_known_names_mean_nothing_on_a_server_that_marks_some_folders() {
        let tree = dovecot(&[("Sent", &["\\Sent"]), ("Trash", &[]), ("Spam", &[])]);
        assert_eq!(tree.get(&path("Trash")).and_then(|f| f.special_use), None);
        assert_eq!(tree.get(&path("Spam")).and_then(|f| f.special_use), None);
    }

    #[test]
    fn raw_names_for_new_paths_follow_the_prefix_and_delimiter() {
        let target = courier(&[("INBOX", &[])]);
        assert_eq!(target.raw_name_for(&FolderPath::inbox()), "INBOX");
        assert_eq!(target.raw_name_for(&path("INBOX/Sub")), "INBOX.Sub");
        assert_eq!(target.raw_name_for(&path("Sent")), "INBOX.Sent");
        assert_eq!(
            target.raw_name_for(&path("Archive/2019")),
            "INBOX.Archive.2019"
        );
        assert_eq!(
            target.raw_name_for(&path("Junk/Überprüft")),
            "INBOX.Junk.&ANw-berpr&APw-ft"
        );
        assert_eq!(
            target.raw_name_for(&path("Notes & Ideas")),
            "INBOX.Notes &- Ideas"
        );
        let dovecot_target = dovecot(&[]);
        assert_eq!(dovecot_target.raw_name_for(&path("INBOX/Sub")), "INBOX/Sub");
        assert_eq!(dovecot_target.raw_name_for(&path("Sent")), "Sent");
    }

    #[test]
    fn a_delimiter_inside_a_level_is_replaced_so_no_level_is_added() {
        let target = courier(&[]);
        assert_eq!(
            target.raw_name_for(&path("v1.2/notes.old")),
            "INBOX.v1_2.notes_old"
        );
        assert_eq!(dovecot(&[]).raw_name_for(&path("v1.2")), "v1.2");
    }

    #[test]
    fn the_default_rules_take_every_folder() {
        let all = FolderRules::default();
        assert!(all.in_scope(&FolderPath::inbox()));
        assert!(all.in_scope(&path("Lists/usrp-users/2019")));
    }

    #[test]
    fn excluding_a_folder_excludes_its_descendants_but_not_its_namesakes() {
        let rules = rules(&["*"], &["Junk", "Trash"], &[]);
        assert!(!rules.in_scope(&path("Junk")));
        assert!(!rules.in_scope(&path("Junk/Überprüft")));
        assert!(rules.in_scope(&path("Junkyard")));
        assert!(rules.in_scope(&path("Archive/Junk")));
        assert!(rules.in_scope(&path("INBOX")));
    }

    #[test]
    fn including_a_folder_includes_its_descendants() {
        let rules = rules(&["Archive", "INBOX"], &[], &[]);
        assert!(rules.in_scope(&path("Archive/2002")));
        assert!(rules.in_scope(&path("INBOX/Newsletters")));
        assert!(!rules.in_scope(&path("Lists")));
        assert!(!rules.in_scope(&path("Archives")));
    }

    #[test]
    fn a_star_crosses_levels_and_a_question_mark_is_one_character() {
        let rules = rules(&["Lists/*", "Q?irks", "*/2019"], &["Lists/*/2026"], &[]);
        assert!(rules.in_scope(&path("Lists/usrp-users/2019")));
        assert!(!rules.in_scope(&path("Lists/usrp-users/2026")));
        assert!(!rules.in_scope(&path("Lists")));
        assert!(rules.in_scope(&path("Quirks/MIME samples")));
        assert!(!rules.in_scope(&path("Qirks")));
        assert!(rules.in_scope(&path("Archive/Old/2019")));
    }

    #[test]
    fn patterns_are_case_sensitive_except_for_inbox() {
        let rules = rules(&["inbox/*", "archive"], &["INBOX/news*"], &[]);
        assert!(rules.in_scope(&path("INBOX/Family")));
        assert!(!rules.in_scope(&path("Archive")));
        assert!(rules.in_scope(&path("INBOX/Newsletters")));
        let rules_lower = FolderRules {
            exclude: vec!["Inbox/Newsletters".to_owned()],
            ..FolderRules::default()
        };
        assert!(!rules_lower.in_scope(&path("INBOX/Newsletters")));
        assert!(rules_lower.in_scope(&path("INBOX")));
    }

    #[test]
    fn no_include_pattern_means_no_folder() {
        assert!(!rules(&[], &[], &[]).in_scope(&FolderPath::inbox()));
    }

    #[test]
    fn a_reserved_top_level_name_is_mapped_with_its_subfolders() {
        let source = dovecot(&[
            ("INBOX", &[]),
            ("Files", &[]),
            ("Files/2024", &[]),
            ("Work/Files", &[]),
        ]);
        let mut target = dovecot(&[("INBOX", &[])]);
        target.reserve(&[("Files", "Files (migrated)")]);
        let plan = plan_folders(&source, &target, &FolderRules::default());
        let names: Vec<&str> = plan.iter().map(|i| i.target_raw_name.as_str()).collect();
        assert!(names.contains(&"Files (migrated)"), "{names:?}");
        assert!(names.contains(&"Files (migrated)/2024"), "{names:?}");
        // Only the top level is reserved.
        assert!(names.contains(&"Work/Files"), "{names:?}");
        assert!(!names.contains(&"Files"), "{names:?}");
    }

    #[test]
    fn a_dovecot_tree_plans_onto_a_courier_target() {
        let target = courier(&[
            ("INBOX", &[]),
            ("INBOX.Sent", &["\\Sent"]),
            ("INBOX.Junk", &["\\Junk"]),
        ]);
        let plan = plan_folders(&corpus_source(), &target, &FolderRules::default());
        assert_eq!(
            summary(&plan),
            [
                ("INBOX", "INBOX", false, Some("INBOX")),
                (
                    "INBOX/Newsletters",
                    "INBOX.Newsletters",
                    true,
                    Some("INBOX/Newsletters")
                ),
                ("Archive", "INBOX.Archive", true, Some("Archive")),
                (
                    "Archive/2002",
                    "INBOX.Archive.2002",
                    true,
                    Some("Archive/2002")
                ),
                ("Junk", "INBOX.Junk", false, Some("Junk")),
                (
                    "Junk/Überprüft",
                    "INBOX.Junk.&ANw-berpr&APw-ft",
                    true,
                    Some("Junk/Überprüft")
                ),
                ("Lists", "INBOX.Lists", true, Some("Lists")),
                (
                    "Lists/usrp-users",
                    "INBOX.Lists.usrp-users",
                    true,
                    Some("Lists/usrp-users")
                ),
                (
                    "Lists/usrp-users/2019",
                    "INBOX.Lists.usrp-users.2019",
                    true,
                    Some("Lists/usrp-users/2019")
                ),
                ("Quirks", "INBOX.Quirks", true, Some("Quirks")),
                (
                    "Quirks/MIME samples",
                    "INBOX.Quirks.MIME samples",
                    true,
                    Some("Quirks/MIME samples")
                ),
                ("Sent", "INBOX.Sent", false, Some("Sent")),
            ]
        );
        let archive = &plan[2];
        assert!(!archive.selectable && archive.create && archive.subscribe);
    }

    #[test]
    fn a_courier_tree_plans_onto_a_dovecot_target() {
        let source = courier(&[
            ("INBOX", &[]),
            ("INBOX.Sent", &["\\Sent"]),
            ("INBOX.Junk", &["\\Junk"]),
            ("INBOX.Junk.&ANw-berpr&APw-ft", &[]),
            ("INBOX.Archive", &[]),
            ("INBOX.Archive.2002", &[]),
        ]);
        let target = dovecot(&[("INBOX", &[]), ("Sent", &["\\Sent"]), ("Junk", &["\\Junk"])]);
        let plan = plan_folders(&source, &target, &FolderRules::default());
        assert_eq!(
            summary(&plan),
            [
                ("INBOX", "INBOX", false, Some("INBOX")),
                ("Archive", "Archive", true, Some("Archive")),
                ("Archive/2002", "Archive/2002", true, Some("Archive/2002")),
                ("Junk", "Junk", false, Some("Junk")),
                (
                    "Junk/Überprüft",
                    "Junk/&ANw-berpr&APw-ft",
                    true,
                    Some("Junk/Überprüft")
                ),
                ("Sent", "Sent", false, Some("Sent")),
            ]
        );
        let raw_sources: Vec<_> = plan
            .iter()
            .filter_map(|item| item.source.as_ref().map(|f| f.raw_name.as_str()))
            .collect();
        assert_eq!(raw_sources[4], "INBOX.Junk.&ANw-berpr&APw-ft");
    }

    #[test]
    fn inbox_children_find_their_courier_counterparts() {
        let source = dovecot(&[("INBOX", &[]), ("INBOX/Newsletters", &[])]);
        // Courier lists its INBOX children under the prefix, so it reads them as top-level.
        let target = courier(&[("INBOX", &[]), ("INBOX.Newsletters", &[])]);
        let plan = plan_folders(&source, &target, &FolderRules::default());
        assert_eq!(
            summary(&plan),
            [
                ("INBOX", "INBOX", false, Some("INBOX")),
                (
                    "INBOX/Newsletters",
                    "INBOX.Newsletters",
                    false,
                    Some("INBOX/Newsletters")
                ),
            ]
        );
    }

    #[test]
    fn a_special_use_folder_and_its_descendants_follow_the_target_name() {
        let source = dovecot(&[
            ("Sent", &["\\Sent"]),
            ("Sent/2019", &[]),
            ("Trash", &["\\Trash"]),
        ]);
        let target = dovecot(&[("Sent Items", &["\\Sent"]), ("Deleted Items", &["\\Trash"])]);
        let plan = plan_folders(&source, &target, &FolderRules::default());
        assert_eq!(
            summary(&plan),
            [
                ("Deleted Items", "Deleted Items", false, Some("Trash")),
                ("Sent Items", "Sent Items", false, Some("Sent")),
                (
                    "Sent Items/2019",
                    "Sent Items/2019",
                    true,
                    Some("Sent/2019")
                ),
            ]
        );
    }

    #[test]
    fn a_target_folder_at_the_same_path_with_the_same_use_wins() {
        let source = dovecot(&[("Sent", &["\\Sent"])]);
        let target = dovecot(&[("Sent Items", &["\\Sent"]), ("Sent", &["\\Sent"])]);
        let plan = plan_folders(&source, &target, &FolderRules::default());
        assert_eq!(summary(&plan), [("Sent", "Sent", false, Some("Sent"))]);
    }

    #[test]
    fn a_special_use_the_target_lacks_keeps_the_path() {
        let source = dovecot(&[("Gesendet", &["\\Sent"]), ("Papierkorb", &["\\Trash"])]);
        let target = dovecot(&[
            ("Sent", &["\\Sent"]),
            ("Trash", &[]),
            ("Drafts", &["\\Drafts"]),
        ]);
        let plan = plan_folders(&source, &target, &FolderRules::default());
        assert_eq!(
            summary(&plan),
            [
                ("Papierkorb", "Papierkorb", true, Some("Papierkorb")),
                ("Sent", "Sent", false, Some("Gesendet")),
            ]
        );
    }

    #[test]
    fn an_exchange_source_is_mapped_by_its_folder_names() {
        let source = dovecot(&[
            ("INBOX", &[]),
            ("Sent Items", &[]),
            ("Deleted Items", &[]),
            ("Junk E-mail", &[]),
        ]);
        let target = dovecot(&[
            ("INBOX", &[]),
            ("Sent", &["\\Sent"]),
            ("Trash", &["\\Trash"]),
            ("Junk", &["\\Junk"]),
        ]);
        let plan = plan_folders(&source, &target, &FolderRules::default());
        assert_eq!(
            summary(&plan),
            [
                ("INBOX", "INBOX", false, Some("INBOX")),
                ("Junk", "Junk", false, Some("Junk E-mail")),
                ("Sent", "Sent", false, Some("Sent Items")),
                ("Trash", "Trash", false, Some("Deleted Items")),
            ]
        );
    }

    #[test]
    fn an_exchange_target_is_found_by_its_folder_names() {
        let source = courier(&[("INBOX.Sent", &["\\Sent"]), ("INBOX.Sent.2019", &[])]);
        let target = dovecot(&[("Sent Items", &[]), ("Deleted Items", &[])]);
        let plan = plan_folders(&source, &target, &FolderRules::default());
        assert_eq!(
            summary(&plan),
            [
                ("Sent Items", "Sent Items", false, Some("Sent")),
                (
                    "Sent Items/2019",
                    "Sent Items/2019",
                    true,
                    Some("Sent/2019")
                ),
            ]
        );
    }

    #[test]
    fn virtual_special_uses_are_not_mapped() {
        let source = dovecot(&[
            ("[Gmail]/All Mail", &["\\All"]),
            ("[Gmail]/Starred", &["\\Flagged"]),
        ]);
        let target = dovecot(&[
            ("Virtual/All", &["\\All"]),
            ("Virtual/Flagged", &["\\Flagged"]),
        ]);
        let plan = plan_folders(&source, &target, &FolderRules::default());
        let targets: Vec<_> = plan.iter().map(|item| item.target_path.as_str()).collect();
        assert_eq!(targets, ["[Gmail]", "[Gmail]/All Mail", "[Gmail]/Starred"]);
    }

    #[test]
    fn folder_map_renames_a_folder_and_its_descendants() {
        let source = dovecot(&[
            ("INBOX", &[]),
            ("Old Archive", &[]),
            ("Old Archive/2019", &[]),
            ("Old Archive/2019/Q1", &[]),
            ("Old Archives", &[]),
        ]);
        let target = dovecot(&[("INBOX", &[])]);
        let rules = rules(&["*"], &[], &[("Old Archive", "Archive/Old")]);
        let plan = plan_folders(&source, &target, &rules);
        assert_eq!(
            summary(&plan),
            [
                ("INBOX", "INBOX", false, Some("INBOX")),
                ("Archive", "Archive", true, None),
                ("Archive/Old", "Archive/Old", true, Some("Old Archive")),
                (
                    "Archive/Old/2019",
                    "Archive/Old/2019",
                    true,
                    Some("Old Archive/2019")
                ),
                (
                    "Archive/Old/2019/Q1",
                    "Archive/Old/2019/Q1",
                    true,
                    Some("Old Archive/2019/Q1")
                ),
                ("Old Archives", "Old Archives", true, Some("Old Archives")),
            ]
        );
        let parent = &plan[1];
        assert!(!parent.selectable && !parent.subscribe);
    }

    #[test]
    fn the_closest_folder_map_entry_wins_and_beats_special_use() {
        let source = dovecot(&[
            ("Sent", &["\\Sent"]),
            ("Sent/2019", &[]),
            ("Sent/2020", &[]),
            ("Sent/2020/Q1", &[]),
        ]);
        let target = dovecot(&[("Sent Items", &["\\Sent"])]);
        let rules = rules(
            &["*"],
            &[],
            &[
                ("Sent/2020", "Archive/Sent 2020"),
                ("Sent/2019/", "/Archive/Sent 2019"),
            ],
        );
        let plan = plan_folders(&source, &target, &rules);
        let targets: Vec<_> = plan.iter().map(|item| item.target_path.as_str()).collect();
        assert_eq!(
            targets,
            [
                "Archive",
                "Archive/Sent 2019",
                "Archive/Sent 2020",
                "Archive/Sent 2020/Q1",
                "Sent Items",
            ]
        );
    }

    #[test]
    fn folder_map_can_move_folders_under_inbox_on_a_courier_target() {
        let source = dovecot(&[("INBOX", &[]), ("Family", &[])]);
        let target = courier(&[("INBOX", &[])]);
        let rules = rules(&["*"], &[], &[("Family", "inbox/Family")]);
        let plan = plan_folders(&source, &target, &rules);
        assert_eq!(
            summary(&plan),
            [
                ("INBOX", "INBOX", false, Some("INBOX")),
                ("INBOX/Family", "INBOX.Family", true, Some("Family")),
            ]
        );
    }

    #[test]
    fn scope_is_decided_on_source_paths_before_mapping() {
        let source = dovecot(&[("INBOX", &[]), ("Sent", &["\\Sent"]), ("Old", &[])]);
        let target = dovecot(&[("Sent Items", &["\\Sent"])]);
        let excluded_by_source_name = rules(&["*"], &["Sent"], &[("Old", "Archive/Old")]);
        let plan = plan_folders(&source, &target, &excluded_by_source_name);
        let targets: Vec<_> = plan.iter().map(|item| item.target_path.as_str()).collect();
        assert_eq!(targets, ["INBOX", "Archive", "Archive/Old"]);
        let target_names_do_not_count = rules(&["*"], &["Sent Items", "Archive"], &[]);
        let plan = plan_folders(&source, &target, &target_names_do_not_count);
        let targets: Vec<_> = plan.iter().map(|item| item.target_path.as_str()).collect();
        assert_eq!(targets, ["INBOX", "Old", "Sent Items"]);
    }

    #[test]
    fn excluded_folders_and_their_descendants_are_not_planned() {
        let rules = rules(&["*"], &["Junk", "Lists/*/2019"], &[]);
        let plan = plan_folders(&corpus_source(), &dovecot(&[]), &rules);
        let targets: Vec<_> = plan.iter().map(|item| item.target_path.as_str()).collect();
        assert_eq!(
            targets,
            [
                "INBOX",
                "INBOX/Newsletters",
                "Archive",
                "Archive/2002",
                "Lists",
                "Lists/usrp-users",
                "Quirks",
                "Quirks/MIME samples",
                "Sent",
            ]
        );
    }

    #[test]
    fn parents_the_target_needs_are_planned_without_a_source() {
        let rules = rules(&["Lists/usrp-users/2019"], &[], &[]);
        let target = dovecot(&[("Lists", &[])]);
        let plan = plan_folders(&corpus_source(), &target, &rules);
        assert_eq!(
            summary(&plan),
            [
                ("Lists", "Lists", false, None),
                ("Lists/usrp-users", "Lists/usrp-users", true, None),
                (
                    "Lists/usrp-users/2019",
                    "Lists/usrp-users/2019",
                    true,
                    Some("Lists/usrp-users/2019")
                ),
            ]
        );
        assert!(
            plan[..2]
                .iter()
                .all(|item| !item.selectable && !item.subscribe)
        );
        assert!(plan[2].selectable && plan[2].subscribe);
    }

    #[test]
    fn inbox_is_never_a_parent_to_create() {
        let source = dovecot(&[("INBOX/Newsletters", &[])]);
        let plan = plan_folders(&source, &dovecot(&[]), &FolderRules::default());
        assert_eq!(
            summary(&plan),
            [(
                "INBOX/Newsletters",
                "INBOX/Newsletters",
                true,
                Some("INBOX/Newsletters")
            )]
        );
    }

    #[test]
    fn a_noselect_target_folder_is_created_when_messages_go_into_it() {
        let source = dovecot(&[("Archive", &[]), ("Lists", &["\\Noselect"])]);
        let target = dovecot(&[("Archive", &["\\Noselect"]), ("Lists", &["\\Noselect"])]);
        let plan = plan_folders(&source, &target, &FolderRules::default());
        assert_eq!(
            summary(&plan),
            [
                ("Archive", "Archive", true, Some("Archive")),
                ("Lists", "Lists", false, Some("Lists")),
            ]
        );
    }

    #[test]
    fn two_source_folders_merge_into_one_target_folder() {
        let mut folders = vec![
            listed("INBOX", '/', &[]),
            listed("Sent Items", '/', &[]),
            listed("Sent Messages", '/', &[]),
        ];
        folders[1].subscribed = false;
        let namespace = Namespace {
            prefix: String::new(),
            delimiter: Some('/'),
        };
        let source = FolderTree::from_list(&namespace, folders);
        let target = dovecot(&[("INBOX", &[]), ("Sent", &[])]);
        let plan = plan_folders(&source, &target, &FolderRules::default());
        assert_eq!(
            summary(&plan),
            [
                ("INBOX", "INBOX", false, Some("INBOX")),
                ("Sent", "Sent", false, Some("Sent Items")),
                ("Sent", "Sent", false, Some("Sent Messages")),
            ]
        );
        assert!(plan[1].subscribe && plan[2].subscribe);

        let empty_target = dovecot(&[("Sent", &["\\Sent"])]);
        let rules = rules(
            &["*"],
            &[],
            &[("Sent Items", "Old Sent"), ("Sent Messages", "Old Sent")],
        );
        let plan = plan_folders(&source, &empty_target, &rules);
        let creates: Vec<_> = plan
            .iter()
            .map(|item| (item.target_path.as_str(), item.create))
            .collect();
        assert_eq!(
            creates,
            [("INBOX", false), ("Old Sent", true), ("Old Sent", false)]
        );
    }

    #[test]
    fn a_level_holding_the_target_delimiter_is_renamed_not_split() {
        let source = dovecot(&[("INBOX", &[]), ("v1.2", &[]), ("v1.2/notes", &[])]);
        let target = courier(&[("INBOX", &[])]);
        let plan = plan_folders(&source, &target, &FolderRules::default());
        assert_eq!(
            summary(&plan),
            [
                ("INBOX", "INBOX", false, Some("INBOX")),
                ("v1_2", "INBOX.v1_2", true, Some("v1.2")),
                ("v1_2/notes", "INBOX.v1_2.notes", true, Some("v1.2/notes")),
            ]
        );
        // Listed back from the target, the folder has the planned path.
        let relisted = courier(&[("INBOX.v1_2", &[]), ("INBOX.v1_2.notes", &[])]);
        assert_eq!(paths(&relisted), ["v1_2", "v1_2/notes"]);
        let again = plan_folders(&source, &relisted, &FolderRules::default());
        assert!(again.iter().all(|item| !item.create));
    }

    #[test]
    fn a_tree_round_trips_through_a_courier_target_but_inbox_children_come_back_top_level() {
        let source = corpus_source();
        let plan = plan_folders(
            &source,
            &courier(&[("INBOX", &[])]),
            &FolderRules::default(),
        );
        let relisted = FolderTree::from_list(
            &Namespace {
                prefix: "INBOX.".to_owned(),
                delimiter: Some('.'),
            },
            plan.iter()
                .map(|item| {
                    let attributes: &[&str] = if item.selectable {
                        &[]
                    } else {
                        &["\\Noselect"]
                    };
                    listed(&item.target_raw_name, '.', attributes)
                })
                .collect(),
        );
        let back = plan_folders(&relisted, &source, &FolderRules::default());
        let mut returned: Vec<_> = back
            .iter()
            .map(|item| (item.target_raw_name.as_str(), item.create))
            .collect();
        returned.sort_unstable();
        // Under the prefix "INBOX." a child of INBOX and a top-level folder are one and the
        // same name, INBOX.Newsletters, which reads back as the top-level Newsletters.
        assert_eq!(
            returned,
            [
                ("Archive", false),
                ("Archive/2002", false),
                ("INBOX", false),
                ("Junk", false),
                ("Junk/&ANw-berpr&APw-ft", false),
                ("Lists", false),
                ("Lists/usrp-users", false),
                ("Lists/usrp-users/2019", false),
                ("Newsletters", true),
                ("Quirks", false),
                ("Quirks/MIME samples", false),
                ("Sent", false),
            ]
        );
    }
}
