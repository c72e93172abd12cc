//! A scanner for the common case of a JSON record: one flat object whose values are
//! strings without escapes, numbers, booleans or null.
//!
//! It exists for speed alone. serde_json (and sonic-rs and simd-json, measured on the
//! same lines) spends about 0.6 µs on a 340-byte native line, a quarter of the whole
//! ingest budget; this scanner takes a fraction of that. It accepts a strict subset of
//! JSON and says `None` to anything else (an escape, a nested value, a syntax error),
//! and the caller then parses the line with serde_json, which also words the errors.

/// One value of a flat object, borrowed from the line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Flat<'a> {
    /// A string with no escapes, without its quotes.
    Str(&'a str),
    /// A number as written (JSON number grammar).
    Num(&'a str),
    /// `true` or `false`.
    Bool(bool),
    /// `null`.
    Null,
}

/// A key of the object: the index of one of the keys the caller named, or another.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Key<'a> {
    /// `keys[i]`.
    Known(usize),
    /// A key not in `keys`.
    Other(&'a str),
}

/// Call `field` with each key and value of the object `text`, in order. `None` when
/// `text` is not one flat, escape-free object (surrounding whitespace allowed) or
/// `field` says `None`.
///
/// `keys` are the keys the caller reads (plain ASCII, no quotes or backslashes), in the
/// order writers usually put them: the key after the last one found is tried first,
/// by one comparison, which spares scanning and matching most keys.
pub(super) fn scan<'a>(
    text: &'a str,
    keys: &[&str],
    mut field: impl FnMut(Key<'a>, Flat<'a>) -> Option<()>,
) -> Option<()> {
    let mut s = Scanner {
        text,
        b: text.as_bytes(),
        i: 0,
    };
    s.ws();
    s.eat(b'{')?;
    s.ws();
    if s.eat(b'}').is_none() {
        let mut next = 0;
        loop {
            s.ws();
            let key = match keys.get(next).filter(|k| s.quoted(k)) {
                Some(_) => Key::Known(next),
                None => {
                    let key = s.string()?;
                    match keys.iter().position(|k| *k == key) {
                        Some(i) => Key::Known(i),
                        None => Key::Other(key),
                    }
                }
            };
            if let Key::Known(i) = key {
                next = i + 1;
            }
            s.ws();
            s.eat(b':')?;
            s.ws();
            field(key, s.value()?)?;
            s.ws();
            match s.next()? {
                b',' => continue,
                b'}' => break,
                _ => return None,
            }
        }
    }
    s.ws();
    (s.i == s.b.len()).then_some(())
}

/// The high bit of each byte of `x` (little-endian) that may be a quote, a backslash
/// or a control character: the classic SWAR zero-byte test, as serde_json's string
/// scanner does it. The lowest set bit is exact (only bytes after a true one can be
/// false positives), which is all the caller reads.
fn special(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v;
    let quote = zero(x ^ (ONES * u64::from(b'"')));
    let backslash = zero(x ^ (ONES * u64::from(b'\\')));
    let control = x.wrapping_sub(ONES * 0x20) & !x;
    (quote | backslash | control) & HIGH
}

