//! A MySQL or MariaDB source (`mysql://`, `mariadb://`): the feed's query
//! on the shop's own database, one item per row.
//!
//! What keeps it safe for the shop's database: the session runs in UTC
//! (`time_zone = '+00:00'`, so `TIMESTAMP`s and `NOW()` do not shift with
//! the server's zone), the query runs in one `START TRANSACTION WITH
//! CONSISTENT SNAPSHOT, READ ONLY` (a consistent catalog, and no table
//! written), as a prepared statement (the binary protocol carries typed
//! values, so `BIGINT UNSIGNED` and `FLOAT` arrive exact), and its rows
//! are read one at a time as the server sends them (memory stays flat).
//! Connecting is bounded by 30 s; at `source_timeout_secs` a second
//! connection sends `KILL QUERY`, so the server stops working too.
//!
//! Each column's type decides its JSON form once, before any row
//! ([`Map`]); the forms themselves are [`super::values`], shared with
//! PostgreSQL.

use std::sync::mpsc;
use std::time::Duration;

use base64::Engine;
use mysql::consts::{ColumnFlags, ColumnType};
use mysql::prelude::Queryable;
use mysql::{Conn, Opts, OptsBuilder, SslOpts};

use super::dburl::DbUrl;
use super::rows::{self, Cell, Column, RowError, RowWriter, Rows};
use super::values::{self, JsonColumns};
use super::{Context, Deadline, Health, Kind, Opened};
use crate::config::Feed;
use crate::error::Result;

/// Connecting (TCP, TLS, handshake and login) must finish within this.
const CONNECT_LIMIT: Duration = Duration::from_secs(30);

/// The character set MySQL reports for binary strings.
const BINARY_CHARSET: u16 = 63;

/// A feed whose `database_url_env` holds a `mysql://` or `mariadb://` URL.
pub struct MysqlSource<'a> {
    url: DbUrl,
    opts: Opts,
    query: &'a str,
    json_columns: &'a [String],
}

impl<'a> MysqlSource<'a> {
    /// The source for `url`; a parameter it does not know is refused
    /// (`why`, naming the parameter, never the URL).
    pub fn new(
        url: DbUrl,
        query: &'a str,
        json_columns: &'a [String],
    ) -> std::result::Result<MysqlSource<'a>, String> {
        let opts = options(&url)?;
        Ok(MysqlSource {
            url,
            opts,
            query,
            json_columns,
        })
    }

    fn query(&self) -> Query {
        Query {
            url: self.url.clone(),
            opts: self.opts.clone(),
            query: self.query.to_string(),
            json: JsonColumns::new(self.json_columns),
        }
    }
}

/// The connection options a URL says, plus feedsync's own: TCP for
/// `localhost` (no switch to a socket behind the user's back), UTC, and
/// no statement cache (one statement per connection).
fn options(url: &DbUrl) -> std::result::Result<Opts, String> {
    let mut b = OptsBuilder::new()
        .ip_or_hostname(Some(if url.host.is_empty() {
            "localhost".to_string()
        } else {
            url.host.clone()
        }))
        .tcp_port(url.port.unwrap_or(3306))
        .user(url.user.clone())
        .pass(url.password.clone())
        .db_name(url.database.clone())
        .prefer_socket(false)
        .stmt_cache_size(Some(0))
        .init(vec!["SET time_zone = '+00:00'"]);
    let mut mode = None;
    let mut ca = None;
    for (key, value) in &url.params {
        match key.as_str() {
            "socket" => b = b.socket(Some(value.clone())),
            "ssl-mode" => mode = Some(value.to_ascii_uppercase()),
            "ssl-ca" => ca = Some(std::path::PathBuf::from(value)),
            other => {
                return Err(format!(
                    "its parameter `{other}` is not one feedsync knows for MySQL/MariaDB \
                     (it knows `socket`, `ssl-mode` and `ssl-ca`)"
                ));
            }
        }
    }
    // MySQL's own `--ssl-mode` names; `ssl-ca` alone verifies the chain, as
    // in MySQL's client. (A unix socket is never encrypted.)
    let mode = mode.unwrap_or_else(|| {
        if ca.is_some() {
            "VERIFY_CA"
        } else {
            "DISABLED"
        }
        .into()
    });
    let tls = SslOpts::default().with_root_cert_path(ca);
    b = b.ssl_opts(match mode.as_str() {
        "DISABLED" => None,
        "REQUIRED" => Some(tls.with_danger_accept_invalid_certs(true)),
        "VERIFY_CA" => Some(tls.with_danger_skip_domain_validation(true)),
        "VERIFY_IDENTITY" => Some(tls),
        _ => {
            return Err(
                "its parameter `ssl-mode` must be DISABLED, REQUIRED, VERIFY_CA or VERIFY_IDENTITY"
                    .into(),
            );
        }
    });
    Ok(b.into())
}

