//! The mailboxes CSV (SPEC §5): who the mailboxes are, when no directory says so.
//!
//! Administrators write this file by hand or export it from a spreadsheet, and importing it
//! changes a job's entries. So the file is checked whole before anything uses it: every problem
//! in it is collected and reported as `line N, column C: what is wrong`, and a file with any
//! problem is rejected entirely. Line numbers are the physical lines an editor shows (the header
//! is line 1; a quoted cell may span several lines, and a row is numbered by its first line).
//!
//! This module only reads and checks the file. It fills in no defaults (such as a login being
//! the primary address): what a missing cell means is for the caller to decide.

use crate::model::EmailAddress;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// One mailbox row of the CSV, checked and normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvRow {
    /// The physical line the row starts on (the header is line 1).
    pub line: usize,
    /// `Source ID`: the stable identity of the source mailbox, trimmed.
    pub source_id: String,
    /// `Source addresses`, primary first; never empty.
    pub source_addresses: Vec<String>,
    /// `Source login`, trimmed; `None` when the cell is empty or the column absent.
    pub source_login: Option<String>,
    /// `Source password`, exactly as written (not trimmed); `None` when empty.
    pub source_password: Option<String>,
    /// `Target addresses`, primary first; empty when the target is to be matched or created.
    pub target_addresses: Vec<String>,
    /// `Target login`, trimmed; `None` when empty.
    pub target_login: Option<String>,
    /// `Target password`, exactly as written; `None` when empty.
    pub target_password: Option<String>,
    /// `Stage`: a positive integer, for staged jobs.
    pub stage: Option<u32>,
}

/// One thing wrong in the CSV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvProblem {
    /// The physical line (the header is line 1).
    pub line: usize,
    /// The column: its name as the spec spells it (`Source ID`), the name the file gave an
    /// unknown column, or the column's number (from 1) when it has no usable name. Empty when
    /// the problem is about the whole line.
    pub column: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for CsvProblem {
    /// `line N, column C: what is wrong` (or `line N: what is wrong` without a column).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.column.is_empty() {
            write!(f, "line {}: {}", self.line, self.message)
        } else {
            write!(
                f,
                "line {}, column {}: {}",
                self.line, self.column, self.message
            )
        }
    }
}

/// Why a mailboxes CSV could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    /// The file could not be read.
    #[error("cannot read mailboxes CSV {}: {source}", file.display())]
    Io {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file was read but has problems; nothing in it may be used.
    #[error("invalid mailboxes CSV {}:{}", file.display(), ProblemLines(problems))]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Every problem found, in file order.
        problems: Vec<CsvProblem>,
    },
}

/// Displays problems each on a new indented line.
struct ProblemLines<'a>(&'a [CsvProblem]);

impl fmt::Display for ProblemLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for problem in self.0 {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

/// The columns of SPEC §5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    SourceId,
    SourceAddresses,
    SourceLogin,
    SourcePassword,
    TargetAddresses,
    TargetLogin,
    TargetPassword,
    Stage,
}

impl Column {
    const ALL: [Column; 8] = [
        Column::SourceId,
        Column::SourceAddresses,
        Column::SourceLogin,
        Column::SourcePassword,
        Column::TargetAddresses,
        Column::TargetLogin,
        Column::TargetPassword,
        Column::Stage,
    ];

    /// The column's name as the spec spells it.
    fn name(self) -> &'static str {
        match self {
            Column::SourceId => "Source ID",
            Column::SourceAddresses => "Source addresses",
            Column::SourceLogin => "Source login",
            Column::SourcePassword => "Source password",
            Column::TargetAddresses => "Target addresses",
            Column::TargetLogin => "Target login",
            Column::TargetPassword => "Target password",
            Column::Stage => "Stage",
        }
    }

    fn required(self) -> bool {
        matches!(self, Column::SourceId | Column::SourceAddresses)
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The column a header cell names: trimmed, case-insensitive.
    fn from_header(header: &str) -> Option<Column> {
        let header = header.trim();
        Column::ALL
            .into_iter()
            .find(|column| column.name().eq_ignore_ascii_case(header))
    }
}

