//! The JSON form of database values, written once for every database
//! server kind (DESIGN.md, "Database sources"): what a float, a decimal,
//! a date or a time becomes is decided here, so MySQL and PostgreSQL
//! agree, and a driver change (text protocol or binary, micro- or
//! nanoseconds) never changes a value, and with it a hash.

use serde_json::{Number, Value};

/// A double: the shortest decimal that reads back as the same value;
/// NaN and the infinities, which JSON has no number for, as strings.
pub fn double(f: f64) -> Value {
    match Number::from_f64(f) {
        Some(n) => Value::Number(n),
        None => non_finite(f),
    }
}

/// A single-precision float: the shortest decimal that reads back as the
/// same `f32` (`FLOAT` 1.1 is `1.1`, not the `1.100000023841858` its
/// widening to a double would print).
pub fn float(f: f32) -> Value {
    if !f.is_finite() {
        return non_finite(f64::from(f));
    }
    // `Display` writes the shortest decimal that round-trips as an f32;
    // that decimal read as an f64 prints back the same digits.
    let shortest: f64 = f.to_string().parse().expect("a float's own digits parse");
    double(shortest)
}

fn non_finite(f: f64) -> Value {
    Value::String(
        if f.is_nan() {
            "NaN"
        } else if f > 0.0 {
            "Infinity"
        } else {
            "-Infinity"
        }
        .into(),
    )
}

/// `.fraction` of a second from nanoseconds, without trailing zeros, and
/// nothing at all when zero.
pub fn fraction(nanos: u32) -> String {
    let mut s = String::new();
    push_fraction(&mut s, nanos);
    s
}

// The forms below are written digit by digit rather than with `format!`:
// a 1M-row table has a million of them per column, and a sync's time is
// the time of its query's thread. The tests hold them to the `format!`
// forms they replace.

fn push_fraction(s: &mut String, nanos: u32) {
    if nanos == 0 {
        return;
    }
    if nanos >= 1_000_000_000 {
        s.push_str(format!(".{nanos:09}").trim_end_matches('0'));
        return;
    }
    let mut digits = [0u8; 9];
    let mut n = nanos;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let len = 9 - digits.iter().rev().take_while(|&&d| d == b'0').count();
    s.push('.');
    s.push_str(std::str::from_utf8(&digits[..len]).expect("digits"));
}

/// `n` with at least two digits (`{n:02}`).
fn push2(s: &mut String, n: u64) {
    if n < 100 {
        s.push(char::from(b'0' + (n / 10) as u8));
        s.push(char::from(b'0' + (n % 10) as u8));
    } else {
        s.push_str(&n.to_string());
    }
}

/// A year with at least four digits (`{year:04}`).
fn push_year(s: &mut String, year: i32) {
    if (0..10_000).contains(&year) {
        push2(s, (year / 100) as u64);
        push2(s, (year % 100) as u64);
    } else {
        s.push_str(&format!("{year:04}"));
    }
}

fn push_date(s: &mut String, year: i32, month: u32, day: u32) {
    push_year(s, year);
    s.push('-');
    push2(s, month.into());
    s.push('-');
    push2(s, day.into());
}

fn push_time(s: &mut String, hours: u64, minutes: u32, seconds: u32, nanos: u32) {
    push2(s, hours);
    s.push(':');
    push2(s, minutes.into());
    s.push(':');
    push2(s, seconds.into());
    push_fraction(s, nanos);
}

/// `YYYY-MM-DD`.
pub fn date(year: i32, month: u32, day: u32) -> String {
    let mut s = String::with_capacity(10);
    push_date(&mut s, year, month, day);
    s
}

/// `[-]HH:MM:SS[.fraction]`, hours past 24 included (MySQL's `TIME`
/// spans ±838 hours).
pub fn time(negative: bool, hours: u64, minutes: u32, seconds: u32, nanos: u32) -> String {
    let mut s = String::with_capacity(20);
    if negative {
        s.push('-');
    }
    push_time(&mut s, hours, minutes, seconds, nanos);
    s
}