struct Scanner<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn next(&mut self) -> Option<u8> {
        let c = *self.b.get(self.i)?;
        self.i += 1;
        Some(c)
    }

    /// Whether the cursor is at `"key"`, stepping over it if so. `key` has no quotes
    /// or backslashes, so the bytes alone decide.
    fn quoted(&mut self, key: &str) -> bool {
        let end = self.i + key.len() + 2;
        let hit = self.b.get(self.i..end).is_some_and(|w| {
            w[0] == b'"' && w[end - self.i - 1] == b'"' && &w[1..w.len() - 1] == key.as_bytes()
        });
        if hit {
            self.i = end;
        }
        hit
    }

    fn eat(&mut self, want: u8) -> Option<()> {
        (self.b.get(self.i) == Some(&want)).then(|| self.i += 1)
    }

    /// A string at the cursor, without escapes or control characters.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        // Eight bytes at a time to the first one that can end the string.
        loop {
            match self.b.get(self.i..self.i + 8) {
                Some(chunk) => {
                    let m = special(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
                    if m == 0 {
                        self.i += 8;
                        continue;
                    }
                    self.i += (m.trailing_zeros() / 8) as usize;
                }
                None => {
                    while !matches!(*self.b.get(self.i)?, b'"' | b'\\' | 0..=0x1f) {
                        self.i += 1;
                    }
                }
            }
            break;
        }
        if self.b[self.i] != b'"' {
            return None;
        }
        // Both ends sit next to an ASCII quote, so they are character boundaries.
        let s = &self.text[start..self.i];
        self.i += 1;
        Some(s)
    }

    fn value(&mut self) -> Option<Flat<'a>> {
        match *self.b.get(self.i)? {
            b'"' => self.string().map(Flat::Str),
            b'-' | b'0'..=b'9' => self.number().map(Flat::Num),
            c => {
                let (word, value): (&[u8], _) = match c {
                    b'n' => (b"null", Flat::Null),
                    b't' => (b"true", Flat::Bool(true)),
                    b'f' => (b"false", Flat::Bool(false)),
                    _ => return None,
                };
                self.b[self.i..].starts_with(word).then(|| {
                    self.i += word.len();
                    value
                })
            }
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Option<&'a str> {
        let start = self.i;
        let _ = self.eat(b'-');
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(0)?,
            _ => return None,
        }
        if self.eat(b'.').is_some() {
            self.digits(1)?;
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            self.digits(1)?;
        }
        Some(&self.text[start..self.i])
    }

    /// At least `min` digits, consumed.
    fn digits(&mut self, min: usize) -> Option<()> {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.b.get(self.i) {
            self.i += 1;
        }
        (self.i - start >= min).then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(text: &str) -> Option<Vec<(&str, Flat<'_>)>> {
        let keys = ["b", "a", "z"];
        let mut out = Vec::new();
        scan(text, &keys, |k, v| {
            let name = match k {
                Key::Known(i) => keys[i],
                Key::Other(s) => s,
            };
            out.push((name, v));
            Some(())
        })?;
        Some(out)
    }

    #[test]
    fn keys_are_known_by_index_whatever_their_order() {
        let keys = ["a", "b", "c"];
        let mut got = Vec::new();
        let text = r#"{"a":1,"b":2,"x":3,"c":4,"a":5,"bb":6,"b":7,"":8}"#;
        scan(text, &keys, |k, _| {
            got.push(k);
            Some(())
        })
        .unwrap();
        use Key::*;
        assert_eq!(
            got,
            [
                Known(0),
                Known(1),
                Other("x"),
                Known(2),
                Known(0),
                Other("bb"),
                Known(1),
                Other("")
            ]
        );
    }

    #[test]
    fn reads_every_value_kind() {
        let got = fields(r#" {"a":"x y","b":-12.5e+3,"c":0,"d":true,"e":false,"f":null,"g":""} "#)
            .unwrap();
        assert_eq!(
            got,
            [
                ("a", Flat::Str("x y")),
                ("b", Flat::Num("-12.5e+3")),
                ("c", Flat::Num("0")),
                ("d", Flat::Bool(true)),
                ("e", Flat::Bool(false)),
                ("f", Flat::Null),
                ("g", Flat::Str("")),
            ]
        );
        assert_eq!(fields("{}").unwrap(), []);
        assert_eq!(fields(r#"{"é":"ü"}"#).unwrap(), [("é", Flat::Str("ü"))]);
    }

    #[test]
    fn declines_what_it_does_not_read_exactly() {
        let mut valid_json = Vec::new();
        for text in [
            r#"{"a":"x\"y"}"#,
            r#"{"a":{"b":1}}"#,
            r#"{"a":[1]}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":1e}"#,
            r#"{"a":-}"#,
            r#"{"a":tru}"#,
            r#"{"a":1,}"#,
            r#"{"a":1}x"#,
            r#"{"a":1"#,
            r#"{"a" 1}"#,
            "{\"a\":\"x\ty\"}",
            "[1]",
            "",
        ] {
            assert_eq!(fields(text), None, "{text}");
            if serde_json::from_str::<serde_json::Value>(text).is_ok() {
                valid_json.push(text);
            }
        }
        // What it declines is either not JSON or JSON beyond a flat object of plain
        // values (escapes, nesting, arrays), which the serde_json path reads.
        assert_eq!(
            valid_json,
            [r#"{"a":"x\"y"}"#, r#"{"a":{"b":1}}"#, r#"{"a":[1]}"#, "[1]"]
        );
    }

    #[test]
    fn strings_end_at_the_right_byte_wherever_it_falls_in_a_word() {
        for len in 0..20 {
            let body = "é".repeat(len / 2) + &"a".repeat(len % 2);
            let text = format!(r#"{{"k":"{body}","z":1}}"#);
            assert_eq!(
                fields(&text).unwrap(),
                [("k", Flat::Str(&body)), ("z", Flat::Num("1"))]
            );
            for bad in ["\\n", "\u{1}", "\u{1f}"] {
                let text = format!(r#"{{"k":"{body}{bad}x"}}"#);
                assert_eq!(fields(&text), None, "{text:?}");
            }
        }
    }

    #[test]
    fn accepts_only_what_serde_json_accepts() {
        for text in [
            r#"{"a":1,"b":"c"}"#,
            "{ \"a\" : 1 ,\n\"b\" :\t\"c\" }",
            r#"{"n":-0.0e-7}"#,
        ] {
            assert!(fields(text).is_some(), "{text}");
            assert!(
                serde_json::from_str::<serde_json::Value>(text).is_ok(),
                "{text}"
            );
        }
    }
}

/// Property tests: whatever the scanner accepts, serde_json reads the same way.
/// 256 cases a property, or `PROPTEST_CASES` (docs/sources.md, "Testing the adapters").
#[cfg(test)]
mod props {
    use std::collections::HashMap;

    use proptest::prelude::*;
    use serde_json::Value;
    use serde_json::value::RawValue;

    use super::*;

    const KEYS: [&str; 3] = ["b", "a", "z"];

    /// JSON whitespace, and now and then a character that only looks like it.
    fn ws() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => Just(String::new()),
            3 => "[ \t\n\r]{1,3}",
            1 => prop::sample::select(vec!["\u{a0}", "\u{c}", "\u{b}", "\u{feff}", "\u{0}"])
                .prop_map(String::from),
        ]
    }

    /// A string literal: plain, with every kind of escape (surrogate pairs, lone
    /// surrogates, invalid ones), or with a raw control character.
    fn string() -> impl Strategy<Value = String> {
        string_of(5, 6)
    }

    /// `pieces` at most, plain ones `plain` times as likely as each kind of escape.
    fn string_of(pieces: usize, plain: u32) -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            plain => "[a-zA-Z0-9 é\u{1F600}\u{7f}/]{1,4}",
            1 => prop::sample::select(vec![
                "\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t", "\\ud83d\\ude00",
                "\\ud800", "\\x", "\\u12", "\\U0041",
            ])
            .prop_map(String::from),
            1 => "\\\\u[0-9a-fA-F]{4}",
            1 => "[\u{0}-\u{1f}]",
        ];
        prop::collection::vec(piece, 0..pieces).prop_map(|p| format!("\"{}\"", p.concat()))
    }

    /// Numbers as JSON writes them (exponents, signs, long mantissas) and as it does not.
    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => "-?(0|[1-9][0-9]{0,22})(\\.[0-9]{1,22})?([eE][+-]?[0-9]{1,3})?",
            1 => prop::sample::select(vec![
                "01", "-01", "1.", ".5", "-", "+1", "1e", "1e+", "0x10", "1_0", "--1", "1.5.3",
                "-0", "1e400", "Infinity", "NaN",
            ])
            .prop_map(String::from),
        ]
    }

    fn value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            3 => string(),
            3 => number(),
            2 => prop::sample::select(vec!["true", "false", "null", "tru", "nul", "True", "falsey"])
                .prop_map(String::from),
        ];
        leaf.prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec((string(), inner), 0..3).prop_map(|m| {
                    let m: Vec<String> = m.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
                    format!("{{{}}}", m.join(","))
                }),
            ]
        })
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(KEYS.to_vec()).prop_map(|k| format!("\"{k}\"")),
            1 => Just("\"\\u0061\"".to_string()),
            2 => string(),
        ]
    }

    /// An object as text, and sometimes a damaged one (a missing colon, a trailing
    /// comma, a cut, an extra byte).
    fn object() -> impl Strategy<Value = String> {
        let member = (ws(), key(), ws(), ws(), value(), ws());
        let damage = prop_oneof![
            6 => Just(None),
            1 => (any::<usize>(), any::<u8>()).prop_map(Some),
        ];
        (
            ws(),
            prop::collection::vec(member, 0..6),
            ws(),
            any::<bool>(),
            damage,
        )
            .prop_map(|(lead, members, trail, trailing_comma, damage)| {
                let members: Vec<String> = members
                    .into_iter()
                    .map(|(a, k, b, c, v, d)| format!("{a}{k}{b}:{c}{v}{d}"))
                    .collect();
                let comma = if trailing_comma && !members.is_empty() && damage.is_some() {
                    ","
                } else {
                    ""
                };
                let mut text = format!("{lead}{{{}{comma}}}{trail}", members.join(","));
                if let Some((at, byte)) = damage {
                    let mut bytes = text.into_bytes();
                    let at = at % (bytes.len() + 1);
                    if byte < 128 {
                        bytes.insert(at, byte);
                    } else {
                        bytes.truncate(at);
                    }
                    text = String::from_utf8_lossy(&bytes).into_owned();
                }
                text
            })
    }

    /// A flat object as most writers produce it: the scanner must read it.
    fn plain_object() -> impl Strategy<Value = String> {
        let value = prop_oneof![
            "\"[a-zA-Z0-9 é\u{1F600}:,{}\\[\\]]{0,10}\"",
            "-?(0|[1-9][0-9]{0,18})(\\.[0-9]{1,17})?([eE][+-]?[0-9]{1,2})?",
            prop::sample::select(vec!["true", "false", "null"]).prop_map(String::from),
        ];
        let key = prop_oneof![
            prop::sample::select(KEYS.to_vec()).prop_map(String::from),
            "[a-z_é]{0,6}",
        ];
        let ws = "[ \t\n\r]{0,2}";
        prop::collection::vec((ws, key, ws, value, ws), 0..8).prop_map(|m| {
            let m: Vec<String> = m
                .into_iter()
                .map(|(a, k, b, v, c)| format!("{a}\"{k}\"{b}:{v}{c}"))
                .collect();
            format!("{{{}}}", m.join(","))
        })
    }

    /// What the scanner read, last value per key (as serde keeps it); `None` if it declined.
    fn scanned(text: &str) -> Option<HashMap<String, Flat<'_>>> {
        let mut got = HashMap::new();
        scan(text, &KEYS, |k, v| {
            let name = match k {
                Key::Known(i) => KEYS[i],
                Key::Other(k) => {
                    assert!(!KEYS.contains(&k), "{k:?} is a known key");
                    k
                }
            };
            got.insert(name.to_string(), v);
            Some(())
        })?;
        Some(got)
    }

    /// The scanner's reading of `text`, if any, is serde_json's: the same grammar, the
    /// same keys, each value the same text, and the same values where serde_json can
    /// represent them (it refuses numbers beyond f64, which are text to the scanner).
    fn assert_agrees(text: &str) -> bool {
        let Some(got) = scanned(text) else {
            return false;
        };
        serde_json::from_str::<serde::de::IgnoredAny>(text)
            .unwrap_or_else(|e| panic!("scanner accepted invalid JSON {text:?}: {e}"));
        let raw: HashMap<String, Box<RawValue>> = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("scanner accepted a non-object {text:?}: {e}"));
        assert_eq!(
            got.keys().collect::<std::collections::BTreeSet<_>>(),
            raw.keys().collect(),
            "{text:?}"
        );
        for (k, v) in &got {
            let want = match v {
                Flat::Str(s) => format!("\"{s}\""),
                Flat::Num(n) => n.to_string(),
                Flat::Bool(b) => b.to_string(),
                Flat::Null => "null".into(),
            };
            assert_eq!(raw[k].get(), want, "{text:?}");
        }
        if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) {
            for (k, v) in &got {
                let want = match v {
                    Flat::Str(s) => Value::String(s.to_string()),
                    Flat::Num(n) => serde_json::from_str(n).unwrap(),
                    Flat::Bool(b) => Value::Bool(*b),
                    Flat::Null => Value::Null,
                };
                assert_eq!(map[k.as_str()], want, "{text:?}");
            }
        }
        true
    }

    proptest! {
        #![proptest_config(crate::adapters::proptest_config())]

        /// One-member objects too: short enough that strings end within the last eight
        /// bytes, where the scanner leaves its word-at-a-time loop for a byte loop.
        #[test]
        fn accepts_only_what_serde_reads_the_same(text in prop_oneof![
            object(),
            (key(), prop_oneof![value(), string_of(3, 1)]).prop_map(|(k, v)| format!("{{{k}:{v}}}")),
        ]) {
            assert_agrees(&text);
        }

        #[test]
        fn arbitrary_text_is_declined_or_agreed(text in any::<String>()) {
            assert_agrees(&text);
        }

        /// Not vacuous: ordinary flat objects are read, and read as serde reads them.
        #[test]
        fn reads_plain_flat_objects(text in plain_object()) {
            prop_assert!(assert_agrees(&text), "declined {:?}", text);
        }
    }
}
