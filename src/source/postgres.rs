//! A PostgreSQL source: the feed's query on the shop's server, one item per
//! row (DESIGN.md, "Database sources").
//!
//! The query runs in one `REPEATABLE READ READ ONLY` transaction, so it
//! reads one snapshot and cannot change a table. Rows are streamed with
//! `query_raw` (`query` would collect them all first) and each value is
//! decoded here from PostgreSQL's binary format into the forms of
//! `source::values` (shared with MySQL), so a value's JSON is what
//! DESIGN.md's table says whatever the driver would make of it: `numeric`
//! keeps every digit and its declared scale, a `float4` is its shortest
//! decimal, a domain is its base type.
//!
//! Time bounds: the driver's `connect_timeout` covers only the TCP connect,
//! and a server that accepts but never answers would hold the handshake
//! for ever, so the whole connection (TCP, startup, login) runs in a thread
//! of its own that we wait for at most 30 s. (The blocking client gives us
//! no socket to close: a connection that overruns is left to its thread,
//! which drops it if it ever completes, or to the end of the process.)
//! Past that, the read is bounded by `source_timeout_secs`: a watchdog
//! sends the server a cancel request at the deadline.

use std::sync::mpsc;
use std::time::Duration;

use base64::Engine;
use postgres::config::SslMode;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{FromSql, Kind as PgKind, ToSql, Type};
use postgres::{Client, NoTls, Statement};
use serde_json::Value;

use super::dburl::DbUrl;
use super::rows::{self, Cell, Column, RowError, RowWriter, Rows};
use super::values::{self, JsonColumns};
use super::{Context, Deadline, Health, Kind, Opened};
use crate::config::Feed;
use crate::error::Result;

/// Connecting (TCP, startup and login) must finish within this.
const CONNECT_LIMIT: Duration = Duration::from_secs(30);

/// A feed whose `database_url_env` holds a `postgres://` or
/// `postgresql://` URL.
pub struct PostgresSource<'a> {
    url: DbUrl,
    config: postgres::Config,
    query: &'a str,
    json_columns: &'a [String],
}

impl<'a> PostgresSource<'a> {
    /// The source for `url`; a parameter it does not know is refused
    /// (`why`, naming the parameter, never the URL).
    pub fn new(
        url: DbUrl,
        query: &'a str,
        json_columns: &'a [String],
    ) -> std::result::Result<PostgresSource<'a>, String> {
        let config = config(&url)?;
        Ok(PostgresSource {
            url,
            config,
            query,
            json_columns,
        })
    }

    fn query(&self) -> Query {
        Query {
            url: self.url.clone(),
            config: self.config.clone(),
            query: self.query.to_string(),
            json: JsonColumns::new(self.json_columns),
        }
    }
}

/// The driver's configuration from the URL's decoded parts. `localhost`
/// (or no host) is TCP; a host that is a folder is the unix socket there.
fn config(url: &DbUrl) -> std::result::Result<postgres::Config, String> {
    let mut c = postgres::Config::new();
    let user = url
        .user
        .as_deref()
        .filter(|u| !u.is_empty())
        .ok_or("names no user (postgres://USER:PASSWORD@HOST/DATABASE)")?;
    c.user(user);
    if let Some(password) = &url.password {
        c.password(password);
    }
    if url.host.starts_with('/') {
        c.host_path(&url.host);
    } else if url.host.is_empty() {
        c.host("localhost");
    } else {
        c.host(&url.host);
    }
    c.port(url.port.unwrap_or(5432));
    if let Some(db) = url.database.as_deref().filter(|d| !d.is_empty()) {
        c.dbname(db);
    }
    c.application_name("feedsync");
    // This build speaks PostgreSQL without TLS: `prefer` (the default)
    // then means plain, and `require` cannot be met.
    c.ssl_mode(SslMode::Disable);
    for (key, value) in &url.params {
        match (key.as_str(), value.as_str()) {
            ("sslmode", "disable" | "allow" | "prefer") => {}
            ("sslmode", _) => {
                return Err(
                    "asks for TLS (`sslmode`), which this build does not speak to PostgreSQL: \
                     use a local server or a unix socket, or `sslmode=disable`"
                        .into(),
                );
            }
            ("application_name", v) => {
                c.application_name(v);
            }
            (other, _) => {
                return Err(format!(
                    "its parameter `{other}` is not one feedsync knows for PostgreSQL (it knows `sslmode` and `application_name`)"
                ));
            }
        }
    }
    Ok(c)
}

