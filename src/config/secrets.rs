//! Secrets: the config only names environment variables, and their values
//! are read only by the commands that contact the target, so `status` or
//! `items` work without them and no value is ever part of a `Config` that
//! could be printed.

use crate::error::{Error, Result};

/// Environment variable names of the secrets; the values are read only by
/// the commands that contact the target.
#[derive(Debug, Clone, Default)]
pub struct SecretNames {
    pub token_env: Option<String>,
    pub api_key_env: Option<String>,
    pub signing_secret_env: Option<String>,
}

impl SecretNames {
    /// Each secret's key in `[target]` and the variable it names, in the
    /// order they are checked and read.
    fn keys(&self) -> [(&'static str, Option<&str>); 3] {
        [
            ("token_env", self.token_env.as_deref()),
            ("api_key_env", self.api_key_env.as_deref()),
            ("signing_secret_env", self.signing_secret_env.as_deref()),
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

/// Reads the secrets the config names. Called only by commands that contact
/// the target; an unset or empty variable is a config error naming it.
pub fn read_secrets(names: &SecretNames) -> Result<Secrets> {
    let [token, api_key, signing_secret] = names.keys().map(|(key, name)| match name {
        None => Ok(None),
        Some(var) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Some(v)),
            _ => Err(Error::config(format!(
                "environment variable {var} (named by target.{key}) is not set or empty"
            ))),
        },
    });
    Ok(Secrets {
        token: token?,
        api_key: api_key?,
        signing_secret: signing_secret?,
    })
}

/// Secret values. `Debug` is written by hand so they can never be logged.
#[derive(Clone, Default)]
pub struct Secrets {
    pub token: Option<String>,
    pub api_key: Option<String>,
    pub signing_secret: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets { .. }")
    }
}
