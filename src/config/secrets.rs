//! Secrets: the config only names environment variables, and their values
//! are read only by the commands that contact the target, so `status` or
//! `items` work without them and no value is ever part of a `Config` that
//! could be printed. Each target (`[target]`, every `[targets.NAME]`) has
//! its own, so two services get two keys.

use std::collections::HashMap;

use base64::Engine;

use super::{Signature, TargetSettings};
use crate::error::{Error, Result};

/// Environment variable names of one target's secrets; the values are read
/// only by the commands that contact the target.
#[derive(Debug, Clone, Default)]
pub struct SecretNames {
    /// The table they were written in (`target`, `targets.search`), for
    /// errors.
    pub table: String,
    pub token_env: Option<String>,
    pub api_key_env: Option<String>,
    pub signing_secret_env: Option<String>,
    pub password_env: Option<String>,
}

impl SecretNames {
    /// Each secret's key in its table and the variable it names, in the
    /// order they are checked and read.
    pub(super) fn keys(&self) -> [(&'static str, Option<&str>); 4] {
        [
            ("token_env", self.token_env.as_deref()),
            ("api_key_env", self.api_key_env.as_deref()),
            ("signing_secret_env", self.signing_secret_env.as_deref()),
            ("password_env", self.password_env.as_deref()),
        ]
    }

    /// The first key whose value cannot be an environment variable's name.
    pub(super) fn invalid_key(&self) -> Option<&'static str> {
        self.keys().into_iter().find_map(|(key, name)| {
            name.filter(|n| n.is_empty() || n.contains('='))
                .map(|_| key)
        })
    }
}

/// Reads the secrets a target's config names. Called only by commands that
/// contact the target; an unset or empty variable is a config error naming
/// it, and so is a Standard Webhooks secret not written `whsec_<base64>`.
pub fn read_secrets(target: &TargetSettings) -> Result<Secrets> {
    let names = &target.secrets;
    let [token, api_key, signing_secret, password] = names.keys().map(|(key, name)| match name {
        None => Ok(None),
        Some(var) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Some(v)),
            _ => Err(Error::config(format!(
                "environment variable {var} (named by {}.{key}) is not set or empty",
                names.table
            ))),
        },
    });
    let secrets = Secrets {
        token: token?,
        api_key: api_key?,
        signing_secret: signing_secret?,
        password: password?,
    };
    if target.signature == Signature::Standard
        && let Some(secret) = &secrets.signing_secret
        && standard_key(secret).is_none()
    {
        let var = names.signing_secret_env.as_deref().unwrap_or_default();
        return Err(Error::config(format!(
            "environment variable {var} (named by {}.signing_secret_env) must hold a Standard Webhooks secret, `whsec_` and then base64, as the libraries write it (signature = \"standard\")",
            names.table
        )));
    }
    Ok(secrets)
}

/// The HMAC key of a Standard Webhooks secret: the base64 after `whsec_`.
pub fn standard_key(secret: &str) -> Option<Vec<u8>> {
    let b64 = secret.strip_prefix("whsec_")?;
    let key = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    (!key.is_empty()).then_some(key)
}

/// Secret values of one target. `Debug` is written by hand so they can
/// never be logged.
#[derive(Clone, Default)]
pub struct Secrets {
    pub token: Option<String>,
    pub api_key: Option<String>,
    pub signing_secret: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets { .. }")
    }
}

/// Every feed's target secrets, read once for a command that contacts the
/// targets (`Config::secrets`).
#[derive(Clone, Default)]
pub struct FeedSecrets(HashMap<String, Secrets>);

impl FeedSecrets {
    /// Reads the secrets of each feed's target: the first variable that is
    /// unset, empty or malformed is the error.
    pub fn read<'f>(feeds: impl IntoIterator<Item = &'f super::Feed>) -> Result<FeedSecrets> {
        let mut all = HashMap::new();
        for feed in feeds {
            all.insert(feed.name.clone(), read_secrets(&feed.target)?);
        }
        Ok(FeedSecrets(all))
    }

    /// A feed's target secrets (none when they were not read: a dry run).
    pub fn of(&self, feed: &str) -> Secrets {
        self.0.get(feed).cloned().unwrap_or_default()
    }
}

impl std::fmt::Debug for FeedSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FeedSecrets { .. }")
    }
}