impl Kind for PostgresSource<'_> {
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
        let mut client = q.connect(&deadline).map_err(fail)?;
        q.begin(&mut client).map_err(fail)?;
        let (_, columns) = q.prepare(&mut client).map_err(fail)?;
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
    config: postgres::Config,
    query: String,
    json: JsonColumns,
}

impl Query {
    /// Connects within [`CONNECT_LIMIT`] (and the deadline, when sooner).
    /// The driver's `connect_timeout` covers only the TCP connect, so a
    /// server that accepts and then says nothing could hold the startup
    /// for ever: the connection is made in a thread of its own, and past
    /// the limit we stop waiting for it (a late connection is closed as
    /// its thread ends).
    fn connect(&self, deadline: &Deadline) -> Result<Client, RowError> {
        let limit = CONNECT_LIMIT.min(deadline.remaining());
        let mut config = self.config.clone();
        config.connect_timeout(limit.max(Duration::from_secs(1)));
        let (tx, rx) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("postgres-connect".into())
            .spawn(move || {
                // A connection made too late is dropped with the failed send.
                let _ = tx.send(config.connect(NoTls));
            })
            .map_err(|e| RowError::Query(format!("cannot start connecting: {e}")))?;
        match rx.recv_timeout(limit) {
            Ok(client) => client.map_err(|e| self.error(e)),
            Err(_) => Err(RowError::Query(format!(
                "could not connect and log in within {} s",
                limit.as_secs()
            ))),
        }
    }

    /// Opens the one read-only snapshot the query runs in. The session is
    /// read-only too, so a statement that ends the transaction (`COMMIT`)
    /// cannot leave a writable one behind.
    fn begin(&self, client: &mut Client) -> Result<(), RowError> {
        client
            .batch_execute(
                "SET default_transaction_read_only = on; \
                 BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            )
            .map_err(|e| self.error(e))
    }

    /// Prepares the query and judges its columns: every type mapped.
    fn prepare(&self, client: &mut Client) -> Result<(Statement, Vec<Column>), RowError> {
        let stmt = client.prepare(&self.query).map_err(|e| self.error(e))?;
        if !stmt.params().is_empty() {
            return Err(RowError::Bad(
                "the query has parameters (`$1` …): it must be one statement with none".into(),
            ));
        }
        if stmt.columns().is_empty() {
            return Err(RowError::Bad(
                "the query returns no columns: it must be a SELECT (it is not run)".into(),
            ));
        }
        let mut columns = Vec::with_capacity(stmt.columns().len());
        for c in stmt.columns() {
            if !mapped(c.type_()) {
                return Err(unmapped(c.name(), c.type_()));
            }
            columns.push(Column {
                name: c.name().to_string(),
                typed_json: is_json(c.type_()),
            });
        }
        Ok((stmt, columns))
    }

    /// The server's message (with its detail and hint), or the driver's
    /// with its cause (refused, reset …); never a secret.
    fn error(&self, e: postgres::Error) -> RowError {
        let text = match e.as_db_error() {
            Some(db) => {
                let mut text = format!("{}: {}", db.severity(), db.message());
                if let Some(detail) = db.detail() {
                    text.push_str(&format!(" ({detail})"));
                }
                if let Some(hint) = db.hint() {
                    text.push_str(&format!(" (hint: {hint})"));
                }
                text
            }
            None => {
                let mut text = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    let more = c.to_string();
                    if !text.contains(&more) {
                        text.push_str(&format!(": {more}"));
                    }
                    cause = c.source();
                }
                text
            }
        };
        RowError::Query(self.url.scrub(&text))
    }
}