/// Reads and checks a mailboxes CSV file.
///
/// # Errors
///
/// [`CsvError::Io`] when the file cannot be read; [`CsvError::Invalid`] listing every problem.
pub fn parse_mailboxes_csv(path: &Path) -> Result<Vec<CsvRow>, CsvError> {
    let bytes = std::fs::read(path).map_err(|source| CsvError::Io {
        file: path.to_path_buf(),
        source,
    })?;
    parse_mailboxes_csv_bytes(path, &bytes)
}

/// Checks the content of a mailboxes CSV; `file_label` names it in errors.
///
/// # Errors
///
/// [`CsvError::Invalid`] listing every problem; a file with any problem yields no rows.
pub fn parse_mailboxes_csv_bytes(file_label: &Path, bytes: &[u8]) -> Result<Vec<CsvRow>, CsvError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut parser = Parser {
        lines: LineIndex::new(bytes),
        problems: Vec::new(),
        columns: Vec::new(),
        ids: HashMap::new(),
        source_addresses: HashMap::new(),
    };
    let rows = parser.parse(bytes);
    if parser.problems.is_empty() {
        Ok(rows)
    } else {
        Err(CsvError::Invalid {
            file: file_label.to_path_buf(),
            problems: parser.problems,
        })
    }
}

/// Turns byte offsets into physical line numbers.
///
/// `csv::Position::line` is not used: it gives the wrong line to a record that follows blank
/// lines (csv 1.4 numbers it as if the blank lines were not there, and counts `\r\n` blank lines
/// not at all). The record's byte offset is right, so lines are counted from it instead.
struct LineIndex<'a> {
    bytes: &'a [u8],
    newlines: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        let newlines = bytes
            .iter()
            .enumerate()
            .filter(|(_, byte)| **byte == b'\n')
            .map(|(offset, _)| offset)
            .collect();
        LineIndex { bytes, newlines }
    }

    /// The line of the record that csv says starts at `offset`: csv's offset may point at the
    /// blank lines it skipped before the record.
    fn line_of_record(&self, offset: u64) -> usize {
        let mut offset = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.bytes.len());
        while matches!(self.bytes.get(offset), Some(b'\r' | b'\n')) {
            offset += 1;
        }
        self.newlines.partition_point(|&newline| newline < offset) + 1
    }
}

/// The state of one parse: problems so far and what earlier rows used.
struct Parser<'a> {
    lines: LineIndex<'a>,
    problems: Vec<CsvProblem>,
    /// For each header cell, the column it names (`None`: unknown or unusable).
    columns: Vec<Option<Column>>,
    /// `Source ID` → line it first appeared on.
    ids: HashMap<String, usize>,
    /// Source address (lowercased) → line it first appeared on.
    source_addresses: HashMap<String, usize>,
}

