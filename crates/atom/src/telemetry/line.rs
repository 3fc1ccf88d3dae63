//! The shape of a log line, in the two formats `log.format` offers, written without the
//! general machinery of `tracing-subscriber`'s own formatters, which cost about as much as
//! the rest of a trivial request put together.
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

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use super::output::Output;

/// The layer that writes every event it is given as one line to an [`Output`].
#[derive(Debug)]
pub struct Lines {
    pub json: bool,
    pub output: Output,
}

impl<S: Subscriber> Layer<S> for Lines {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        // The line is made in a buffer of the thread's (plain appends, no dynamic calls), then
        // handed over whole.
        thread_local! {
            static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        LINE.with(|buffer| match buffer.try_borrow_mut() {
            Ok(mut line) => {
                line.clear();
                write_line(self.json, &mut line, event);
                self.output.append(&line);
                // An exceptionally long line does not keep its memory for every line after it.
                if line.capacity() > 64 * 1024 {
                    *line = Vec::new();
                }
            }
            // A value whose formatting logs: make that line on its own.
            Err(_) => {
                let mut line = Vec::new();
                write_line(self.json, &mut line, event);
                self.output.append(&line);
            }
        });
    }
}

/// One event as one line, `\n` included.
fn write_line(json: bool, line: &mut Vec<u8>, event: &Event<'_>) {
    let meta = event.metadata();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    if json {
        line.extend_from_slice(b"{\"timestamp\":\"");
        write_timestamp(line, now.as_secs(), now.subsec_micros());
        line.extend_from_slice(b"\",\"level\":\"");
        line.extend_from_slice(meta.level().as_str().as_bytes());
        line.push(b'"');
        event.record(&mut JsonFields(line));
        line.extend_from_slice(b",\"target\":");
        json_string(line, meta.target());
        line.extend_from_slice(b"}\n");
    } else {
        write_timestamp(line, now.as_secs(), now.subsec_micros());
        line.extend_from_slice(match *meta.level() {
            Level::ERROR => b" ERROR ",
            Level::WARN => b"  WARN ",
            Level::INFO => b"  INFO ",
            Level::DEBUG => b" DEBUG ",
            Level::TRACE => b" TRACE ",
        });
        line.extend_from_slice(meta.target().as_bytes());
        line.push(b':');
        event.record(&mut TextFields(line));
        line.push(b'\n');
    }
}

/// `2026-11-28T10:00:00.123456Z`. The date part is made once per second per thread.
fn write_timestamp(line: &mut Vec<u8>, secs: u64, micros: u32) {
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
    line.extend_from_slice(&text);
    line.extend_from_slice(&fraction);
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
fn write_u64(line: &mut Vec<u8>, mut value: u64) {
    if value < 10 {
        line.push(b'0' + value as u8);
        return;
    }
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
    line.extend_from_slice(&digits[at..]);
}

fn write_i64(line: &mut Vec<u8>, value: i64) {
    if value < 0 {
        line.push(b'-');
    }
    write_u64(line, value.unsigned_abs());
}

/// A float as Rust's shortest round-trip form (`{}`), with a fast way for the common log
/// value of at most three decimals (a latency in milliseconds to the microsecond), which
/// gives the same text.
fn write_f64(line: &mut Vec<u8>, value: f64) {
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
            line.extend_from_slice(&digits[..used]);
        }
    } else {
        let _ = write!(line, "{value}");
    }
}

/// A JSON string literal of `value`, escaped per RFC 8259 (control characters as `\u00XX`).
fn json_string(line: &mut Vec<u8>, value: &str) {
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
    let bytes = value.as_bytes();
    line.push(b'"');
    let mut start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        if !ESCAPED[usize::from(byte)] {
            continue;
        }
        line.extend_from_slice(&bytes[start..i]);
        match byte {
            b'"' => line.extend_from_slice(b"\\\""),
            b'\\' => line.extend_from_slice(b"\\\\"),
            b'\n' => line.extend_from_slice(b"\\n"),
            b'\r' => line.extend_from_slice(b"\\r"),
            b'\t' => line.extend_from_slice(b"\\t"),
            _ => {
                let _ = write!(line, "\\u{byte:04x}");
            }
        }
        start = i + 1;
    }
    line.extend_from_slice(&bytes[start..]);
    line.push(b'"');
}

