//! The CQ-code string format of OneBot v11 (`[CQ:type,k=v,…]` mixed with text), for
//! implementations configured to post messages as strings. Escaping (PROTOCOLS.md §1.7):
//! text escapes `&` `[` `]` as `&amp;` `&#91;` `&#93;`; values inside a code also escape `,`
//! as `&#44;`. Escape `&` first, unescape `&amp;` last.

use serde_json::{Map, Value};

/// One piece of a CQ string: the same shape as an array-format segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSegment {
    /// Segment type (`text`, `at`, `image`, …).
    pub kind: String,
    /// Its data; all values are strings in the CQ format.
    pub data: Map<String, Value>,
}

/// Undoes text escaping.
pub fn unescape(text: &str) -> String {
    text.replace("&#91;", "[")
        .replace("&#93;", "]")
        .replace("&#44;", ",")
        .replace("&amp;", "&")
}

/// Escapes plain text for use outside a CQ code.
pub fn escape_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('[', "&#91;")
        .replace(']', "&#93;")
}

/// Escapes a value for use inside a CQ code.
pub fn escape_value(value: &str) -> String {
    escape_text(value).replace(',', "&#44;")
}

/// Parses a CQ string into segments. Never fails: a `[CQ:` without its closing `]` is kept
/// as text, as implementations do.
pub fn parse(message: &str) -> Vec<RawSegment> {
    let mut segments = Vec::new();
    let mut rest = message;
    let push_text = |segments: &mut Vec<RawSegment>, text: &str| {
        if text.is_empty() {
            return;
        }
        let mut data = Map::new();
        data.insert("text".into(), Value::String(unescape(text)));
        segments.push(RawSegment {
            kind: "text".into(),
            data,
        });
    };
    while let Some(start) = rest.find("[CQ:") {
        let Some(length) = rest[start..].find(']') else {
            break;
        };
        push_text(&mut segments, &rest[..start]);
        let body = &rest[start + 4..start + length];
        let mut parts = body.split(',');
        let kind = parts.next().unwrap_or_default().trim().to_owned();
        let mut data = Map::new();
        for part in parts {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            data.insert(key.trim().to_owned(), Value::String(unescape(value)));
        }
        segments.push(RawSegment { kind, data });
        rest = &rest[start + length + 1..];
    }
    push_text(&mut segments, rest);
    segments
}

