//! Errors: what can go wrong with a job file or a secret.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Everything that can go wrong with a job file or a secret.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The job file could not be read.
    #[error("cannot read job file {}: {source}", file.display())]
    Read {
        /// The job file.
        file: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The job file was read but is not a valid job; every problem found is listed.
    #[error("invalid job file {}:{}", file.display(), ProblemLines(problems))]
    Invalid {
        /// The job file.
        file: PathBuf,
        /// What is wrong, in file order where possible.
        problems: Vec<JobProblem>,
    },
    /// A secret's environment variable is unusable.
    #[error("secret environment variable {var} {reason}")]
    SecretEnv {
        /// The variable's name.
        var: String,
        /// What is wrong with it ("is not set", "is empty", …).
        reason: &'static str,
    },
    /// A secret's file could not be read.
    #[error("cannot read secret file {}: {source}", file.display())]
    SecretFile {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A secret's file is empty.
    #[error("secret file {} is empty", file.display())]
    SecretFileEmpty {
        /// The file.
        file: PathBuf,
    },
}

/// One thing wrong in a job file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobProblem {
    /// The dotted key concerned (`source.port`), when there is one.
    pub key: Option<String>,
    /// 1-based line in the job file, when the problem has a place in it.
    pub line: Option<usize>,
    /// 1-based column (in characters) in that line.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for JobProblem {
    /// `line 3, column 8: source.port: what is wrong`, leaving out what is unknown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, "line {line}, column {column}: ")?,
            (Some(line), None) => write!(f, "line {line}: ")?,
            _ => {}
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Displays problems one per line, each on a new indented line.
struct ProblemLines<'a>(&'a [JobProblem]);

impl fmt::Display for ProblemLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for problem in self.0 {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}
