//! [`Pattern`]: the anchored regular expression that guards a value before it enters a URL.
//!
//! A pattern must match the whole value: its every branch begins with `^` and ends with `$`
//! (checked on the parsed expression, so `^a|b$` is refused). Patterns are ASCII: `\d`,
//! `\w` and `(?i)` have their ASCII meaning, and a class that could match a non-ASCII byte
//! (`[^/]`) is refused; the values they guard are host labels, ids and tokens.
//!
//! Built on `regex-automata`'s dense DFA, which the crate already compiles for log filters,
//! with a size limit, so a pattern from an operator's override file cannot blow up memory.

use std::fmt;
use std::sync::Arc;

use regex_automata::dfa::{Automaton, dense};
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input};
use regex_syntax::hir::Look;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The largest DFA one pattern may build.
const DFA_SIZE_LIMIT: usize = 1 << 20;

/// A compiled, anchored pattern; it serializes as its source.
#[derive(Clone)]
pub struct Pattern {
    source: Arc<str>,
    dfa: Arc<dense::DFA<Vec<u32>>>,
}

impl Pattern {
    /// Compiles `source`; the error says what is wrong in one line.
    pub fn new(source: &str) -> Result<Self, String> {
        let config = syntax::Config::new().unicode(false);
        let hir = syntax::parse_with(source, &config).map_err(|e| one_line(&e.to_string()))?;
        let props = hir.properties();
        if !props.look_set_prefix().contains(Look::Start) || !props.look_set_suffix().contains(Look::End) {
            return Err(format!("pattern {source:?} must be anchored: begin with ^ and end with $"));
        }
        let dfa = dense::Builder::new()
            .syntax(config)
            .configure(
                dense::Config::new().dfa_size_limit(Some(DFA_SIZE_LIMIT)).determinize_size_limit(Some(DFA_SIZE_LIMIT)),
            )
            .build(source)
            .map_err(|e| format!("pattern {source:?}: {}", one_line(&e.to_string())))?;
        Ok(Self { source: source.into(), dfa: Arc::new(dfa) })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether `value` matches as a whole.
    pub fn is_match(&self, value: &str) -> bool {
        let input = Input::new(value).anchored(Anchored::Yes);
        // The pattern is anchored at both ends, so any match spans the whole value; a search
        // error (none is possible without quit bytes) counts as no match.
        matches!(self.dfa.try_search_fwd(&input), Ok(Some(m)) if m.offset() == value.len())
    }
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pattern").field(&self.source).finish()
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let source = String::deserialize(d)?;
        Pattern::new(&source).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_whole_values_only() {
        let p = Pattern::new("^[a-z0-9][a-z0-9-]*$").expect("compiles");
        assert!(p.is_match("my-shop"));
        assert!(!p.is_match("-shop"));
        assert!(!p.is_match("shop.evil.com"));
        assert!(!p.is_match("shop\n"));
        assert!(!p.is_match(""));
    }

    #[test]
    fn unanchored_patterns_are_refused() {
        for source in ["[a-z]+", "^[a-z]+", "[a-z]+$", "^a|b$", "(?m)^a$"] {
            let e = Pattern::new(source).expect_err(source);
            assert!(e.contains("anchored"), "{source}: {e}");
        }
        assert!(Pattern::new("^(a|b)$").is_ok());
    }

    #[test]
    fn syntax_errors_are_one_line() {
        let e = Pattern::new("^[a-z$").expect_err("unclosed class");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn classes_are_ascii() {
        let p = Pattern::new(r"^\d+$").expect("compiles");
        assert!(p.is_match("123"));
        assert!(!p.is_match("١٢٣"), "Arabic-Indic digits are not \\d here");
        assert!(Pattern::new("^[^/]+$").is_err(), "a class matching non-ASCII bytes is refused");
    }
}