/// Encodes segments as a CQ string (used in tests and for logs).
pub fn encode(segments: &[RawSegment]) -> String {
    let mut out = String::new();
    for segment in segments {
        if segment.kind == "text" {
            if let Some(Value::String(text)) = segment.data.get("text") {
                out.push_str(&escape_text(text));
            }
            continue;
        }
        out.push_str("[CQ:");
        out.push_str(&segment.kind);
        for (key, value) in &segment.data {
            let value = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.push(',');
            out.push_str(key);
            out.push('=');
            out.push_str(&escape_value(&value));
        }
        out.push(']');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let raw = "[CQ:reply,id=-1730113400][CQ:at,qq=2854196310] see &#91;docs&#93;, a&amp;b[CQ:face,id=178][CQ:image,file=9F3C1A.jpg,url=https://img.example.invalid/d?id=9F3C1A&amp;s=1]";
        let segments = parse(raw);
        let kinds: Vec<_> = segments.iter().map(|s| s.kind.as_str()).collect();
        assert_eq!(kinds, ["reply", "at", "text", "face", "image"]);
        assert_eq!(segments[2].data["text"], " see [docs], a&b");
        assert_eq!(
            segments[4].data["url"],
            "https://img.example.invalid/d?id=9F3C1A&s=1"
        );
        assert_eq!(segments[0].data["id"], "-1730113400");
        assert_eq!(encode(&segments), raw);
    }

    #[test]
    fn escaping_rules() {
        assert_eq!(escape_text("[x] a,b & c"), "&#91;x&#93; a,b &amp; c");
        assert_eq!(escape_value("[x] a,b & c"), "&#91;x&#93; a&#44;b &amp; c");
        assert_eq!(unescape("&amp;#91;"), "&#91;", "&amp; is undone last");
        let tricky = "[CQ:share,url=https://a.b/?x=1&#44;2,title=t=1]";
        let segments = parse(tricky);
        assert_eq!(segments[0].data["url"], "https://a.b/?x=1,2");
        assert_eq!(segments[0].data["title"], "t=1");
    }

    #[test]
    fn unterminated_codes_stay_text() {
        let segments = parse("hi [CQ:at,qq=1");
        assert_eq!(segments.len(), 1);
        assert_eq!(segments[0].data["text"], "hi [CQ:at,qq=1");
    }

    /// What a CQ string means once written out: text runs (adjacent ones merged, empty ones
    /// dropped, which the format cannot tell apart) and codes with their data. A `text` code
    /// counts as its `text` value. The fuzz target `onebot11_frame` compares the same way.
    fn meaning(segments: &[RawSegment]) -> Vec<(Option<String>, Map<String, Value>)> {
        let mut out: Vec<(Option<String>, Map<String, Value>)> = Vec::new();
        for segment in segments {
            if segment.kind != "text" {
                out.push((Some(segment.kind.clone()), segment.data.clone()));
                continue;
            }
            let text = match segment.data.get("text") {
                Some(Value::String(text)) => text.as_str(),
                _ => "",
            };
            if text.is_empty() {
                continue;
            }
            match out.last_mut() {
                Some((None, data)) => {
                    if let Some(Value::String(last)) = data.get_mut("text") {
                        last.push_str(text);
                    }
                }
                _ => {
                    let mut data = Map::new();
                    data.insert("text".into(), Value::String(text.to_owned()));
                    out.push((None, data));
                }
            }
        }
        out
    }

    /// Text made of the characters the escaping is about, escape-like sequences and words.
    fn tricky_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop::collection::vec(
            prop_oneof![
                Just("&".to_owned()),
                Just("[".to_owned()),
                Just("]".to_owned()),
                Just(",".to_owned()),
                Just("=".to_owned()),
                Just("&amp;".to_owned()),
                Just("&#91;".to_owned()),
                Just("&#93;".to_owned()),
                Just("&#44;".to_owned()),
                Just("[CQ:".to_owned()),
                "[a-z 群\\n]{0,4}",
                "\\PC{0,3}",
            ],
            0..8,
        )
        .prop_map(|parts| parts.concat())
    }

    /// A segment as the encoder is given it: text, or a code with a plain type and keys and
    /// values full of characters that need escaping.
    fn segment() -> impl proptest::strategy::Strategy<Value = RawSegment> {
        use proptest::prelude::*;
        prop_oneof![
            tricky_text().prop_map(|text| {
                let mut data = Map::new();
                data.insert("text".into(), Value::String(text));
                RawSegment {
                    kind: "text".into(),
                    data,
                }
            }),
            (
                "[a-z][a-z_.]{0,7}".prop_filter("not text", |k| k != "text"),
                prop::collection::btree_map("[a-z_]{1,6}", tricky_text(), 0..4),
            )
                .prop_map(|(kind, data)| RawSegment {
                    kind,
                    data: data
                        .into_iter()
                        .map(|(k, v)| (k, Value::String(v)))
                        .collect(),
                }),
        ]
    }

    proptest::proptest! {
        #[test]
        fn encoding_then_parsing_gives_the_segments_back(
            segments in proptest::collection::vec(segment(), 0..6)
        ) {
            let encoded = encode(&segments);
            proptest::prop_assert_eq!(meaning(&parse(&encoded)), meaning(&segments), "{}", encoded);
        }

        #[test]
        fn any_string_parses_and_survives_a_round_trip(text in "\\PC{0,64}|.{0,64}") {
            let parsed = parse(&text);
            let again = parse(&encode(&parsed));
            proptest::prop_assert_eq!(meaning(&again), meaning(&parsed));
            let _ = unescape(&text);
        }

        #[test]
        fn escaped_text_unescapes_to_itself(text in tricky_text()) {
            proptest::prop_assert_eq!(unescape(&escape_text(&text)), text.clone());
            proptest::prop_assert_eq!(unescape(&escape_value(&text)), text);
        }
    }
}
