//! The file-system rules every write follows: Maildir delivery through `tmp/`, atomic
//! replacement, fsyncing the directories whose entries changed, the per-folder lock, and I/O
//! errors that name the path.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use mailferry_imap::{Error, Result};

const UIDLIST_LOCK: &str = "mailferry-uidlist.lock";

/// Makes every file name this process writes unique, across all its sessions.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A folder's advisory lock (`flock`), released when dropped.
pub(super) struct FolderLock {
    _file: Option<File>,
}

impl FolderLock {
    pub(super) fn acquire(dir: &Path) -> Result<FolderLock> {
        let path = dir.join(UIDLIST_LOCK);
        let file = match OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
        {
            Ok(file) => file,
            // A read-only source: no session can change it, so there is nothing to exclude.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem
                ) =>
            {
                return Ok(FolderLock { _file: None });
            }
            Err(e) => return Err(io_err("lock", &path)(e)),
        };
        file.lock().map_err(io_err("lock", &path))?;
        Ok(FolderLock { _file: Some(file) })
    }
}

/// `<secs>.M<micros>P<pid>Q<counter>.mailferry,S=<size>`: the Maildir unique name, with the
/// size where Dovecot looks for it.
pub(super) fn unique_base(size: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}.M{}P{}Q{}.mailferry,S={size}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Writes one message into `tmp/`, makes it durable, and renames it into `cur/` (the Maildir
/// delivery protocol: no reader ever sees half a message). Returns its name in `cur/`.
pub(super) fn deliver(
    dir: &Path,
    message: &[u8],
    letters: &str,
    date: Option<SystemTime>,
) -> Result<String> {
    let base = unique_base(message.len() as u64);
    let tmp = dir.join("tmp").join(&base);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    let written = file
        .write_all(message)
        // After the last write, which would move the mtime again.
        .and_then(|()| date.map_or(Ok(()), |t| file.set_modified(t)))
        .and_then(|()| file.sync_all());
    drop(file);
    let name = format!("{base}:2,{letters}");
    let dest = dir.join("cur").join(&name);
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, &dest)) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("store", &dest)(e));
    }
    Ok(name)
}

/// Creates `cur/`, `new/` and `tmp/` as needed, durably.
pub(super) fn make_maildir(dir: &Path) -> Result<()> {
    for sub in ["cur", "new", "tmp"] {
        let path = dir.join(sub);
        fs::create_dir_all(&path).map_err(io_err("create", &path))?;
    }
    sync_dir(dir)
}

/// Replaces a file's contents in one step: a reader sees the old file or the new one.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A dot file, so neither a Maildir reader nor the folder listing takes it for anything.
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, path))
        .and_then(|()| sync_dir_io(dir));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes a directory's entries (a rename, a new file) durable.
pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    sync_dir_io(dir).map_err(io_err("sync", dir))
}

fn sync_dir_io(dir: &Path) -> io::Result<()> {
    // Only Unix lets a directory be opened and fsynced.
    if cfg!(unix) {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// An I/O error with what was being done to which path.
pub(super) fn io_err(action: &str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let context = format!("Cannot {action} {}", path.display());
    move |e| Error::Io(io::Error::new(e.kind(), format!("{context}: {e}")))
}