/// A text value: as it is when that is unambiguous, otherwise quoted with Rust's escapes.
fn text_value(line: &mut Vec<u8>, value: &str) {
    // Beyond ASCII, looked at as characters: a Unicode control character needs quoting too.
    let plain = |c: char| if c.is_ascii() { plain_ascii(&[c as u8]) } else { !c.is_control() };
    if !value.is_empty() && (plain_ascii(value.as_bytes()) || value.chars().all(plain)) {
        line.extend_from_slice(value.as_bytes());
    } else {
        let _ = write!(line, "{value:?}");
    }
}

/// Whether every byte is visible ASCII other than `"`, `=` and `\`: eight bytes at a time,
/// because a log line's values are mostly such text (a third of the line's cost went to
/// this check, a byte at a time).
fn plain_ascii(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES * 0x80;
    // The high bit of a byte of the result is set for a zero byte (exact as a whole: the word
    // is non-zero when and only when some byte is zero).
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let plain = |x: u64| {
        let below_visible = x.wrapping_sub(ONES * 0x21) & !x & HIGH;
        // Adding 1 sets the high bit of 0x7f; bytes from 0x80 have it already.
        let above_visible = (x.wrapping_add(ONES) | x) & HIGH;
        below_visible
            | above_visible
            | zero(x ^ (ONES * u64::from(b'"')))
            | zero(x ^ (ONES * u64::from(b'=')))
            | zero(x ^ (ONES * u64::from(b'\\')))
            == 0
    };
    let mut words = bytes.chunks_exact(8);
    let whole = words.by_ref().all(|w| plain(u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]])));
    let mut rest = [b'a'; 8];
    rest[..words.remainder().len()].copy_from_slice(words.remainder());
    whole && plain(u64::from_ne_bytes(rest))
}

/// Prose (the message): as it is, unless it holds a control character.
fn prose(line: &mut Vec<u8>, text: &str) {
    if text.bytes().all(|b| (b' '..0x7f).contains(&b)) || !text.chars().any(char::is_control) {
        line.extend_from_slice(text.as_bytes());
    } else {
        text_value(line, text);
    }
}

/// Formats a `Debug` value into a buffer of the thread's, for the writers that must look at
/// the text before writing it (escaping).
fn with_debug_text(value: &dyn fmt::Debug, f: impl FnOnce(&str)) {
    thread_local! {
        static TEXT: RefCell<String> = const { RefCell::new(String::new()) };
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

struct JsonFields<'a>(&'a mut Vec<u8>);

impl JsonFields<'_> {
    fn key(&mut self, field: &Field) -> &mut Vec<u8> {
        self.0.push(b',');
        json_string(self.0, field.name());
        self.0.push(b':');
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
        self.key(field).extend_from_slice(if value { b"true" } else { b"false" });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let line = self.key(field);
        with_debug_text(value, |text| json_string(line, text));
    }
}

struct TextFields<'a>(&'a mut Vec<u8>);

impl TextFields<'_> {
    fn key(&mut self, field: &Field) -> &mut Vec<u8> {
        self.0.push(b' ');
        if field.name() != "message" {
            self.0.extend_from_slice(field.name().as_bytes());
            self.0.push(b'=');
        }
        self.0
    }
}

