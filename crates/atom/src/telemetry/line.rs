//! The shape of a log line, in the two formats `log.format` offers, written without the
//! general machinery of `tracing-subscriber`'s own formatters (which cost about as much as
//! the rest of a trivial request put together; see `docs/benchmarks.md`).
//!
//! - `json`: one object per line, `{"timestamp":…,"level":…,<fields>,"target":…}`, the
//!   fields flattened with the message under `message`: the shape of `tracing-subscriber`'s
//!   flattened JSON, which log pipelines already read.
//! - `pretty`: `2026-11-28T10:00:00.123456Z  INFO atom::http: request method=GET status=200`,
//!   a string value quoted (with escapes) only when it needs to be.
//!
//! Invariants: one event is one line, whatever its values hold (control characters are
//! always escaped, so a hostile path cannot forge a line); timestamps are UTC, RFC 3339, to
//! the microsecond. Spans are not written: Atom opens none, and request context travels as
//! fields.

use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// A [`FormatEvent`] for both formats.
#[derive(Debug, Clone, Copy)]
pub struct Line {
    pub json: bool,
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        // The line is made in a buffer of the thread's (plain appends, no dynamic calls), then
        // handed over whole.
        thread_local! {
            static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        LINE.with(|buffer| match buffer.try_borrow_mut() {
            Ok(mut line) => {
                line.clear();
                self.write(&mut line, event);
                writer.write_str(&line)
            }
            // A value whose formatting logs: make that line on its own.
            Err(_) => {
                let mut line = String::new();
                self.write(&mut line, event);
                writer.write_str(&line)
            }
        })
    }
}

impl Line {
    fn write(self, line: &mut String, event: &Event<'_>) {
        let meta = event.metadata();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        if self.json {
            line.push_str("{\"timestamp\":\"");
            write_timestamp(line, now.as_secs(), now.subsec_micros());
            line.push_str("\",\"level\":\"");
            line.push_str(meta.level().as_str());
            line.push('"');
            event.record(&mut JsonFields(line));
            line.push_str(",\"target\":");
            json_string(line, meta.target());
            line.push_str("}\n");
        } else {
            write_timestamp(line, now.as_secs(), now.subsec_micros());
            line.push_str(match *meta.level() {
                Level::ERROR => " ERROR ",
                Level::WARN => "  WARN ",
                Level::INFO => "  INFO ",
                Level::DEBUG => " DEBUG ",
                Level::TRACE => " TRACE ",
            });
            line.push_str(meta.target());
            line.push(':');
            event.record(&mut TextFields(line));
            line.push('\n');
        }
    }
}

