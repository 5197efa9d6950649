//! Creating a mailbox in Entra ID: the user (`POST /users`), its licence
//! (`POST /users/{id}/assignLicense`, which makes Exchange Online provision a mailbox), and a
//! bounded wait until the mailbox answers (`GET /users/{id}/mailboxSettings` is `200` rather
//! than `404` / `MailboxNotEnabledForRESTAPI`).

use std::time::{Duration, Instant};

use mailferry_core::model::{DirectoryMailbox, MailboxId, NewMailbox};
use mailferry_core::ports::DirectoryError;
use serde_json::json;

use super::GraphDirectory;
use crate::oauth2::http::Request;

impl GraphDirectory {
    pub(super) fn create_user(
        &mut self,
        m: &NewMailbox,
    ) -> Result<DirectoryMailbox, DirectoryError> {
        let config = |reason: &str| DirectoryError::Config {
            url: self.url.clone(),
            reason: reason.to_string(),
        };
        let Some(create) = self.create.clone() else {
            return Err(config(
                "creating users in Microsoft Graph needs [target.create] with license_sku and \
                 usage_location",
            ));
        };
        let Some(password) = m.password.as_deref() else {
            return Err(config(
                "Entra ID creates no user without a password: set initial_password in \
                 [target.create]",
            ));
        };
        let upn = m.address.clone();
        let body = json!({
            "accountEnabled": true,
            "displayName": m.display_name.clone().unwrap_or_else(|| m.login.clone()),
            "mailNickname": m.login,
            "userPrincipalName": upn,
            "usageLocation": create.usage_location,
            "passwordProfile": {
                "forceChangePasswordNextSignIn": true,
                "password": password,
            },
        });
        let operation = format!("create user {upn}");
        let url = self.url_of("/users");
        let response = self.send(&operation, |token| {
            Request::json("POST", url.clone(), &body).bearer(token)
        })?;
        let created = self.json_answer(&operation, &response)?;
        let Some(id) = created
            .get("id")
            .and_then(|v| v.as_str())
            .map(str::to_string)
        else {
            return Err(DirectoryError::Connection {
                url: self.url.clone(),
                operation,
                reason: "the answer has no id".into(),
            });
        };
        // The licence: without it Exchange Online makes no mailbox.
        let operation = format!("assign licence {} to {upn}", create.license_sku);
        let licence = json!({
            "addLicenses": [{"disabledPlans": [], "skuId": create.license_sku}],
            "removeLicenses": [],
        });
        let url = self.url_of(&format!("/users/{id}/assignLicense"));
        let response = self.send(&operation, |token| {
            Request::json("POST", url.clone(), &licence).bearer(token)
        })?;
        if let Err(e) = self.json_answer(&operation, &response) {
            return Err(DirectoryError::Entry {
                url: self.url.clone(),
                dn: format!("users/{id}"),
                reason: format!(
                    "the user {upn} was created (id {id}) but has no licence, so no mailbox: \
                     {e}; assign the licence in the admin center and match the entry with \
                     --set, or delete the user and create again"
                ),
            });
        }
        self.note = Some(self.wait_for_mailbox(&id, create.mailbox_wait_seconds)?);
        let mailbox = self.lookup_id(&id)?;
        Ok(match mailbox {
            Some(mb) => mb,
            // Not readable as a mailbox yet (no mail): what was asked for.
            None => DirectoryMailbox {
                id: MailboxId::new(id.to_ascii_lowercase()),
                dn: format!("users/{id}"),
                login: upn.clone(),
                addresses: vec![upn],
                display_name: m.display_name.clone(),
            },
        })
    }

    /// Waits up to `seconds` for the new mailbox to answer; what happened, in words. A refusal
    /// other than "not there yet" (a missing permission) stops the wait and is told.
    fn wait_for_mailbox(&self, id: &str, seconds: u64) -> Result<String, DirectoryError> {
        if seconds == 0 {
            return Ok(
                "licence assigned; not waiting for the mailbox (mailbox_wait_seconds = 0)".into(),
            );
        }
        let started = Instant::now();
        let limit = Duration::from_secs(seconds);
        let url = self.url_of(&format!("/users/{id}/mailboxSettings"));
        let operation = format!("read mailbox settings of {id}");
        loop {
            let response = self.send(&operation, |token| {
                Request::new("GET", url.clone()).bearer(token)
            })?;
            match response.status {
                200 => {
                    return Ok(format!(
                        "licence assigned; the mailbox answered after {} s",
                        started.elapsed().as_secs()
                    ));
                }
                404 => {}
                _ => {
                    let e = self.refusal(&operation, &response);
                    return Ok(format!(
                        "licence assigned; could not wait for the mailbox: {e}"
                    ));
                }
            }
            if started.elapsed() + self.poll > limit {
                return Ok(format!(
                    "licence assigned, but the mailbox did not answer within {seconds} s \
                     (Exchange Online may still be provisioning it; mail cannot be copied to it \
                     until it does)"
                ));
            }
            std::thread::sleep(self.poll);
        }
    }
}
