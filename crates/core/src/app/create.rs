//! `create`: the target mailboxes of entries waiting for creation, made in the target
//! directory by the provisioner.

use serde::Serialize;

use super::matching::{created_address, set_target};
use super::{App, AppError, Result};
use crate::model::{EntryId, NewMailbox, Origin, Side, local_part};

#[derive(Debug, Serialize)]
pub struct CreateOutcome {
    pub entries: Vec<Created>,
    pub created: usize,
    pub failed: usize,
}

/// One entry's creation: the address made, or the directory's refusal.
#[derive(Debug, Serialize)]
pub struct Created {
    pub id: EntryId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the directory had to tell besides (a Graph mailbox's wait, for instance).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Creates the target mailboxes of entries waiting for creation, one directory entry each;
/// a refusal is reported with the directory's words and never stops the others.
pub fn create(app: &App<'_>) -> Result<CreateOutcome> {
    let Some(create) = &app.job.target.create else {
        return Err(AppError::input(
            "create needs [target.create] in the job file",
        ));
    };
    let settings = app
        .directory_settings(Side::Target)?
        .ok_or_else(|| AppError::input("create needs [target.directory] in the job file"))?;
    let password = match &create.initial_password {
        Some(s) => Some(
            s.reveal()
                .map_err(|e| AppError::input(format!("target.create.initial_password: {e}")))?,
        ),
        None => None,
    };
    let mut provisioner =
        app.backends
            .provisioner(&settings)
            .map_err(|source| AppError::Directory {
                side: Side::Target,
                source,
            })?;
    let mut store = app.open_state()?;
    let mut out = Vec::new();
    for e in store
        .entries()?
        .into_iter()
        .filter(|e| e.origin == Origin::PendingCreation)
    {
        let address = e
            .target_addresses
            .first()
            .cloned()
            .unwrap_or_else(|| created_address(&e, create));
        let new = NewMailbox {
            base: create.base.clone(),
            login: local_part(&address).to_string(),
            address: address.clone(),
            display_name: e.source_display_name.clone(),
            object_classes: create.object_classes.clone(),
            password: password.clone(),
        };
        match provisioner.create(&new) {
            Ok(d) => {
                let mut u = e.clone();
                set_target(&mut u, &d, Origin::Created);
                store.upsert_entries(std::slice::from_ref(&u))?;
                out.push(Created {
                    id: e.id,
                    created: Some(d.addresses.first().cloned().unwrap_or(d.login)),
                    error: None,
                    note: provisioner.take_note(),
                });
            }
            Err(err) => out.push(Created {
                id: e.id,
                created: None,
                error: Some(err.to_string()),
                note: provisioner.take_note(),
            }),
        }
    }
    let failed = out.iter().filter(|c| c.error.is_some()).count();
    Ok(CreateOutcome {
        created: out.len() - failed,
        failed,
        entries: out,
    })
}
