//! The shared corpus of 3,479 real messages, copied exactly. CI always has `../shared/corpus`;
//! a clone without it gets a failure that says so (set `MAILFERRY_CORPUS` to another copy, or
//! `MAILFERRY_NO_CORPUS=1` to leave this test out knowingly).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mailferry_core::mutf7;

use crate::lab::*;

pub fn corpus_dir() -> Option<PathBuf> {
    if std::env::var("MAILFERRY_NO_CORPUS").as_deref() == Ok("1") {
        return None;
    }
    let dir = std::env::var_os("MAILFERRY_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus")
        });
    assert!(
        dir.join("MANIFEST.tsv").is_file(),
        "The shared corpus is not at {}: put the project's shared/ beside the checkout, set \
         MAILFERRY_CORPUS=/path/to/corpus, or run with MAILFERRY_NO_CORPUS=1 to leave the \
         full-corpus test out",
        dir.display()
    );
    Some(dir)
}

/// Appends the corpus in `dir` (3,479 messages: asserted) to the user `corpus`, each folder
/// of it a folder ('/'-separated, levels in modified UTF-7), each message as `form` makes it,
/// with flags, keywords and dates from [`generated`]. Returns the server's refusals: the
/// message's path in the corpus and the server's words.
pub fn fill_corpus(
    server: &impl ImapServer,
    dir: &Path,
    form: impl Fn(&[u8]) -> Vec<u8>,
) -> Vec<(String, String)> {
    let files = messages_in(dir);
    assert_eq!(
        files.len(),
        3479,
        "the corpus README promises 3,479 messages"
    );
    let mut by_folder: BTreeMap<String, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    for (path, bytes) in files {
        let folder = path
            .rsplit_once('/')
            .map(|(f, _)| f.to_string())
            .unwrap_or_else(|| "INBOX".into());
        by_folder.entry(folder).or_default().push((path, bytes));
    }
    let mut refused = Vec::new();
    for (folder, msgs) in &by_folder {
        let raw = folder
            .split('/')
            .map(mutf7::encode)
            .collect::<Vec<_>>()
            .join("/");
        let list: Vec<Msg> = msgs
            .iter()
            .enumerate()
            .map(|(i, (_, body))| {
                let g = generated(i, 0);
                Msg {
                    body: form(body),
                    flags: g.flags,
                    date: g.date,
                }
            })
            .collect();
        for (i, why) in fill(server, "corpus", &raw, &list) {
            refused.push((msgs[i].0.clone(), why));
        }
    }
    refused
}

#[test]
fn the_shared_corpus_is_copied_exactly_and_the_empty_message_is_reported() {
    let Some(dir) = corpus_dir() else {
        eprintln!("MAILFERRY_NO_CORPUS=1: the full-corpus test was left out");
        return;
    };
    let lab = Lab::new(&["corpus"]);
    let refused = fill_corpus(&lab.source, &dir, |body| body.to_vec());
    // Dovecot refuses exactly the 0-byte file, in its own words.
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].0.ends_with("mail-sample_output_multipart.eml"),
        "{refused:?}"
    );
    eprintln!("Dovecot refused {}: {}", refused[0].0, refused[0].1);

    let v = lab.migrate_ok();
    assert_eq!(v["copied"], 3478, "{v:#}");
    assert_eq!(v["failed"], 0, "{v:#}");
    let mut src = snapshot(&lab.source, "corpus");
    assert_eq!(total(&src), 3478);
    let target = snapshot(&lab.target, "corpus");
    as_target_stores_them(&lab.target, "corpus", &mut src);
    assert_same(&src, &target, str::to_string);
}
