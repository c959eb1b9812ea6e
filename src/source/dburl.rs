//! A database source's URL, read from the environment variable the feed
//! names (`database_url_env`): parsed once, here, for every database kind,
//! and shown only in its redacted form, because it holds the password.
//!
//! The parts are kept as written (for messages, which show exactly what the
//! user wrote with every password replaced by `***`) and percent-decoded
//! (for connecting). The forms are the Rust clients': `localhost` means
//! TCP; a MySQL socket is a `socket=` parameter
//! (`mysql://shop@localhost/shop?socket=/run/mysqld/mysqld.sock`), a
//! PostgreSQL socket folder an encoded host
//! (`postgres://shop@%2Frun%2Fpostgresql/shop`).

use std::fmt;

use crate::error::{Error, Result};

/// Query parameters whose value is a secret, redacted like the password.
const SECRET_PARAMS: [&str; 2] = ["password", "sslpassword"];

/// A parsed database URL. `Debug` and `Display` show it redacted.
#[derive(Clone, PartialEq)]
pub struct DbUrl {
    /// Lowercase: `mysql`, `mariadb`, `postgres`, `postgresql`, …
    pub scheme: String,
    /// Decoded user name and password, if given.
    pub user: Option<String>,
    pub password: Option<String>,
    /// Decoded host: a name, an IP address (IPv6 without brackets), or for
    /// PostgreSQL a socket folder (`/run/postgresql`). Empty when none.
    pub host: String,
    pub port: Option<u16>,
    /// Decoded database name, if given.
    pub database: Option<String>,
    /// Decoded query parameters, in order.
    pub params: Vec<(String, String)>,
    /// The URL as written with every secret replaced by `***`.
    shown: String,
}

impl DbUrl {
    /// Parses a URL. A malformed URL's error never repeats the URL (it may
    /// hold a password); `what` names where it came from.
    pub fn parse(text: &str) -> std::result::Result<DbUrl, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or("it is not a URL (no `scheme://`)")?;
        if scheme.is_empty()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
        {
            return Err("its scheme is not valid".into());
        }
        if rest.contains('#') {
            return Err("it has a `#` (a password with `#` must be written `%23`)".into());
        }
        // RFC 3986: the authority ends at the first `/` or `?`; the user
        // info is what comes before its last `@`.
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        // An `@` after the authority means a password with a raw `/` or
        // `?`: refused rather than half shown.
        if tail.contains('@') {
            return Err(
                "it has an `@` after the host (in a password, write `/` as `%2F`, `?` as `%3F` and `@` as `%40`)"
                    .into(),
            );
        }
        let (path, query) = match tail.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (tail, None),
        };

        let (raw_user, raw_password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => (Some(user), Some(pass)),
                None => (Some(u), None),
            },
        };
        let user = raw_user
            .filter(|u| !u.is_empty())
            .map(|u| decode(u, "the user name"))
            .transpose()?;
        let password = raw_password
            .map(|p| decode(p, "the password"))
            .transpose()?;

        let (raw_host, port) = split_port(hostport)?;
        let host = decode(
            raw_host.trim_start_matches('[').trim_end_matches(']'),
            "the host",
        )?;

        let database = match path.strip_prefix('/') {
            Some("") | None => None,
            Some(db) => Some(decode(db, "the database name")?),
        };

        let mut params = Vec::new();
        let mut shown_params = Vec::new();
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            if pair.is_empty() {
                continue;
            }
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode(k, "a parameter name")?;
            let secret = SECRET_PARAMS.contains(&key.to_ascii_lowercase().as_str());
            let value = decode(v, &format!("parameter `{key}`"))?;
            shown_params.push(if secret {
                format!("{k}=***")
            } else {
                pair.to_string()
            });
            params.push((key, value));
        }

        let mut shown = format!("{scheme}://");
        if let Some(u) = raw_user {
            shown.push_str(u);
            if raw_password.is_some() {
                shown.push_str(":***");
            }
            shown.push('@');
        }
        shown.push_str(hostport);
        shown.push_str(path);
        if !shown_params.is_empty() {
            shown.push('?');
            shown.push_str(&shown_params.join("&"));
        }
        Ok(DbUrl {
            scheme: scheme.to_ascii_lowercase(),
            user,
            password,
            host,
            port,
            database,
            params,
            shown,
        })
    }

    /// Reads and parses the URL in environment variable `var`, which feed
    /// `feed` names. Unset, empty or malformed is a config error naming
    /// the variable (never its value).
    pub fn from_env(var: &str, feed: &str) -> Result<DbUrl> {
        let named = format!("environment variable {var} (named by feeds.{feed}.database_url_env)");
        let text = match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => v,
            Ok(_) | Err(std::env::VarError::NotPresent) => {
                return Err(Error::config(format!("{named} is not set or empty")));
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(Error::config(format!("{named} is not UTF-8")));
            }
        };
        DbUrl::parse(text.trim())
            .map_err(|why| Error::config(format!("{named} does not hold a usable URL: {why}")))
    }

    /// The value of query parameter `key` (the last one given).
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `text` with every secret of this URL replaced by `***`: for a
    /// message from a driver or server, which should not hold one but is
    /// not ours to trust.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        let secrets = self.password.iter().chain(
            self.params
                .iter()
                .filter(|(k, _)| SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str()))
                .map(|(_, v)| v),
        );
        for s in secrets.filter(|s| !s.is_empty()) {
            out = out.replace(s.as_str(), "***");
        }
        out
    }
}

