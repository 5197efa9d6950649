//! Progress on a terminal: one overall bar and one bar per mailbox being migrated (messages,
//! bytes, rate, ETA). Off a terminal nothing is drawn; `migrate` prints one line per mailbox.

use std::collections::HashMap;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use mailferry_core::model::EntryId;
use mailferry_core::ports::Observer;

pub struct Bars {
    enabled: bool,
    multi: MultiProgress,
    overall: ProgressBar,
    per_entry: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    pub fn new(enabled: bool, mailboxes: usize) -> Bars {
        let multi = MultiProgress::with_draw_target(if enabled {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let overall = multi.add(ProgressBar::new(0));
        overall.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        overall.set_prefix("all");
        overall.set_message(mailferry_core::text::counted(
            mailboxes,
            "mailbox",
            "mailboxes",
        ));
        Bars {
            enabled,
            multi,
            overall,
            per_entry: Mutex::new(HashMap::new()),
        }
    }

    pub fn finish(&self) {
        if self.enabled {
            self.overall.finish();
            for bar in self
                .per_entry
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
            {
                bar.finish();
            }
        }
    }
}

impl Observer for Bars {
    fn planned(&self, entry: &EntryId, messages: u64, bytes: u64) {
        if !self.enabled {
            return;
        }
        self.overall.inc_length(bytes);
        let bar = self.multi.add(ProgressBar::new(messages));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {pos}/{len} msgs {per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(entry.chars().take(12).collect::<String>());
        self.per_entry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(entry.to_string(), bar);
    }

    fn copied(&self, entry: &EntryId, messages: u64, bytes: u64) {
        if !self.enabled {
            return;
        }
        self.overall.inc(bytes);
        if let Some(bar) = self
            .per_entry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(entry.as_str())
        {
            bar.inc(messages);
        }
    }
}