impl Kind for MysqlSource<'_> {
    fn open(&self, _: &Feed, _: &Context<'_>, deadline: Deadline) -> Result<Opened> {
        rows::stream(self.url.to_string(), self.query(), deadline)
    }

    /// Connects and prepares the query, which checks its syntax, its
    /// tables and its columns' names and types, without running it.
    fn check(&self, _: &Feed, cx: &Context<'_>, _: usize) -> Result<Health> {
        let q = self.query();
        let deadline = Deadline::after(cx.timeout);
        let place = self.url.to_string();
        let fail = |e: RowError| e.before_rows(&deadline, &place);
        let mut conn = q.connect(&deadline).map_err(fail)?;
        let (_, columns) = q.prepare(&mut conn).map_err(fail)?;
        rows::check_result(
            &columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
            &q.json,
        )
        .map_err(fail)?;
        Ok(Health::Readable)
    }

    fn fix(&self, feed: &Feed) -> String {
        rows::fix(feed)
    }
}

/// The query, owned by the thread that runs it.
struct Query {
    url: DbUrl,
    opts: Opts,
    query: String,
    json: JsonColumns,
}

/// What a column's values become, decided once from its type.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Map {
    /// `SELECT NULL`: every value is null.
    Null,
    /// Integers of any size, `YEAR`.
    Number,
    Float,
    Double,
    /// `DECIMAL`: the server's text, every digit.
    Decimal,
    Text,
    /// Binary strings: base64 (or text, for a `json_columns` column).
    Binary,
    Json,
    Date,
    DateTime,
    /// `TIMESTAMP`: an instant, in the session's UTC.
    Timestamp,
    Time,
}

impl Query {
    /// Connects within [`CONNECT_LIMIT`] (and the deadline). The driver
    /// bounds a connect only by per-read timeouts, so a server that
    /// trickles its handshake could hold it longer: it runs in a thread of
    /// its own, left to its read timeouts if it overruns.
    fn connect(&self, deadline: &Deadline) -> Result<Conn, RowError> {
        let limit = CONNECT_LIMIT.min(deadline.remaining());
        // Reads after connecting are bounded by the deadline's watchdog
        // (`KILL QUERY`); this timeout is the backstop for a server that
        // ignores that too.
        let backstop = deadline.remaining() + Duration::from_secs(10);
        let opts: Opts = OptsBuilder::from_opts(self.opts.clone())
            .tcp_connect_timeout(Some(limit))
            .read_timeout(Some(backstop))
            .write_timeout(Some(backstop))
            .into();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(Conn::new(opts));
        });
        match rx.recv_timeout(limit) {
            Ok(conn) => conn.map_err(|e| self.error(e)),
            Err(_) => Err(RowError::Query(format!(
                "could not connect within {} s",
                limit.as_secs()
            ))),
        }
    }

    /// Prepares the query and judges its columns.
    fn prepare(&self, conn: &mut Conn) -> Result<(mysql::Statement, Vec<Column>), RowError> {
        let stmt = conn.prep(&self.query).map_err(|e| self.error(e))?;
        if stmt.num_params() > 0 {
            return Err(RowError::Bad(
                "the query has parameters (`?`): it must be one statement with none".into(),
            ));
        }
        if stmt.columns().is_empty() {
            return Err(RowError::Bad(
                "the query returns no columns: it must be a SELECT (it is not run)".into(),
            ));
        }
        let mut columns = Vec::with_capacity(stmt.columns().len());
        for c in stmt.columns().iter() {
            let name = c.name_str().into_owned();
            let map = map(c).map_err(|ty| unmapped(&name, &ty))?;
            columns.push(Column {
                name,
                typed_json: map == Map::Json,
            });
        }
        Ok((stmt, columns))
    }

    /// A driver or server error, with the server's message and no secret.
    fn error(&self, e: mysql::Error) -> RowError {
        let text = match &e {
            mysql::Error::MySqlError(m) => format!("{} (error {})", m.message, m.code),
            mysql::Error::IoError(io) => format!("cannot reach the server: {io}"),
            mysql::Error::DriverError(
                d @ (mysql::DriverError::CouldNotConnect(_) | mysql::DriverError::ConnectTimeout),
            ) => format!("cannot reach the server: {d}"),
            mysql::Error::DriverError(d) => d.to_string(),
            other => other.to_string(),
        };
        RowError::Query(self.url.scrub(&text))
    }
}