impl Visit for TextFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let message = field.name() == "message";
        let line = self.key(field);
        if message { prose(line, value) } else { text_value(line, value) }
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
        self.key(field).extend_from_slice(if value { b"true" } else { b"false" });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // The message is prose: written as it is, unless it holds a control character.
        let message = field.name() == "message";
        let line = self.key(field);
        with_debug_text(value, |text| if message { prose(line, text) } else { text_value(line, text) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf8(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).expect("UTF-8")
    }

    /// What a subscriber of [`Lines`] writes for `log`, through a real [`Output`].
    fn lines_of(json: bool, log: impl FnOnce()) -> String {
        use tracing_subscriber::layer::SubscriberExt as _;
        let memory = super::super::output::tests::Memory::default();
        let (output, guard) = super::super::output::start(memory.clone());
        let subscriber = tracing_subscriber::registry().with(Lines { json, output });
        tracing::subscriber::with_default(subscriber, log);
        drop(guard);
        let bytes = memory.0.lock().expect("lock").clone();
        utf8(bytes)
    }

    #[test]
    fn an_event_is_one_line_in_either_format() {
        let log = || {
            let path = "/x\n2026-01-01T00:00:00Z  INFO forged";
            tracing::info!(target: "atom::http", message = "request", method = "GET", path, status = 200u16, latency_ms = 0.25, user_id = Some("u-1"), none = None::<&str>);
            tracing::warn!(count = -3i64, ok = true, "two {} words", 2);
        };
        let text = lines_of(false, log);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let (stamp, rest) = lines[0].split_once("  INFO ").expect("level");
        assert_eq!(stamp.len(), "2026-11-28T10:00:00.123456Z".len(), "{stamp}");
        assert_eq!(
            rest,
            r#"atom::http: request method=GET path="/x\n2026-01-01T00:00:00Z  INFO forged" status=200 latency_ms=0.25 user_id=u-1"#
        );
        assert!(
            lines[1].ends_with("  WARN atom::telemetry::line::tests: two 2 words count=-3 ok=true"),
            "{}",
            lines[1]
        );

        let json = lines_of(true, log);
        let lines: Vec<serde_json::Value> =
            json.lines().map(|l| serde_json::from_str(l).expect("a JSON object per line")).collect();
        assert_eq!(lines.len(), 2, "{json}");
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[0]["target"], "atom::http");
        assert_eq!(lines[0]["message"], "request");
        assert_eq!(lines[0]["path"], "/x\n2026-01-01T00:00:00Z  INFO forged");
        assert_eq!(lines[0]["status"], 200);
        assert_eq!(lines[0]["latency_ms"], 0.25);
        assert_eq!(lines[0]["user_id"], "u-1");
        assert!(lines[0].get("none").is_none());
        assert_eq!(lines[1]["message"], "two 2 words");
        assert_eq!(lines[1]["count"], -3);
        assert_eq!(lines[1]["ok"], true);
    }

    #[test]
    fn dates_are_utc_civil_dates() {
        let text = |secs| String::from_utf8(date_time(secs).to_vec()).expect("ascii");
        assert_eq!(text(0), "1970-01-01T00:00:00");
        assert_eq!(text(951_782_400), "2000-02-29T00:00:00", "a leap day of a 400-year leap year");
        assert_eq!(text(1_795_857_771), "2026-11-28T09:22:51");
        assert_eq!(text(4_102_444_799), "2099-12-31T23:59:59");
        let mut out = Vec::new();
        write_timestamp(&mut out, 0, 42);
        assert_eq!(utf8(out), "1970-01-01T00:00:00.000042Z");
    }

    #[test]
    fn strings_are_escaped_so_that_a_value_cannot_break_the_line() {
        let json = |v: &str| {
            let mut out = Vec::new();
            json_string(&mut out, v);
            utf8(out)
        };
        assert_eq!(json("/health"), "\"/health\"");
        assert_eq!(json("a\"b\\c\nd\u{1}é"), "\"a\\\"b\\\\c\\nd\\u0001é\"");
        let parsed: String = serde_json::from_str(&json("x\r\n{\"forged\":1}\u{7f}")).expect("valid JSON");
        assert_eq!(parsed, "x\r\n{\"forged\":1}\u{7f}");

        let text = |v: &str| {
            let mut out = Vec::new();
            text_value(&mut out, v);
            utf8(out)
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
    fn the_word_at_a_time_check_agrees_with_the_byte_at_a_time_one() {
        let byte_plain = |b: u8| b > b' ' && b < 0x7f && !matches!(b, b'"' | b'=' | b'\\');
        for b in 0..=255u8 {
            for at in 0..17 {
                let mut bytes = [b'x'; 17];
                bytes[at] = b;
                for len in [at + 1, 17] {
                    assert_eq!(plain_ascii(&bytes[..len]), byte_plain(b), "byte {b:#04x} at {at} of {len}");
                }
            }
        }
        // Neighbours: a borrow or carry from one byte must not hide or fake another's verdict.
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let bytes = [b'x', b'x', b'x', a, b, b'x', b'x', b'x'];
                assert_eq!(plain_ascii(&bytes), byte_plain(a) && byte_plain(b), "{a:#04x} {b:#04x}");
            }
        }
        assert!(plain_ascii(b""));
        assert!(plain_ascii(b"0123456789abcdef-/health:_."));
    }

    #[test]
    fn numbers_are_written_as_rust_writes_them() {
        let mut values =
            vec![0.0, -0.0, -2.5, 0.061, 0.068432, 1.5, 12.0, 999.999, 1234.5, 0.1 + 0.2, 1e-7, 1e300, 123456789.012];
        values.extend((0..2000).map(|i| f64::from(i) / 1000.0));
        for value in values {
            let mut out = Vec::new();
            write_f64(&mut out, value);
            assert_eq!(utf8(out), value.to_string(), "{value}");
        }
        for value in [0, 7, 10, 1_234_567, u64::MAX] {
            let mut out = Vec::new();
            write_u64(&mut out, value);
            assert_eq!(utf8(out), value.to_string());
        }
        for value in [0, -1, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            write_i64(&mut out, value);
            assert_eq!(utf8(out), value.to_string());
        }
    }
}