impl Parser<'_> {
    fn problem(&mut self, line: usize, column: impl Into<String>, message: impl Into<String>) {
        self.problems.push(CsvProblem {
            line,
            column: column.into(),
            message: message.into(),
        });
    }

    fn parse(&mut self, bytes: &[u8]) -> Vec<CsvRow> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(bytes);
        let mut header_seen = false;
        let mut rows = Vec::new();
        for record in reader.byte_records() {
            let record = match record {
                Ok(record) => record,
                Err(error) => {
                    let line = error
                        .position()
                        .map_or(1, |position| self.lines.line_of_record(position.byte()));
                    self.problem(line, "", format!("cannot read the line: {error}"));
                    continue;
                }
            };
            let line = record
                .position()
                .map_or(1, |position| self.lines.line_of_record(position.byte()));
            if !header_seen {
                header_seen = true;
                self.header(line, &record);
            } else if let Some(row) = self.row(line, &record) {
                rows.push(row);
            }
        }
        if !header_seen {
            self.problem(
                1,
                "",
                "the file is empty; the first line must be a header row naming the columns",
            );
        }
        rows
    }

    fn header(&mut self, line: usize, record: &csv::ByteRecord) {
        let mut found: Vec<Option<usize>> = vec![None; Column::ALL.len()];
        for (index, cell) in record.iter().enumerate() {
            let number = (index + 1).to_string();
            let column = match std::str::from_utf8(cell) {
                Err(_) => {
                    self.problem(line, number, "not valid UTF-8");
                    None
                }
                Ok(name) if name.trim().is_empty() => {
                    self.problem(line, number, "the column has no name");
                    None
                }
                Ok(name) => match Column::from_header(name) {
                    None => {
                        let expected: Vec<&str> =
                            Column::ALL.iter().map(|column| column.name()).collect();
                        self.problem(
                            line,
                            name.trim(),
                            format!("unknown column; the columns are {}", expected.join(", ")),
                        );
                        None
                    }
                    Some(column) => {
                        if let Some(first) = found[column.index()] {
                            self.problem(
                                line,
                                column.name(),
                                format!(
                                    "the column appears twice (columns {} and {number})",
                                    first + 1
                                ),
                            );
                            None
                        } else {
                            found[column.index()] = Some(index);
                            Some(column)
                        }
                    }
                },
            };
            self.columns.push(column);
        }
        for column in Column::ALL {
            if column.required() && found[column.index()].is_none() {
                self.problem(
                    line,
                    column.name(),
                    "required column is missing (the first line must be a header row naming \
                     the columns)",
                );
            }
        }
    }

    /// Checks one data row; `None` when it has problems or is blank.
    fn row(&mut self, line: usize, record: &csv::ByteRecord) -> Option<CsvRow> {
        if record
            .iter()
            .all(|cell| cell.iter().all(u8::is_ascii_whitespace))
        {
            return None;
        }
        let problems_before = self.problems.len();
        let mut cells: [Option<String>; Column::ALL.len()] = Default::default();
        for (index, cell) in record.iter().enumerate() {
            match self.columns.get(index).copied() {
                Some(Some(column)) => match std::str::from_utf8(cell) {
                    Ok(text) => cells[column.index()] = Some(text.to_owned()),
                    Err(_) => self.problem(line, column.name(), "not valid UTF-8"),
                },
                // A column whose header is already reported.
                Some(None) => {}
                None if cell.iter().all(u8::is_ascii_whitespace) => {}
                None => self.problem(
                    line,
                    (index + 1).to_string(),
                    format!(
                        "this line has more cells than the header has columns ({})",
                        self.columns.len()
                    ),
                ),
            }
        }
        let mut take = |column: Column| cells[column.index()].take();
        let id = take(Column::SourceId);
        let source = take(Column::SourceAddresses);
        let source_login = take(Column::SourceLogin);
        let source_password = take(Column::SourcePassword);
        let target = take(Column::TargetAddresses);
        let target_login = take(Column::TargetLogin);
        let target_password = take(Column::TargetPassword);
        let stage = take(Column::Stage);

        let source_id = self.source_id(line, id);
        let source_written = source
            .as_deref()
            .is_some_and(|cell| split_addresses(cell).next().is_some());
        if !source_written && self.has_column(Column::SourceAddresses) {
            self.required_empty(line, Column::SourceAddresses);
        }
        let source_addresses = self.addresses(line, Column::SourceAddresses, source);
        for address in &source_addresses {
            self.unique_source_address(line, address);
        }
        let target_addresses = self.addresses(line, Column::TargetAddresses, target);
        let stage = self.stage(line, stage);

        if self.problems.len() > problems_before {
            return None;
        }
        Some(CsvRow {
            line,
            source_id: source_id?,
            source_addresses,
            source_login: trimmed(source_login),
            source_password: source_password.filter(|password| !password.is_empty()),
            target_addresses,
            target_login: trimmed(target_login),
            target_password: target_password.filter(|password| !password.is_empty()),
            stage,
        })
    }

    fn has_column(&self, column: Column) -> bool {
        self.columns.contains(&Some(column))
    }

    fn required_empty(&mut self, line: usize, column: Column) {
        self.problem(line, column.name(), "required cell is empty");
    }

    fn source_id(&mut self, line: usize, cell: Option<String>) -> Option<String> {
        let Some(id) = trimmed(cell) else {
            if self.has_column(Column::SourceId) {
                self.required_empty(line, Column::SourceId);
            }
            return None;
        };
        if let Some(first) = self.ids.get(&id) {
            let message = format!("Source ID \"{id}\" is already used on line {first}");
            self.problem(line, Column::SourceId.name(), message);
            return None;
        }
        self.ids.insert(id.clone(), line);
        Some(id)
    }

    /// A `;`-separated address cell, each address checked; duplicates within the cell dropped.
    fn addresses(&mut self, line: usize, column: Column, cell: Option<String>) -> Vec<String> {
        let mut addresses: Vec<String> = Vec::new();
        let Some(cell) = cell else {
            return addresses;
        };
        for written in split_addresses(&cell) {
            match normalize_address(written) {
                Ok(address) => {
                    if !addresses
                        .iter()
                        .any(|known| known.eq_ignore_ascii_case(&address))
                    {
                        addresses.push(address);
                    }
                }
                Err(reason) => self.problem(
                    line,
                    column.name(),
                    format!("\"{written}\" is not a valid email address: {reason}"),
                ),
            }
        }
        addresses
    }

    /// Two source mailboxes cannot have the same address (compared case-insensitively, as
    /// mail servers do).
    fn unique_source_address(&mut self, line: usize, address: &str) {
        let key = address.to_lowercase();
        match self.source_addresses.get(&key) {
            Some(&first) if first != line => self.problem(
                line,
                Column::SourceAddresses.name(),
                format!("{address} is already a source address on line {first}"),
            ),
            Some(_) => {}
            None => {
                self.source_addresses.insert(key, line);
            }
        }
    }

    fn stage(&mut self, line: usize, cell: Option<String>) -> Option<u32> {
        let text = trimmed(cell)?;
        match text.parse::<u32>() {
            Ok(stage) if stage > 0 && !text.starts_with('+') => Some(stage),
            _ => {
                self.problem(
                    line,
                    Column::Stage.name(),
                    format!("must be a positive whole number (1, 2, …), not \"{text}\""),
                );
                None
            }
        }
    }
}