impl Rows for Query {
    fn run(self, deadline: &Deadline, out: &mut RowWriter) -> Result<(), RowError> {
        let mut conn = self.connect(deadline)?;
        // At the deadline, a second connection stops the query on the
        // server (a connection may always kill its own user's queries).
        let id = conn.connection_id();
        let opts: Opts = OptsBuilder::from_opts(self.opts.clone())
            .tcp_connect_timeout(Some(Duration::from_secs(5)))
            .read_timeout(Some(Duration::from_secs(5)))
            .write_timeout(Some(Duration::from_secs(5)))
            .into();
        let _watchdog = deadline.watch(move || {
            if let Ok(mut c) = Conn::new(opts) {
                let _ = c.query_drop(format!("KILL QUERY {id}"));
            }
        });
        // Read-only for the session as well as the transaction: a statement
        // that commits implicitly (DDL) ends the transaction, not the rule.
        for sql in [
            "SET SESSION TRANSACTION READ ONLY",
            "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
        ] {
            conn.query_drop(sql).map_err(|e| self.error(e))?;
        }
        let (stmt, columns) = self.prepare(&mut conn)?;
        let maps: Vec<Map> = stmt
            .columns()
            .iter()
            .map(|c| map(c).expect("checked by prepare"))
            .collect();
        out.typed_columns(columns)?;
        let as_text: Vec<bool> = (0..maps.len()).map(|i| out.parses_json(i)).collect();
        let result = conn.exec_iter(&stmt, ()).map_err(|e| self.error(e))?;
        for row in result {
            let cells = row.map_err(|e| self.error(e))?.unwrap();
            let cells = &cells;
            out.row_cells(|i, name| {
                value(maps[i], &cells[i], as_text[i])
                    .map_err(|why| RowError::Bad(format!("column `{name}`: {why}")))
            })?;
        }
        Ok(())
    }

    fn json_columns(&self) -> JsonColumns {
        self.json.clone()
    }
}

/// A column's [`Map`], or its type's name when it has no JSON form here.
fn map(c: &mysql::Column) -> std::result::Result<Map, String> {
    use ColumnType::*;
    let binary = c.character_set() == BINARY_CHARSET
        && !c
            .flags()
            .intersects(ColumnFlags::ENUM_FLAG | ColumnFlags::SET_FLAG);
    Ok(match c.column_type() {
        MYSQL_TYPE_NULL => Map::Null,
        MYSQL_TYPE_TINY | MYSQL_TYPE_SHORT | MYSQL_TYPE_LONG | MYSQL_TYPE_INT24
        | MYSQL_TYPE_LONGLONG | MYSQL_TYPE_YEAR => Map::Number,
        MYSQL_TYPE_FLOAT => Map::Float,
        MYSQL_TYPE_DOUBLE => Map::Double,
        MYSQL_TYPE_DECIMAL | MYSQL_TYPE_NEWDECIMAL => Map::Decimal,
        MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => Map::Date,
        MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2 => Map::DateTime,
        MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => Map::Timestamp,
        MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => Map::Time,
        MYSQL_TYPE_JSON => Map::Json,
        MYSQL_TYPE_VARCHAR
        | MYSQL_TYPE_VAR_STRING
        | MYSQL_TYPE_STRING
        | MYSQL_TYPE_ENUM
        | MYSQL_TYPE_SET
        | MYSQL_TYPE_TINY_BLOB
        | MYSQL_TYPE_MEDIUM_BLOB
        | MYSQL_TYPE_LONG_BLOB
        | MYSQL_TYPE_BLOB => {
            if binary {
                Map::Binary
            } else {
                Map::Text
            }
        }
        MYSQL_TYPE_BIT => return Err("BIT".into()),
        MYSQL_TYPE_GEOMETRY => return Err("GEOMETRY".into()),
        other => {
            let name = format!("{other:?}");
            return Err(name.trim_start_matches("MYSQL_TYPE_").to_string());
        }
    })
}

