//! Credentials of an object store: the standard AWS environment variables, else what
//! `metasync login NAME` stored in the system keychain (macOS Keychain, Secret Service on
//! Linux, through the `keyring` crate). Never the config.
//!
//! `METASYNC_KEYRING_FILE` replaces the system keychain with keyring's sample store kept in
//! that file: for tests and CI, which have no Secret Service to talk to.

use keyring_core::Entry;
use std::sync::Arc;

/// The keychain service name entries are stored under (the user is the location's name).
const SERVICE: &str = "metasync";

/// An access key.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The access key id.
    pub key_id: String,
    /// The secret access key.
    pub secret: String,
    /// A session token, for temporary credentials.
    pub token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, …)", self.key_id)
    }
}

/// The credentials for location `name`: `Err` says why there are none.
pub fn for_location(name: &str) -> Result<Credentials, String> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let (Some(key_id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        return Ok(Credentials {
            key_id,
            secret,
            token: env("AWS_SESSION_TOKEN"),
        });
    }
    let none = |why: String| {
        format!(
            "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run \
             `metasync login {name}` ({why})"
        )
    };
    let (entry, _store) = entry(name).map_err(none)?;
    let text = match entry.get_password() {
        Ok(t) => t,
        Err(keyring_core::Error::NoEntry) => return Err(none("none in the keychain".into())),
        Err(e) => return Err(none(format!("keychain: {e}"))),
    };
    let (key_id, secret) = text
        .split_once('\n')
        .ok_or_else(|| none("the keychain entry is not a key id and secret".into()))?;
    Ok(Credentials {
        key_id: key_id.to_string(),
        secret: secret.trim_end().to_string(),
        token: None,
    })
}

/// Stores `key_id` and `secret` for location `name` in the system keychain.
pub fn login(name: &str, key_id: &str, secret: &str) -> Result<(), String> {
    if key_id.trim().is_empty() || secret.trim().is_empty() || key_id.contains('\n') {
        return Err("the key id and the secret may not be empty".into());
    }
    let (entry, store) = entry(name)?;
    entry
        .set_password(&format!("{}\n{}", key_id.trim(), secret.trim()))
        .map_err(|e| format!("cannot store the key in the keychain: {e}"))?;
    if let Some(s) = store {
        s.save()
            .map_err(|e| format!("cannot save the test keyring file: {e}"))?;
    }
    Ok(())
}

type SampleStore = keyring_core::sample::Store;

/// The keychain entry of location `name` (and the test store to save, when one is used).
fn entry(name: &str) -> Result<(Entry, Option<Arc<SampleStore>>), String> {
    if let Some(file) = std::env::var_os("METASYNC_KEYRING_FILE") {
        let path = file.to_string_lossy().to_string();
        let store = SampleStore::new_with_backing(&path)
            .map_err(|e| format!("cannot open the test keyring {path}: {e}"))?;
        let shared: Arc<keyring_core::CredentialStore> = store.clone();
        let entry = Entry::new_in_store(&shared, SERVICE, name)
            .map_err(|e| format!("test keyring {path}: {e}"))?;
        return Ok((entry, Some(store)));
    }
    keyring::Entry::new(SERVICE, name)
        .map(|e| (e.inner, None))
        .map_err(|e| format!("the system keychain cannot be used: {e}"))
}