/// The addresses written in a cell: `;`-separated, trimmed, empty ones ignored.
fn split_addresses(cell: &str) -> impl Iterator<Item = &str> {
    cell.split(';')
        .map(str::trim)
        .filter(|address| !address.is_empty())
}

/// The cell trimmed, `None` when that leaves nothing.
fn trimmed(cell: Option<String>) -> Option<String> {
    cell.map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
}

/// Checks one address by the one rule every input uses ([`EmailAddress::parse`]).
fn normalize_address(address: &str) -> Result<String, String> {
    EmailAddress::parse(address).map(EmailAddress::into_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<CsvRow>, CsvError> {
        parse_mailboxes_csv_bytes(Path::new("boxes.csv"), text.as_bytes())
    }

    fn rows(text: &str) -> Vec<CsvRow> {
        match parse(text) {
            Ok(rows) => rows,
            Err(error) => panic!("expected a valid file, got: {error}"),
        }
    }

    /// The problems of an invalid file, as displayed.
    fn problems(text: &str) -> Vec<String> {
        problems_of_bytes(text.as_bytes())
    }

    fn problems_of_bytes(bytes: &[u8]) -> Vec<String> {
        match parse_mailboxes_csv_bytes(Path::new("boxes.csv"), bytes) {
            Ok(rows) => panic!("expected an invalid file, got {rows:?}"),
            Err(CsvError::Invalid { problems, .. }) => {
                problems.iter().map(ToString::to_string).collect()
            }
            Err(other) => panic!("expected CsvError::Invalid, got {other:?}"),
        }
    }

    const FULL_HEADER: &str = "Source ID,Source addresses,Source login,Source password,\
                               Target addresses,Target login,Target password,Stage\n";

    #[test]
    fn good_file_with_every_column() {
        let text = format!(
            "{FULL_HEADER}\
             u1,alice@Old.Example; alice.smith@old.example,alice,pw1,Alice@New.Example,alice-new,pw2,1\n\
             u2,bob@old.example,,,,,,\n"
        );
        let rows = rows(&text);
        assert_eq!(
            rows,
            vec![
                CsvRow {
                    line: 2,
                    source_id: "u1".into(),
                    source_addresses: vec![
                        "alice@old.example".into(),
                        "alice.smith@old.example".into()
                    ],
                    source_login: Some("alice".into()),
                    source_password: Some("pw1".into()),
                    target_addresses: vec!["Alice@new.example".into()],
                    target_login: Some("alice-new".into()),
                    target_password: Some("pw2".into()),
                    stage: Some(1),
                },
                CsvRow {
                    line: 3,
                    source_id: "u2".into(),
                    source_addresses: vec!["bob@old.example".into()],
                    source_login: None,
                    source_password: None,
                    target_addresses: vec![],
                    target_login: None,
                    target_password: None,
                    stage: None,
                },
            ]
        );
    }

    #[test]
    fn only_required_columns_in_any_order() {
        let rows = rows("Source addresses,Source ID\r\na@x.example,1\r\nb@x.example,2");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].source_id, "1");
        assert_eq!(rows[1].source_addresses, vec!["b@x.example"]);
        assert_eq!(rows[1].line, 3);
    }

    #[test]
    fn header_only_gives_no_rows() {
        assert!(rows("Source ID,Source addresses\n").is_empty());
    }

    #[test]
    fn byte_order_mark_is_accepted() {
        let mut bytes = b"\xEF\xBB\xBF".to_vec();
        bytes.extend_from_slice(b"Source ID,Source addresses\n1,a@x.example\n");
        let rows = parse_mailboxes_csv_bytes(Path::new("b.csv"), &bytes).unwrap();
        assert_eq!(rows[0].source_id, "1");
    }

    #[test]
    fn headers_are_case_insensitive_and_trimmed() {
        let rows = rows(" source id , SOURCE ADDRESSES,stage ,Target Login\n1,a@x.example,3,t\n");
        assert_eq!(rows[0].source_id, "1");
        assert_eq!(rows[0].stage, Some(3));
        assert_eq!(rows[0].target_login, Some("t".into()));
    }

    #[test]
    fn unknown_column_is_named() {
        assert_eq!(
            problems("Source ID,Source addresses, Department \n1,a@x.example,Sales\n"),
            vec![
                "line 1, column Department: unknown column; the columns are Source ID, Source \
                 addresses, Source login, Source password, Target addresses, Target login, \
                 Target password, Stage"
            ]
        );
    }

    #[test]
    fn missing_required_columns() {
        assert_eq!(
            problems("Source login\nalice\n"),
            vec![
                "line 1, column Source ID: required column is missing (the first line must be \
                 a header row naming the columns)",
                "line 1, column Source addresses: required column is missing (the first line \
                 must be a header row naming the columns)",
            ]
        );
    }

    #[test]
    fn duplicate_and_unnamed_columns() {
        assert_eq!(
            problems("Source ID,Source addresses,source id,,\n1,a@x.example,1,,\n"),
            vec![
                "line 1, column Source ID: the column appears twice (columns 1 and 3)",
                "line 1, column 4: the column has no name",
                "line 1, column 5: the column has no name",
            ]
        );
    }

    #[test]
    fn empty_file() {
        let expected = vec![
            "line 1: the file is empty; the first line must be a header row naming the columns",
        ];
        assert_eq!(problems(""), expected);
        assert_eq!(problems_of_bytes(b"\xEF\xBB\xBF"), expected);
    }

    #[test]
    fn required_cells_must_not_be_empty() {
        assert_eq!(
            problems("Source ID,Source addresses\n ,a@x.example\n2, ; \n"),
            vec![
                "line 2, column Source ID: required cell is empty",
                "line 3, column Source addresses: required cell is empty",
            ]
        );
    }

    #[test]
    fn several_addresses_are_split_trimmed_and_deduplicated() {
        let rows = rows(
            "Source ID,Source addresses,Target addresses\n\
             1,\" a@x.example ;; B@X.Example;a@X.EXAMPLE; \",t@Y.example;u@y.example\n",
        );
        assert_eq!(rows[0].source_addresses, vec!["a@x.example", "B@x.example"]);
        assert_eq!(rows[0].target_addresses, vec!["t@y.example", "u@y.example"]);
    }

    #[test]
    fn only_the_domain_is_lowercased() {
        assert_eq!(
            normalize_address("John.Doe@Example.COM").unwrap(),
            "John.Doe@example.com"
        );
        assert_eq!(normalize_address("j@MÜNCHEN.de").unwrap(), "j@münchen.de");
        assert_eq!(
            normalize_address("root@localhost").unwrap(),
            "root@localhost"
        );
        assert_eq!(
            normalize_address("a+tag@x-y.example").unwrap(),
            "a+tag@x-y.example"
        );
    }

    #[test]
    fn malformed_addresses_are_rejected() {
        let cases = [
            ("plain", "it has no @"),
            ("a@b@c.example", "it has more than one @"),
            ("@x.example", "nothing before the @"),
            ("a@", "nothing after the @"),
            (
                "a b@x.example",
                "it contains a space or a control character",
            ),
            ("<a@x.example>", "`<` is not allowed before the @"),
            ("a,b@x.example", "`,` is not allowed before the @"),
            (
                ".a@x.example",
                "dots before the @ must be between other characters",
            ),
            (
                "a..b@x.example",
                "dots before the @ must be between other characters",
            ),
            (
                "a@x..example",
                "the domain has an empty part (two dots, or a dot at an end)",
            ),
            (
                "a@x.example.",
                "the domain has an empty part (two dots, or a dot at an end)",
            ),
            ("a@x_y.example", "`_` is not allowed in a domain"),
            ("a@x.example>", "`>` is not allowed in a domain"),
            (
                "a@-x.example",
                "a part of the domain starts or ends with `-`",
            ),
        ];
        for (address, reason) in cases {
            assert_eq!(
                normalize_address(address),
                Err(reason.to_owned()),
                "{address}"
            );
        }
    }

    #[test]
    fn malformed_address_problem_text() {
        assert_eq!(
            problems(
                "Source ID,Source addresses,Target addresses\n1,a@x.example;oops,\"Bob <b@y>\"\n"
            ),
            vec![
                "line 2, column Source addresses: \"oops\" is not a valid email address: it has \
                 no @",
                "line 2, column Target addresses: \"Bob <b@y>\" is not a valid email address: it \
                 contains a space or a control character",
            ]
        );
    }

    #[test]
    fn duplicate_source_id_names_first_line() {
        assert_eq!(
            problems(
                "Source ID,Source addresses\nu1,a@x.example\nu2,b@x.example\nu1,c@x.example\n"
            ),
            vec!["line 4, column Source ID: Source ID \"u1\" is already used on line 2"]
        );
    }

    #[test]
    fn source_id_is_compared_exactly_after_trimming() {
        let rows = rows("Source ID,Source addresses\nU1,a@x.example\nu1,b@x.example\n");
        assert_eq!(rows.len(), 2);
        assert_eq!(
            problems("Source ID,Source addresses\nu1,a@x.example\n u1 ,b@x.example\n"),
            vec!["line 3, column Source ID: Source ID \"u1\" is already used on line 2"]
        );
    }

    #[test]
    fn duplicate_source_address_across_rows() {
        assert_eq!(
            problems("Source ID,Source addresses\nu1,a@x.example\nu2,b@x.example;A@X.example\n"),
            vec![
                "line 3, column Source addresses: A@x.example is already a source address on line 2"
            ]
        );
    }

    #[test]
    fn same_target_on_two_rows_is_allowed() {
        let rows = rows(
            "Source ID,Source addresses,Target addresses\nu1,a@x.example,t@y.example\n\
             u2,b@x.example,t@y.example\n",
        );
        assert_eq!(rows.len(), 2);
    }

    #[test]
    fn stage_must_be_a_positive_integer() {
        let rows = rows("Source ID,Source addresses,Stage\n1,a@x.example, 2 \n2,b@x.example,\n");
        assert_eq!(rows[0].stage, Some(2));
        assert_eq!(rows[1].stage, None);
        assert_eq!(
            problems(
                "Source ID,Source addresses,Stage\n1,a@x.example,0\n2,b@x.example,-1\n\
                 3,c@x.example,two\n4,d@x.example,1.5\n5,e@x.example,+3\n6,f@x.example,99999999999\n"
            ),
            vec![
                "line 2, column Stage: must be a positive whole number (1, 2, …), not \"0\"",
                "line 3, column Stage: must be a positive whole number (1, 2, …), not \"-1\"",
                "line 4, column Stage: must be a positive whole number (1, 2, …), not \"two\"",
                "line 5, column Stage: must be a positive whole number (1, 2, …), not \"1.5\"",
                "line 6, column Stage: must be a positive whole number (1, 2, …), not \"+3\"",
                "line 7, column Stage: must be a positive whole number (1, 2, …), not \
                 \"99999999999\"",
            ]
        );
    }

    #[test]
    fn logins_are_trimmed_and_passwords_kept_as_written() {
        let rows = rows(
            "Source ID,Source addresses,Source login,Source password,Target password\n\
             1,a@x.example, alice ,\" p w \",\n",
        );
        assert_eq!(rows[0].source_login, Some("alice".into()));
        assert_eq!(rows[0].source_password, Some(" p w ".into()));
        assert_eq!(rows[0].target_password, None);
    }

    #[test]
    fn invalid_utf8_is_reported_with_line_and_column() {
        let bytes =
            b"Source ID,Source addresses,Source login\n1,a@x.example,ok\n2,b@x.example,caf\xe9\n";
        assert_eq!(
            problems_of_bytes(bytes),
            vec!["line 3, column Source login: not valid UTF-8"]
        );
        let bytes = b"Source ID,Source addresses,Caf\xe9\n";
        assert_eq!(
            problems_of_bytes(bytes),
            vec!["line 1, column 3: not valid UTF-8"]
        );
    }

    #[test]
    fn line_numbers_are_physical_lines() {
        // A quoted cell spanning two lines, blank lines (LF and CRLF) and a row of empty cells.
        let text = "Source ID,Source addresses,Source password\r\n\
                    1,a@x.example,\"two\r\nlines\"\r\n\
                    \r\n\
                    \n\
                    ,,\n\
                    2,bad\n\
                    \n\
                    3,also-bad\n";
        assert_eq!(
            problems(text),
            vec![
                "line 7, column Source addresses: \"bad\" is not a valid email address: it has \
                 no @",
                "line 9, column Source addresses: \"also-bad\" is not a valid email address: it \
                 has no @",
            ]
        );
        let rows = rows(&text.replace("bad", "b@x.example").replace("also-", "c"));
        let lines: Vec<usize> = rows.iter().map(|row| row.line).collect();
        assert_eq!(lines, vec![2, 7, 9]);
        assert_eq!(rows[0].source_password, Some("two\r\nlines".into()));
    }

    #[test]
    fn extra_cells_are_rejected_unless_empty() {
        assert_eq!(
            problems("Source ID,Source addresses\n1,a@x.example,,\n2,b@x.example,oops\n"),
            vec!["line 3, column 3: this line has more cells than the header has columns (2)"]
        );
    }

    #[test]
    fn missing_trailing_cells_are_empty() {
        let rows = rows("Source ID,Source addresses,Target addresses,Stage\n1,a@x.example\n");
        assert_eq!(rows[0].target_addresses, Vec::<String>::new());
        assert_eq!(rows[0].stage, None);
        assert_eq!(
            problems("Source ID,Source addresses\n1\n"),
            vec!["line 2, column Source addresses: required cell is empty"]
        );
    }

    #[test]
    fn all_problems_are_reported_together() {
        let text = "Source ID,Source addresses,Stage,Notes\n\
                    1,a@x.example,1,\n\
                    ,b@x.example,x,\n\
                    1,c@,2,\n";
        let error = parse(text).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid mailboxes CSV boxes.csv:\n  \
             line 1, column Notes: unknown column; the columns are Source ID, Source addresses, \
             Source login, Source password, Target addresses, Target login, Target password, Stage\n  \
             line 3, column Source ID: required cell is empty\n  \
             line 3, column Stage: must be a positive whole number (1, 2, …), not \"x\"\n  \
             line 4, column Source ID: Source ID \"1\" is already used on line 2\n  \
             line 4, column Source addresses: \"c@\" is not a valid email address: nothing after \
             the @"
        );
    }

    #[test]
    fn problem_without_column_displays_line_only() {
        let problem = CsvProblem {
            line: 4,
            column: String::new(),
            message: "broken".into(),
        };
        assert_eq!(problem.to_string(), "line 4: broken");
    }

    #[test]
    fn reads_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        std::fs::write(&path, "Source ID,Source addresses\n1,a@x.example\n").unwrap();
        assert_eq!(parse_mailboxes_csv(&path).unwrap().len(), 1);

        let missing = dir.path().join("missing.csv");
        let error = parse_mailboxes_csv(&missing).unwrap_err();
        assert!(matches!(error, CsvError::Io { .. }));
        assert!(
            error.to_string().starts_with(&format!(
                "cannot read mailboxes CSV {}: ",
                missing.display()
            )),
            "{error}"
        );

        std::fs::write(&path, "Source ID,Source addresses\n1,nope\n").unwrap();
        let error = parse_mailboxes_csv(&path).unwrap_err();
        let CsvError::Invalid { file, problems } = error else {
            panic!("{error:?}")
        };
        assert_eq!(file, path);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, 2);
        assert_eq!(problems[0].column, "Source addresses");
    }
}