impl Rows for Query {
    fn run(self, deadline: &Deadline, out: &mut RowWriter) -> Result<(), RowError> {
        let mut client = self.connect(deadline)?;
        // At the deadline a cancel request stops the query on the server.
        let token = client.cancel_token();
        let _watchdog = deadline.watch(move || {
            let _ = token.cancel_query(NoTls);
        });
        self.begin(&mut client)?;
        let (stmt, columns) = self.prepare(&mut client)?;
        out.typed_columns(columns)?;
        let types: Vec<Type> = stmt.columns().iter().map(|c| c.type_().clone()).collect();
        // A bytea that `json_columns` parses is given as its text.
        let as_text: Vec<bool> = (0..types.len()).map(|i| out.parses_json(i)).collect();
        // `query_raw` streams; `query` would collect every row first.
        let mut rows = client
            .query_raw(&stmt, std::iter::empty::<&dyn ToSql>())
            .map_err(|e| self.error(e))?;
        while let Some(row) = rows.next().map_err(|e| self.error(e))? {
            let row = &row;
            out.row_cells(|i, name| {
                let Raw(raw) = row.try_get(i).map_err(|e| self.error(e))?;
                let Some(raw) = raw else {
                    return Ok(Cell::Null);
                };
                let value = if as_text[i] && types[i] == Type::BYTEA {
                    str(raw).map(Cell::Str)
                } else {
                    cell(&types[i], raw)
                };
                value.map_err(|why| {
                    RowError::Bad(format!("column `{name}` ({}): {why}", type_name(&types[i])))
                })
            })?;
        }
        Ok(())
    }

    fn json_columns(&self) -> JsonColumns {
        self.json.clone()
    }
}

/// The error for a column of a type with no JSON form, with the cast that
/// gives it one.
fn unmapped(name: &str, ty: &Type) -> RowError {
    RowError::Bad(format!(
        "column `{name}` has type `{}`, which feedsync does not map to JSON: cast it to text in the query, e.g. {name}::text AS {name}",
        type_name(ty)
    ))
}

/// A value's bytes as the server sent them (binary format), or NULL.
struct Raw<'a>(Option<&'a [u8]>);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw)))
    }

    fn from_sql_null(
        _: &Type,
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// How a type is named in messages: `interval`, `interval[]`.
fn type_name(ty: &Type) -> String {
    match ty.kind() {
        PgKind::Array(elem) => format!("{}[]", type_name(elem)),
        _ => ty.name().to_string(),
    }
}

fn is_json(ty: &Type) -> bool {
    match ty.kind() {
        PgKind::Domain(base) => is_json(base),
        _ => *ty == Type::JSON || *ty == Type::JSONB,
    }
}

/// Whether [`decode`] knows `ty`.
fn mapped(ty: &Type) -> bool {
    match ty.kind() {
        PgKind::Enum(_) => true,
        PgKind::Domain(base) | PgKind::Array(base) => mapped(base),
        _ => {
            ty.name() == "citext"
                || [
                    Type::BOOL,
                    Type::INT2,
                    Type::INT4,
                    Type::INT8,
                    Type::OID,
                    Type::FLOAT4,
                    Type::FLOAT8,
                    Type::NUMERIC,
                    Type::TEXT,
                    Type::VARCHAR,
                    Type::BPCHAR,
                    Type::NAME,
                    Type::UNKNOWN,
                    Type::UUID,
                    Type::JSON,
                    Type::JSONB,
                    Type::BYTEA,
                    Type::DATE,
                    Type::TIME,
                    Type::TIMESTAMP,
                    Type::TIMESTAMPTZ,
                ]
                .contains(ty)
        }
    }
}

/// A value of a [`mapped`] type, from its binary form: [`decode`]'s
/// value, with text borrowed from the row and numbers and decimals
/// without a [`Value`] of their own.
fn cell<'r>(ty: &Type, raw: &'r [u8]) -> std::result::Result<Cell<'r>, String> {
    match ty.kind() {
        PgKind::Domain(base) => return cell(base, raw),
        PgKind::Enum(_) => return str(raw).map(Cell::Str),
        PgKind::Array(_) => return decode(ty, raw).map(Cell::Value),
        _ => {}
    }
    Ok(match *ty {
        Type::INT2 => Cell::Int(i16::from_be_bytes(fixed(raw)?).into()),
        Type::INT4 => Cell::Int(i32::from_be_bytes(fixed(raw)?).into()),
        Type::INT8 => Cell::Int(i64::from_be_bytes(fixed(raw)?)),
        Type::OID => Cell::UInt(u32::from_be_bytes(fixed(raw)?).into()),
        Type::NUMERIC => Cell::String(numeric(raw)?),
        Type::BOOL
        | Type::FLOAT4
        | Type::FLOAT8
        | Type::UUID
        | Type::JSON
        | Type::JSONB
        | Type::BYTEA
        | Type::DATE
        | Type::TIME
        | Type::TIMESTAMP
        | Type::TIMESTAMPTZ => decode(ty, raw)?.into(),
        // text, varchar, char(n), name, citext, as in `decode`
        _ => Cell::Str(str(raw)?),
    })
}