/// `2026-11-28T10:00:00.123456Z`. The date part is made once per second per thread.
fn write_timestamp(line: &mut String, secs: u64, micros: u32) {
    thread_local! {
        static SECOND: std::cell::Cell<(u64, [u8; 19])> = const { std::cell::Cell::new((u64::MAX, [0; 19])) };
    }
    let (cached, mut text) = SECOND.get();
    if cached != secs {
        text = date_time(secs);
        SECOND.set((secs, text));
    }
    let mut fraction = *b".000000Z";
    let mut rest = micros.min(999_999);
    for digit in fraction[1..7].iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    line.extend(text.iter().chain(&fraction).map(|&b| char::from(b)));
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time, UTC (Howard Hinnant's `civil_from_days`).
fn date_time(secs: u64) -> [u8; 19] {
    let days = secs / 86_400;
    let in_day = secs % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = (yoe + era * 400 + u64::from(month <= 2)).min(9999);
    let mut out = *b"0000-00-00T00:00:00";
    let mut put = |at: usize, width: usize, mut value: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, in_day / 3600);
    put(14, 2, in_day % 3600 / 60);
    put(17, 2, in_day % 60);
    out
}

/// An unsigned integer in decimal.
fn write_u64(line: &mut String, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    line.extend(digits[at..].iter().map(|&d| char::from(d)));
}

fn write_i64(line: &mut String, value: i64) {
    if value < 0 {
        line.push('-');
    }
    write_u64(line, value.unsigned_abs());
}

/// A float as Rust's shortest round-trip form (`{}`), with a fast way for the common log
/// value of at most three decimals (a latency in milliseconds to the microsecond), which
/// gives the same text.
fn write_f64(line: &mut String, value: f64) {
    let thousandths = (value * 1000.0).round();
    if value.is_sign_positive() && (0.0..1e15).contains(&thousandths) && thousandths / 1000.0 == value {
        let thousandths = thousandths as u64;
        write_u64(line, thousandths / 1000);
        let fraction = thousandths % 1000;
        if fraction != 0 {
            let digits =
                [b'.', b'0' + (fraction / 100) as u8, b'0' + (fraction / 10 % 10) as u8, b'0' + (fraction % 10) as u8];
            let used = if fraction.is_multiple_of(100) {
                2
            } else if fraction.is_multiple_of(10) {
                3
            } else {
                4
            };
            line.extend(digits[..used].iter().map(|&d| char::from(d)));
        }
    } else {
        let _ = write!(line, "{value}");
    }
}

/// A JSON string literal of `value`, escaped per RFC 8259 (control characters as `\u00XX`).
fn json_string(line: &mut String, value: &str) {
    // Bytes that need an escape: control characters, quotes, backslashes.
    const ESCAPED: [bool; 256] = {
        let mut table = [false; 256];
        let mut b = 0;
        while b < 256 {
            table[b] = b < 0x20 || b == 0x7f || b == b'"' as usize || b == b'\\' as usize;
            b += 1;
        }
        table
    };
    line.push('"');
    let mut start = 0;
    for (i, byte) in value.bytes().enumerate() {
        if !ESCAPED[usize::from(byte)] {
            continue;
        }
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f | 0x7f => "",
            _ => continue,
        };
        line.push_str(&value[start..i]);
        if escape.is_empty() {
            let _ = write!(line, "\\u{byte:04x}");
        } else {
            line.push_str(escape);
        }
        start = i + 1;
    }
    line.push_str(&value[start..]);
    line.push('"');
}

/// A text value: as it is when that is unambiguous, otherwise quoted with Rust's escapes.
fn text_value(line: &mut String, value: &str) {
    // Visible ASCII but for quotes, `=` and backslashes; anything beyond ASCII is looked at
    // as characters (a Unicode control character needs quoting too).
    const PLAIN: [bool; 256] = {
        let mut table = [false; 256];
        let mut b = 0;
        while b < 256 {
            table[b] = (b >= 0x80 || (b > b' ' as usize && b < 0x7f))
                && b != b'"' as usize
                && b != b'=' as usize
                && b != b'\\' as usize;
            b += 1;
        }
        table
    };
    let plain = !value.is_empty()
        && value.bytes().all(|b| PLAIN[usize::from(b)])
        && (value.is_ascii() || !value.chars().any(char::is_control));
    if plain {
        line.push_str(value);
    } else {
        let _ = write!(line, "{value:?}");
    }
}

/// Formats a `Debug` value into a buffer of the thread's, for the writers that must look at
/// the text before writing it (escaping).
fn with_debug_text(value: &dyn fmt::Debug, f: impl FnOnce(&str)) {
    thread_local! {
        static TEXT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    TEXT.with(|buffer| match buffer.try_borrow_mut() {
        Ok(mut buffer) => {
            buffer.clear();
            let _ = write!(buffer, "{value:?}");
            f(&buffer);
        }
        // A value whose Debug logs: format it on its own.
        Err(_) => f(&format!("{value:?}")),
    });
}

struct JsonFields<'a>(&'a mut String);

impl JsonFields<'_> {
    fn key(&mut self, field: &Field) -> &mut String {
        self.0.push(',');
        json_string(self.0, field.name());
        self.0.push(':');
        self.0
    }
}

