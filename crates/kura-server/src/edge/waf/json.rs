//! JSON bodies are inspected as they are parsed: every string, object keys
//! included, goes to a check as the parser reaches it, and no tree of
//! values is built (a create or edit body is parsed again by its handler,
//! so a tree here was built only to be thrown away). serde_json's nesting
//! limit applies as it does to any parse.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// How a walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// Every string was checked and none stopped the walk.
    Done,
    /// The check asked to stop (a blocking match).
    Stopped,
    /// The body is not one JSON value.
    Malformed,
}

/// Calls `check` on every string of the JSON text `body`, keys included, in
/// document order, until it returns true.
pub fn walk_strings(body: &[u8], mut check: impl FnMut(&str) -> bool) -> Walk {
    let mut stopped = false;
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = Strings {
        check: &mut check,
        stopped: &mut stopped,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    match parsed {
        Ok(()) => Walk::Done,
        Err(_) if stopped => Walk::Stopped,
        Err(_) => Walk::Malformed,
    }
}

/// A value anywhere in the document.
struct Strings<'a, F> {
    check: &'a mut F,
    stopped: &'a mut bool,
}

impl<F: FnMut(&str) -> bool> Strings<'_, F> {
    fn again(&mut self) -> Strings<'_, F> {
        Strings {
            check: &mut *self.check,
            stopped: &mut *self.stopped,
        }
    }

    fn string<E: de::Error>(self, v: &str) -> Result<(), E> {
        if (self.check)(v) {
            *self.stopped = true;
            return Err(E::custom("inspection stopped"));
        }
        Ok(())
    }
}

impl<'de, F: FnMut(&str) -> bool> DeserializeSeed<'de> for Strings<'_, F> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, F: FnMut(&str) -> bool> Visitor<'de> for Strings<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.string(v)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self.again())?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        // serde_json hands a key to `deserialize_any` as a string.
        while map.next_key_seed(self.again())?.is_some() {
            map.next_value_seed(self.again())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(body: &str) -> (Walk, Vec<String>) {
        let mut seen = Vec::new();
        let walk = walk_strings(body.as_bytes(), |s| {
            seen.push(s.to_owned());
            false
        });
        (walk, seen)
    }

    #[test]
    fn every_string_and_key_is_seen_in_document_order() {
        let (walk, seen) = strings(
            r#"{"fieldData": {"name": "O'Brien", "n": 5, "ok": true, "x": null},
               "portalData": {"p": [{"a\u0041": "esc\"aped", "f": 1.5}]},
               "list": ["one", ["two"], -3]}"#,
        );
        assert_eq!(walk, Walk::Done);
        assert_eq!(
            seen,
            [
                "fieldData",
                "name",
                "O'Brien",
                "n",
                "ok",
                "x",
                "portalData",
                "p",
                "aA",
                "esc\"aped",
                "f",
                "list",
                "one",
                "two"
            ]
        );
        assert_eq!(strings(r#""just a string""#).1, ["just a string"]);
    }

    #[test]
    fn the_walk_stops_when_the_check_says_so() {
        let mut seen = 0;
        let walk = walk_strings(br#"{"a": "x", "b": "stop", "c": "y"}"#, |s| {
            seen += 1;
            s == "stop"
        });
        assert_eq!(walk, Walk::Stopped);
        assert_eq!(seen, 4, "a, x, b, stop; nothing after");
    }

    #[test]
    fn malformed_bodies_are_reported_as_such() {
        for body in [
            "",
            "{",
            r#"{"a": }"#,
            r#"{"a": 1} trailing"#,
            r#"{"a": 1}{"b": 2}"#,
            "[1, 2,]",
            "\"unterminated",
        ] {
            assert_eq!(strings(body).0, Walk::Malformed, "{body:?}");
        }
        let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
        assert_eq!(strings(&deep).0, Walk::Malformed, "nesting is limited");
        assert_eq!(strings("  {\"a\": [1]} \n").0, Walk::Done);
    }
}