/// A value of a [`mapped`] type, from its binary form.
fn decode(ty: &Type, raw: &[u8]) -> std::result::Result<Value, String> {
    match ty.kind() {
        PgKind::Domain(base) => return decode(base, raw),
        PgKind::Array(elem) => return array(elem, raw),
        PgKind::Enum(_) => return text(raw),
        _ => {}
    }
    Ok(match *ty {
        Type::BOOL => Value::Bool(fixed::<1>(raw)?[0] != 0),
        Type::INT2 => i16::from_be_bytes(fixed(raw)?).into(),
        Type::INT4 => i32::from_be_bytes(fixed(raw)?).into(),
        Type::INT8 => i64::from_be_bytes(fixed(raw)?).into(),
        Type::OID => u32::from_be_bytes(fixed(raw)?).into(),
        Type::FLOAT4 => values::float(f32::from_be_bytes(fixed(raw)?)),
        Type::FLOAT8 => values::double(f64::from_be_bytes(fixed(raw)?)),
        Type::NUMERIC => numeric(raw)?.into(),
        Type::UUID => uuid(&fixed::<16>(raw)?).into(),
        Type::JSON => json(raw)?,
        Type::JSONB => match raw.split_first() {
            Some((1, doc)) => json(doc)?,
            _ => return Err("unknown jsonb format version".into()),
        },
        Type::BYTEA => base64::engine::general_purpose::STANDARD.encode(raw).into(),
        Type::DATE => date(i32::from_be_bytes(fixed(raw)?))?,
        Type::TIME => time_of_day(i64::from_be_bytes(fixed(raw)?))?.into(),
        Type::TIMESTAMP => timestamp(i64::from_be_bytes(fixed(raw)?), false)?,
        Type::TIMESTAMPTZ => timestamp(i64::from_be_bytes(fixed(raw)?), true)?,
        // text, varchar, char(n), name, citext
        _ => text(raw)?,
    })
}

fn fixed<const N: usize>(raw: &[u8]) -> std::result::Result<[u8; N], String> {
    raw.try_into()
        .map_err(|_| format!("{} bytes where {N} were expected", raw.len()))
}

fn text(raw: &[u8]) -> std::result::Result<Value, String> {
    str(raw).map(|s| Value::String(s.to_string()))
}

fn str(raw: &[u8]) -> std::result::Result<&str, String> {
    std::str::from_utf8(raw).map_err(|_| "not UTF-8".to_string())
}

fn json(raw: &[u8]) -> std::result::Result<Value, String> {
    serde_json::from_slice(raw).map_err(|e| format!("not JSON: {e}"))
}

/// A `numeric` exactly as PostgreSQL writes it: every digit, and the
/// declared scale's digits after the point. The binary form is base-10000
/// digits with the weight of the first, a sign, and the display scale.
fn numeric(raw: &[u8]) -> std::result::Result<String, String> {
    let word = |i: usize| -> std::result::Result<u16, String> {
        raw.get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "a truncated numeric".to_string())
    };
    let ndigits = word(0)? as usize;
    let weight = word(2)? as i16 as i64;
    let sign = word(4)?;
    let dscale = word(6)? as usize;
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        0x0000 | 0x4000 => {}
        other => return Err(format!("unknown numeric sign {other:#x}")),
    }
    let digits: Vec<u16> = (0..ndigits)
        .map(|i| word(8 + 2 * i))
        .collect::<std::result::Result<_, _>>()?;
    let digit = |g: i64| -> u16 {
        if g >= 0 && (g as usize) < digits.len() {
            digits[g as usize]
        } else {
            0
        }
    };
    let mut s = String::with_capacity(ndigits * 4 + dscale + 2);
    if sign == 0x4000 {
        s.push('-');
    }
    if weight < 0 {
        s.push('0');
    } else {
        for g in 0..=weight {
            if g == 0 {
                s.push_str(&digit(g).to_string());
            } else {
                s.push_str(&format!("{:04}", digit(g)));
            }
        }
    }
    if dscale > 0 {
        s.push('.');
        let start = s.len();
        let mut g = weight + 1;
        while s.len() - start < dscale {
            s.push_str(&format!("{:04}", digit(g)));
            g += 1;
        }
        s.truncate(start + dscale);
    }
    Ok(s)
}

