//! Secrets: where a password is found, and reading it when a connection is made.

use std::path::PathBuf;

use super::JobError;

/// Where a secret can be found. It never holds the secret itself, so printing it (`Debug`) is
/// safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// An environment variable, by name.
    Env(String),
    /// A file (absolute path) whose content is the secret.
    File(PathBuf),
}

impl Secret {
    /// Reads the secret: the environment variable's value, or the file's content without one
    /// trailing newline.
    ///
    /// # Errors
    ///
    /// [`JobError::SecretEnv`] when the variable is unset, empty or not UTF-8;
    /// [`JobError::SecretFile`] when the file cannot be read; [`JobError::SecretFileEmpty`].
    /// Each names the variable or the file, never the secret.
    pub fn reveal(&self) -> Result<String, JobError> {
        match self {
            Secret::Env(var) => env_secret(var, std::env::var(var)),
            Secret::File(file) => {
                let text =
                    std::fs::read_to_string(file).map_err(|source| JobError::SecretFile {
                        file: file.clone(),
                        source,
                    })?;
                let value = text
                    .strip_suffix("\r\n")
                    .or_else(|| text.strip_suffix('\n'))
                    .unwrap_or(&text);
                if value.is_empty() {
                    return Err(JobError::SecretFileEmpty { file: file.clone() });
                }
                Ok(value.to_owned())
            }
        }
    }
}

/// The secret in environment variable `var`, given what reading it gave.
pub(super) fn env_secret(
    var: &str,
    value: Result<String, std::env::VarError>,
) -> Result<String, JobError> {
    let reason = match value {
        Ok(value) if !value.is_empty() => return Ok(value),
        Ok(_) => "is empty",
        Err(std::env::VarError::NotPresent) => "is not set",
        Err(std::env::VarError::NotUnicode(_)) => "is not valid UTF-8",
    };
    Err(JobError::SecretEnv {
        var: var.to_owned(),
        reason,
    })
}
