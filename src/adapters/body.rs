//! Splitting a request body into records: one JSON object, a JSON array (LiteLLM's
//! default `json_array`), or newline-delimited records (NDJSON, CSV).

use serde_json::value::RawValue;

/// One record of a body, numbered from 1, or the reason the body could not be split there.
#[derive(Debug, PartialEq)]
pub struct Item<'a> {
    /// Position in the body, from 1: the array index, or the line number for line-based bodies.
    pub number: u64,
    /// The record's bytes (the whole body when it could not be split).
    pub raw: &'a [u8],
    /// Why the body could not be split here; `None` for a record to decode.
    pub error: Option<String>,
}

/// Split `body` into records. `line_based` forces one record per line (CSV).
pub fn split(body: &[u8], line_based: bool) -> Vec<Item<'_>> {
    let trimmed = body.trim_ascii();
    if trimmed.is_empty() {
        return Vec::new();
    }
    if !line_based {
        if trimmed[0] == b'[' {
            return match serde_json::from_slice::<Vec<&RawValue>>(trimmed) {
                Ok(values) => values
                    .into_iter()
                    .zip(1..)
                    .map(|(v, number)| Item {
                        number,
                        raw: v.get().as_bytes(),
                        error: None,
                    })
                    .collect(),
                Err(e) => vec![Item {
                    number: 1,
                    raw: trimmed,
                    error: Some(format!("body is not a valid JSON array: {e}")),
                }],
            };
        }
        // A single (possibly pretty-printed) object.
        if serde_json::from_slice::<&RawValue>(trimmed).is_ok() {
            return vec![Item {
                number: 1,
                raw: trimmed,
                error: None,
            }];
        }
    }
    body.split(|b| *b == b'\n')
        .zip(1..)
        .map(|(line, number)| (line.strip_suffix(b"\r").unwrap_or(line), number))
        .filter(|(line, _)| !line.trim_ascii().is_empty())
        .map(|(raw, number)| Item {
            number,
            raw,
            error: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raws(body: &str) -> Vec<(u64, String)> {
        split(body.as_bytes(), false)
            .into_iter()
            .map(|i| (i.number, String::from_utf8_lossy(i.raw).into_owned()))
            .collect()
    }

    #[test]
    fn array_object_and_ndjson() {
        assert_eq!(
            raws(r#" [{"a":1}, {"b":2}] "#),
            vec![(1, r#"{"a":1}"#.into()), (2, r#"{"b":2}"#.into())]
        );
        assert_eq!(
            raws("{\n  \"a\": 1\n}\n"),
            vec![(1, "{\n  \"a\": 1\n}".into())]
        );
        assert_eq!(
            raws("{\"a\":1}\r\n\n{broken\n{\"c\":3}"),
            vec![
                (1, "{\"a\":1}".into()),
                (3, "{broken".into()),
                (4, "{\"c\":3}".into())
            ]
        );
    }

    #[test]
    fn malformed_array_is_one_item_with_a_reason() {
        let items = split(br#"[{"a":1},"#, false);
        assert_eq!(items.len(), 1);
        assert!(
            items[0]
                .error
                .as_ref()
                .unwrap()
                .contains("not a valid JSON array")
        );
    }

    #[test]
    fn csv_is_always_line_based() {
        assert_eq!(split(b"time,model\n1,m\n", true).len(), 2);
        assert!(split(b"  \n", false).is_empty());
    }
}