fn uuid(b: &[u8; 16]) -> String {
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Days and microseconds in the binary formats count from 2000-01-01.
fn epoch() -> chrono::NaiveDateTime {
    chrono::NaiveDate::from_ymd_opt(2000, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
}

/// A `date`; PostgreSQL's `infinity` and `-infinity` as those strings.
fn date(days: i32) -> std::result::Result<Value, String> {
    use chrono::Datelike;
    match days {
        i32::MAX => Ok("infinity".into()),
        i32::MIN => Ok("-infinity".into()),
        _ => epoch()
            .date()
            .checked_add_signed(chrono::TimeDelta::days(days.into()))
            .map(|d| values::date(d.year(), d.month(), d.day()).into())
            .ok_or_else(|| format!("a date out of range ({days} days from 2000-01-01)")),
    }
}

/// A `time`, which reaches `24:00:00` in PostgreSQL.
fn time_of_day(micros: i64) -> std::result::Result<String, String> {
    if !(0..=86_400_000_000).contains(&micros) {
        return Err(format!("a time out of range ({micros} µs)"));
    }
    let secs = (micros / 1_000_000) as u64;
    Ok(values::time(
        false,
        secs / 3600,
        (secs / 60 % 60) as u32,
        (secs % 60) as u32,
        (micros % 1_000_000) as u32 * 1000,
    ))
}

/// A `timestamp` (`instant` false) or `timestamptz` (in UTC, `Z`);
/// `infinity` and `-infinity` as those strings.
fn timestamp(micros: i64, instant: bool) -> std::result::Result<Value, String> {
    use chrono::{Datelike, Timelike};
    match micros {
        i64::MAX => return Ok("infinity".into()),
        i64::MIN => return Ok("-infinity".into()),
        _ => {}
    }
    let at = epoch()
        .checked_add_signed(chrono::TimeDelta::microseconds(micros))
        .ok_or_else(|| format!("a timestamp out of range ({micros} µs from 2000-01-01)"))?;
    let date = (at.year(), at.month(), at.day());
    let time = (at.hour(), at.minute(), at.second());
    let nanos = micros.rem_euclid(1_000_000) as u32 * 1000;
    Ok(if instant {
        values::instant(date, time, nanos)
    } else {
        values::datetime(date, time, nanos)
    }
    .into())
}

/// A binary array: dimensions, then each element (NULL or its bytes), as
/// nested JSON arrays of the element values.
fn array(elem: &Type, raw: &[u8]) -> std::result::Result<Value, String> {
    let mut at = 0;
    let ndim = int4(raw, &mut at)?;
    let _has_nulls = int4(raw, &mut at)?;
    let _elem_oid = int4(raw, &mut at)?;
    let mut dims = Vec::new();
    for _ in 0..ndim {
        let len = int4(raw, &mut at)?;
        let _lower_bound = int4(raw, &mut at)?;
        dims.push(usize::try_from(len).map_err(|_| "a negative array length")?);
    }
    let total: usize = if dims.is_empty() {
        0
    } else {
        dims.iter().product()
    };
    let mut values = Vec::with_capacity(total.min(1 << 16));
    for _ in 0..total {
        let len = int4(raw, &mut at)?;
        if len < 0 {
            values.push(Value::Null);
            continue;
        }
        let end = at + len as usize;
        let bytes = raw.get(at..end).ok_or("a truncated array element")?;
        at = end;
        values.push(decode(elem, bytes)?);
    }
    Ok(nest(&dims, &mut values.into_iter()))
}

/// The big-endian `int4` at `at`, moving past it.
fn int4(raw: &[u8], at: &mut usize) -> std::result::Result<i32, String> {
    let b = raw.get(*at..*at + 4).ok_or("a truncated array")?;
    *at += 4;
    Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Flat values in row-major order as arrays nested by `dims`.
fn nest(dims: &[usize], values: &mut impl Iterator<Item = Value>) -> Value {
    match dims.split_first() {
        None => Value::Array(Vec::new()),
        Some((&n, [])) => Value::Array(values.take(n).collect()),
        Some((&n, rest)) => Value::Array((0..n).map(|_| nest(rest, values)).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The binary numeric of base-10000 `digits`.
    fn num(weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend((digits.len() as u16).to_be_bytes());
        b.extend(weight.to_be_bytes());
        b.extend(sign.to_be_bytes());
        b.extend(dscale.to_be_bytes());
        for d in digits {
            b.extend(d.to_be_bytes());
        }
        b
    }

    #[test]
    fn numeric_is_written_exactly_with_its_scale() {
        // 19.9900: digits 19 | 9900, weight 0, scale 4.
        assert_eq!(numeric(&num(0, 0, 4, &[19, 9900])).unwrap(), "19.9900");
        // -0.0012 at scale 4: one digit 12 at weight -1.
        assert_eq!(numeric(&num(-1, 0x4000, 4, &[12])).unwrap(), "-0.0012");
        // 0.00000001 at scale 8: weight -2.
        assert_eq!(numeric(&num(-2, 0, 8, &[1])).unwrap(), "0.00000001");
        // 12345678 with trailing zero groups elided by the server.
        assert_eq!(numeric(&num(1, 0, 0, &[1234, 5678])).unwrap(), "12345678");
        assert_eq!(numeric(&num(2, 0, 2, &[1])).unwrap(), "100000000.00");
        assert_eq!(numeric(&num(0, 0, 0, &[])).unwrap(), "0");
        assert_eq!(numeric(&num(0, 0, 3, &[])).unwrap(), "0.000");
        assert_eq!(numeric(&num(0, 0xC000, 0, &[])).unwrap(), "NaN");
        assert_eq!(numeric(&num(0, 0xD000, 0, &[])).unwrap(), "Infinity");
        assert_eq!(numeric(&num(0, 0xF000, 0, &[])).unwrap(), "-Infinity");
        // 40 digits, more than any fixed-size decimal holds.
        let digits: Vec<u16> = vec![1234; 10];
        assert_eq!(numeric(&num(9, 0, 0, &digits)).unwrap(), "1234".repeat(10));
    }

    #[test]
    fn times_drop_trailing_zeros_of_their_fraction() {
        assert_eq!(time_of_day(0).unwrap(), "00:00:00");
        assert_eq!(time_of_day(86_400_000_000).unwrap(), "24:00:00");
        assert_eq!(time_of_day(3_723_450_000).unwrap(), "01:02:03.45");
        assert_eq!(
            timestamp(-1, true).unwrap(),
            Value::from("1999-12-31T23:59:59.999999Z")
        );
        assert_eq!(timestamp(i64::MAX, false).unwrap(), Value::from("infinity"));
        assert_eq!(date(-1).unwrap(), Value::from("1999-12-31"));
        assert_eq!(date(i32::MIN).unwrap(), Value::from("-infinity"));
    }

    #[test]
    fn arrays_nest_by_their_dimensions() {
        let mut raw = Vec::new();
        for n in [2i32, 1, 23, 2, 1, 2, 1] {
            raw.extend(n.to_be_bytes()); // ndim, has_nulls, oid, (len, lb) × 2
        }
        for v in [Some(1i32), None, Some(3), Some(4)] {
            match v {
                Some(v) => {
                    raw.extend(4i32.to_be_bytes());
                    raw.extend(v.to_be_bytes());
                }
                None => raw.extend((-1i32).to_be_bytes()),
            }
        }
        assert_eq!(
            array(&Type::INT4, &raw).unwrap(),
            serde_json::json!([[1, null], [3, 4]])
        );
        let mut empty = Vec::new();
        for n in [0i32, 0, 23] {
            empty.extend(n.to_be_bytes());
        }
        assert_eq!(array(&Type::INT4, &empty).unwrap(), serde_json::json!([]));
    }
}