/// The error for a column of a type with no JSON form, with the cast that
/// gives it one.
fn unmapped(name: &str, ty: &str) -> RowError {
    let cast = match ty {
        "BIT" => format!("CAST(`{name}` AS UNSIGNED) AS `{name}`"),
        "GEOMETRY" => format!("ST_AsText(`{name}`) AS `{name}`"),
        _ => format!("CAST(`{name}` AS CHAR) AS `{name}`"),
    };
    RowError::Bad(format!(
        "column `{name}` has type {ty}, which feedsync does not map to JSON: cast it to text in the query, e.g. {cast}"
    ))
}

/// One value's JSON form; `as_text` for a binary string that
/// `json_columns` will parse. Text is borrowed from the row.
fn value(map: Map, v: &mysql::Value, as_text: bool) -> std::result::Result<Cell<'_>, String> {
    use mysql::Value as V;
    Ok(match (map, v) {
        (_, V::NULL) | (Map::Null, _) => Cell::Null,
        (Map::Number, &V::Int(i)) => Cell::Int(i),
        (Map::Number, &V::UInt(u)) => Cell::UInt(u),
        (Map::Float, &V::Float(f)) => values::float(f).into(),
        (Map::Float | Map::Double, &V::Double(f)) => values::double(f).into(),
        (Map::Double, &V::Float(f)) => values::double(f64::from(f)).into(),
        (Map::Decimal | Map::Text, V::Bytes(b)) => Cell::Str(text(b)?),
        (Map::Binary, V::Bytes(b)) if as_text => Cell::Str(text(b)?),
        (Map::Binary, V::Bytes(b)) => {
            Cell::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        (Map::Json, V::Bytes(b)) => Cell::Value(
            serde_json::from_slice(b)
                .map_err(|e| format!("the server's JSON does not parse: {e}"))?,
        ),
        // MySQL's zero dates (WordPress's default) have no calendar date.
        (Map::Date | Map::DateTime | Map::Timestamp, V::Date(0, 0, 0, ..)) => Cell::Null,
        (Map::Date, &V::Date(y, m, d, ..)) => {
            Cell::String(values::date(y.into(), m.into(), d.into()))
        }
        (Map::DateTime, &V::Date(y, mo, d, h, mi, s, us)) => Cell::String(values::datetime(
            (y.into(), mo.into(), d.into()),
            (h.into(), mi.into(), s.into()),
            us * 1000,
        )),
        (Map::Timestamp, &V::Date(y, mo, d, h, mi, s, us)) => Cell::String(values::instant(
            (y.into(), mo.into(), d.into()),
            (h.into(), mi.into(), s.into()),
            us * 1000,
        )),
        (Map::Time, &V::Time(negative, days, h, mi, s, us)) => Cell::String(values::time(
            negative,
            u64::from(days) * 24 + u64::from(h),
            mi.into(),
            s.into(),
            us * 1000,
        )),
        (map, v) => return Err(format!("a {v:?} value where a {map:?} was announced")),
    })
}

fn text(b: &[u8]) -> std::result::Result<&str, String> {
    std::str::from_utf8(b).map_err(|_| "the text is not UTF-8".to_string())
}