impl Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        json_string(self.key(field), value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        write_u64(self.key(field), value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        write_i64(self.key(field), value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity: those become strings.
        let line = self.key(field);
        if value.is_finite() { write_f64(line, value) } else { json_string(line, &value.to_string()) }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field).push_str(if value { "true" } else { "false" });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let line = self.key(field);
        with_debug_text(value, |text| json_string(line, text));
    }
}

struct TextFields<'a>(&'a mut String);

impl TextFields<'_> {
    fn key(&mut self, field: &Field) -> &mut String {
        self.0.push(' ');
        if field.name() != "message" {
            self.0.push_str(field.name());
            self.0.push('=');
        }
        self.0
    }
}

impl Visit for TextFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        text_value(self.key(field), value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        write_u64(self.key(field), value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        write_i64(self.key(field), value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        write_f64(self.key(field), value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field).push_str(if value { "true" } else { "false" });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // The message is prose: written as it is, unless it holds a control character.
        let message = field.name() == "message";
        let line = self.key(field);
        with_debug_text(value, |text| {
            if message && !text.chars().any(char::is_control) { line.push_str(text) } else { text_value(line, text) }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_civil_dates() {
        let text = |secs| String::from_utf8(date_time(secs).to_vec()).expect("ascii");
        assert_eq!(text(0), "1970-01-01T00:00:00");
        assert_eq!(text(951_782_400), "2000-02-29T00:00:00", "a leap day of a 400-year leap year");
        assert_eq!(text(1_795_857_771), "2026-11-28T09:22:51");
        assert_eq!(text(4_102_444_799), "2099-12-31T23:59:59");
        let mut out = String::new();
        write_timestamp(&mut out, 0, 42);
        assert_eq!(out, "1970-01-01T00:00:00.000042Z");
    }

    #[test]
    fn strings_are_escaped_so_that_a_value_cannot_break_the_line() {
        let json = |v: &str| {
            let mut out = String::new();
            json_string(&mut out, v);
            out
        };
        assert_eq!(json("/health"), "\"/health\"");
        assert_eq!(json("a\"b\\c\nd\u{1}é"), "\"a\\\"b\\\\c\\nd\\u0001é\"");
        let parsed: String = serde_json::from_str(&json("x\r\n{\"forged\":1}\u{7f}")).expect("valid JSON");
        assert_eq!(parsed, "x\r\n{\"forged\":1}\u{7f}");

        let text = |v: &str| {
            let mut out = String::new();
            text_value(&mut out, v);
            out
        };
        assert_eq!(text("/v1/me"), "/v1/me");
        assert_eq!(text("é"), "é");
        assert_eq!(text(""), "\"\"");
        assert_eq!(text("two words"), "\"two words\"");
        assert_eq!(text("a=b"), "\"a=b\"");
        assert_eq!(text("/x\nINFO forged"), "\"/x\\nINFO forged\"");
        assert_eq!(text("\u{85}"), "\"\\u{85}\"", "a Unicode control character");
    }

    #[test]
    fn numbers_are_written_as_rust_writes_them() {
        let mut values =
            vec![0.0, -0.0, -2.5, 0.061, 0.068432, 1.5, 12.0, 999.999, 1234.5, 0.1 + 0.2, 1e-7, 1e300, 123456789.012];
        values.extend((0..2000).map(|i| f64::from(i) / 1000.0));
        for value in values {
            let mut out = String::new();
            write_f64(&mut out, value);
            assert_eq!(out, value.to_string(), "{value}");
        }
        for value in [0, 7, 10, 1_234_567, u64::MAX] {
            let mut out = String::new();
            write_u64(&mut out, value);
            assert_eq!(out, value.to_string());
        }
        for value in [0, -1, i64::MIN, i64::MAX] {
            let mut out = String::new();
            write_i64(&mut out, value);
            assert_eq!(out, value.to_string());
        }
    }
}