/// A date and time without a zone: `YYYY-MM-DDTHH:MM:SS[.fraction]`.
pub fn datetime(date: (i32, u32, u32), time: (u32, u32, u32), nanos: u32) -> String {
    let mut s = String::with_capacity(32);
    push_datetime(&mut s, date, time, nanos);
    s
}

fn push_datetime(s: &mut String, date: (i32, u32, u32), time: (u32, u32, u32), nanos: u32) {
    let (y, mo, d) = date;
    let (h, mi, sec) = time;
    push_date(s, y, mo, d);
    s.push('T');
    push_time(s, h.into(), mi, sec, nanos);
}

/// An instant in UTC: RFC 3339 with `Z`.
pub fn instant(date: (i32, u32, u32), time: (u32, u32, u32), nanos: u32) -> String {
    let mut s = String::with_capacity(32);
    push_datetime(&mut s, date, time, nanos);
    s.push('Z');
    s
}

/// Appends `text` as a JSON string, exactly as `serde_json` writes it:
/// most text needs no escape at all, which is checked eight bytes at a
/// time and then copied as it is; text that needs one is left to
/// `serde_json`.
pub fn write_json_string(out: &mut Vec<u8>, text: &str) {
    if needs_escape(text.as_bytes()) {
        serde_json::to_writer(&mut *out, text).expect("writing to memory");
    } else {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
}

/// Whether a JSON string of `bytes` needs an escape: a control character
/// (below 0x20), `"` or a backslash.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Whether any byte of `w` is zero (exact as a yes/no answer).
    let zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGH != 0;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let w = u64::from_le_bytes(w.try_into().expect("eight bytes"));
        // A byte below 0x20: subtracting 0x20 borrows into its high bit,
        // which was clear.
        if w.wrapping_sub(ONES * 0x20) & !w & HIGH != 0
            || zero(w ^ (ONES * u64::from(b'"')))
            || zero(w ^ (ONES * u64::from(b'\\')))
        {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// The columns a feed names in `json_columns`, whose text values are JSON
/// documents.
#[derive(Debug, Clone, Default)]
pub struct JsonColumns(Vec<String>);

impl JsonColumns {
    pub fn new(names: &[String]) -> JsonColumns {
        JsonColumns(names.to_vec())
    }

    /// Whether `column` is named.
    pub fn names(&self, column: &str) -> bool {
        self.0.iter().any(|n| n == column)
    }

    /// Every named column must be in the result: a name it lacks (a typo,
    /// an alias changed) would otherwise silently send text.
    pub fn check(&self, columns: &[String]) -> Result<(), String> {
        match self.0.iter().find(|n| !columns.contains(n)) {
            Some(missing) => Err(format!(
                "`json_columns` names `{missing}`, which the query does not return (it returns {})",
                columns
                    .iter()
                    .map(|c| format!("`{c}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            None => Ok(()),
        }
    }
}

/// The JSON document in a text value of column `column`: an empty string
/// is `null`; text that is not JSON is an error naming the column (the
/// caller adds the row).
pub fn json_text(column: &str, text: &str) -> Result<Value, String> {
    if text.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(text)
        .map_err(|e| format!("column `{column}` (in `json_columns`) is not valid JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_are_the_shortest_decimal_that_reads_back() {
        assert_eq!(float(1.1).to_string(), "1.1");
        assert_eq!(float(0.1).to_string(), "0.1");
        assert_eq!(float(16_777_216.0).to_string(), "16777216.0");
        // The digits are the f32's shortest ones, read as a double.
        assert_eq!(float(1e30), json!(1e30));
        assert_eq!(float(-3.4028235e38), json!(-3.4028235e38));
        assert_eq!(float(1e-45), json!(1e-45));
        assert_eq!(double(1.1).to_string(), "1.1");
        assert_eq!(double(0.1 + 0.2).to_string(), "0.30000000000000004");
        assert_eq!(double(f64::MAX), json!(f64::MAX));
        for (v, s) in [
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
        ] {
            assert_eq!(double(v), json!(s));
            assert_eq!(float(v as f32), json!(s));
        }
    }

    #[test]
    fn dates_and_times_are_the_format_forms_they_replace() {
        let fraction_fmt = |nanos: u32| {
            if nanos == 0 {
                String::new()
            } else {
                format!(".{nanos:09}").trim_end_matches('0').to_string()
            }
        };
        let nanos = [
            0,
            1,
            10,
            999,
            1_000,
            120_000,
            500_000_000,
            123_456_789,
            999_999_999,
            1_000_000_000,
            u32::MAX,
        ];
        for n in nanos {
            assert_eq!(fraction(n), fraction_fmt(n), "{n}");
        }
        for y in [
            -10_000, -1, 0, 7, 99, 100, 999, 1970, 2026, 9999, 10_000, 294_276,
        ] {
            for (mo, d) in [(1, 2), (12, 31), (0, 0)] {
                assert_eq!(date(y, mo, d), format!("{y:04}-{mo:02}-{d:02}"));
                for (h, mi, s) in [(0, 0, 0), (23, 59, 59), (9, 5, 7)] {
                    for n in nanos {
                        let f = fraction_fmt(n);
                        assert_eq!(
                            datetime((y, mo, d), (h, mi, s), n),
                            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{f}")
                        );
                        assert_eq!(
                            instant((y, mo, d), (h, mi, s), n),
                            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{f}Z")
                        );
                    }
                }
            }
        }
        for h in [0u64, 1, 24, 99, 100, 838, 1_000_000] {
            for neg in [false, true] {
                let sign = if neg { "-" } else { "" };
                assert_eq!(
                    time(neg, h, 5, 59, 250_000_000),
                    format!("{sign}{h:02}:05:59.25")
                );
            }
        }
    }

    #[test]
    fn json_strings_are_written_as_serde_json_writes_them() {
        let mut texts: Vec<String> = [
            "",
            "plain",
            "exactly8",
            "Text of product 1. Text of product 1. ",
            "é ü 日本 \u{7f} \u{80} \u{10ffff}",
            "tab\there",
            "quote\"",
            "back\\slash",
            "\u{0}\u{1f} \u{20}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Every byte that needs an escape, at every place in a word.
        for special in ['"', '\\', '\n', '\u{0}', '\u{1f}', '\r'] {
            for at in 0..17 {
                let mut t: String = "abcdefghijklmnopq".into();
                t.insert(at, special);
                texts.push(t);
            }
        }
        for t in texts {
            let mut ours = Vec::new();
            write_json_string(&mut ours, &t);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&t).unwrap(),
                "{t:?}"
            );
        }
    }

    #[test]
    fn fractions_have_no_trailing_zeros() {
        assert_eq!(fraction(0), "");
        assert_eq!(fraction(500_000_000), ".5");
        assert_eq!(fraction(120_000), ".00012");
        assert_eq!(fraction(123_456_000), ".123456");
        assert_eq!(fraction(1), ".000000001");
        assert_eq!(time(false, 838, 59, 59, 0), "838:59:59");
        assert_eq!(time(true, 1, 2, 3, 250_000_000), "-01:02:03.25");
        assert_eq!(date(7, 1, 2), "0007-01-02");
        assert_eq!(
            datetime((2024, 2, 29), (23, 59, 58), 100_000_000),
            "2024-02-29T23:59:58.1"
        );
        assert_eq!(instant((1970, 1, 1), (0, 0, 0), 0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn json_columns_parse_text_and_name_what_is_wrong() {
        assert_eq!(json_text("a", "").unwrap(), Value::Null);
        assert_eq!(
            json_text("a", r#"{"color": "red", "n": [1, 2]}"#).unwrap(),
            json!({"color": "red", "n": [1, 2]})
        );
        assert_eq!(json_text("a", "\"x\"").unwrap(), json!("x"));
        let e = json_text("attributes", "{color: red}").unwrap_err();
        assert!(
            e.contains("`attributes`") && e.contains("not valid JSON"),
            "{e}"
        );
        let named = JsonColumns::new(&["attributes".into()]);
        assert!(named.names("attributes") && !named.names("sku"));
        named.check(&["sku".into(), "attributes".into()]).unwrap();
        let e = named.check(&["sku".into(), "attrs".into()]).unwrap_err();
        assert!(e.contains("`attributes`") && e.contains("`attrs`"), "{e}");
    }
}