impl fmt::Display for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DbUrl({})", self.shown)
    }
}

/// `host[:port]`, IPv6 in brackets; the port, when given, a number.
fn split_port(hostport: &str) -> std::result::Result<(&str, Option<u16>), String> {
    let colon = if hostport.starts_with('[') {
        hostport
            .find(']')
            .ok_or("its IPv6 host has no closing `]`")?;
        hostport.rfind("]:").map(|i| i + 1)
    } else {
        hostport.rfind(':')
    };
    match colon {
        None => Ok((hostport, None)),
        Some(i) => {
            let port = &hostport[i + 1..];
            if port.is_empty() {
                return Ok((&hostport[..i], None));
            }
            // Not the port's text: a mistyped URL may have put a password there.
            let port = port
                .parse::<u16>()
                .map_err(|_| "its port is not a number (a password with `/`, `?` or `#` must be percent-encoded)")?;
            Ok((&hostport[..i], Some(port)))
        }
    }
}

/// Percent-decodes `s` into UTF-8; `what` names the part for errors.
fn decode(s: &str, what: &str) -> std::result::Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("{what} has a `%` not followed by two hex digits"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{what} is not UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_decoded_and_the_password_is_never_shown() {
        let u = DbUrl::parse(
            "mysql://sh%40p:p%40ss%3Aw%2Frd@db.example.com:3307/shop%2D1?charset=utf8",
        )
        .unwrap();
        assert_eq!(u.scheme, "mysql");
        assert_eq!(u.user.as_deref(), Some("sh@p"));
        assert_eq!(u.password.as_deref(), Some("p@ss:w/rd"));
        assert_eq!(u.host, "db.example.com");
        assert_eq!(u.port, Some(3307));
        assert_eq!(u.database.as_deref(), Some("shop-1"));
        assert_eq!(u.param("charset"), Some("utf8"));
        let shown = u.to_string();
        assert_eq!(
            shown,
            "mysql://sh%40p:***@db.example.com:3307/shop%2D1?charset=utf8"
        );
        assert_eq!(format!("{u:?}"), format!("DbUrl({shown})"));
        assert!(!shown.contains("p%40ss") && !shown.contains("p@ss"));
    }

    #[test]
    fn secret_parameters_are_redacted_too() {
        let u = DbUrl::parse(
            "postgresql://shop@db/shop?sslmode=require&password=hunter2&SSLPassword=k%26y",
        )
        .unwrap();
        assert_eq!(u.password, None);
        assert_eq!(u.param("password"), Some("hunter2"));
        assert_eq!(u.param("SSLPassword"), Some("k&y"));
        assert_eq!(
            u.to_string(),
            "postgresql://shop@db/shop?sslmode=require&password=***&SSLPassword=***"
        );
        assert_eq!(
            u.scrub("login failed for hunter2 with k&y"),
            "login failed for *** with ***"
        );
    }

    #[test]
    fn socket_forms() {
        let u = DbUrl::parse("mysql://shop@localhost/shop?socket=/run/mysqld/mysqld.sock").unwrap();
        assert_eq!(u.host, "localhost");
        assert_eq!(u.param("socket"), Some("/run/mysqld/mysqld.sock"));
        assert_eq!(u.password, None);
        assert_eq!(
            u.to_string(),
            "mysql://shop@localhost/shop?socket=/run/mysqld/mysqld.sock"
        );

        let u = DbUrl::parse("postgres://shop:pw@%2Frun%2Fpostgresql:5433/shop").unwrap();
        assert_eq!(u.host, "/run/postgresql");
        assert_eq!(u.port, Some(5433));
        assert_eq!(u.database.as_deref(), Some("shop"));
        assert_eq!(
            u.to_string(),
            "postgres://shop:***@%2Frun%2Fpostgresql:5433/shop"
        );

        let u = DbUrl::parse("mariadb://[::1]:3306").unwrap();
        assert_eq!(u.host, "::1");
        assert_eq!(u.port, Some(3306));
        assert_eq!(u.database, None);
        assert_eq!(u.user, None);
    }

    #[test]
    fn an_empty_password_and_a_password_with_an_at_sign() {
        let u = DbUrl::parse("mysql://shop:@h/db").unwrap();
        assert_eq!(u.password.as_deref(), Some(""));
        assert_eq!(u.to_string(), "mysql://shop:***@h/db");
        // The last `@` of the authority ends the user info.
        let u = DbUrl::parse("mysql://shop:a@b@h/db").unwrap();
        assert_eq!(u.password.as_deref(), Some("a@b"));
        assert_eq!(u.host, "h");
        assert_eq!(u.to_string(), "mysql://shop:***@h/db");
    }

    #[test]
    fn malformed_urls_are_refused_without_repeating_them() {
        for bad in [
            "shop:XyZ@h/db",
            "mysql://shop:pa/XyZ@h/db",
            "mysql://shop:pa?XyZ@h/db",
            "mysql://shop:pa#XyZ@h/db",
            "mysql://shop:12/XyZ@h/db",
            "mysql://shop:p%zzXyZ@h/db",
            "mysql://shop:p%ffXyZ@h/db",
            "mysql://h:XyZ/db",
        ] {
            let e = DbUrl::parse(bad).unwrap_err();
            assert!(!e.contains("XyZ"), "{bad}: {e}");
            assert!(!e.contains("shop"), "{bad}: {e}");
        }
    }

    #[test]
    fn from_env_names_the_variable_never_the_value() {
        // SAFETY: this variable is used by this test alone.
        unsafe {
            std::env::remove_var("FEEDSYNC_TEST_DBURL_UNSET");
            std::env::set_var("FEEDSYNC_TEST_DBURL_BAD", "mysql://u:se/cret@h/db");
        }
        let e = DbUrl::from_env("FEEDSYNC_TEST_DBURL_UNSET", "p").unwrap_err();
        assert_eq!(e.exit_code(), crate::exit_code::ExitCode::Config);
        assert!(e.to_string().contains("FEEDSYNC_TEST_DBURL_UNSET"), "{e}");
        assert!(e.to_string().contains("feeds.p.database_url_env"), "{e}");
        let e = DbUrl::from_env("FEEDSYNC_TEST_DBURL_BAD", "p").unwrap_err();
        assert!(e.to_string().contains("FEEDSYNC_TEST_DBURL_BAD"), "{e}");
        assert!(!e.to_string().contains("cret"), "{e}");
    }
}
