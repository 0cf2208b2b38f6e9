//! "Did you mean …?" for unknown config keys: the keys the table at that place knows (read
//! from the decoding structs themselves, so the list cannot drift), and the nearest of them
//! by edit distance when it is near enough to be a typo.

use qunbridge_connectors::protocol::AccountTable;
use serde::de::{self, Deserialize, Deserializer, Visitor};

use super::raw::{
    secret_keys, RawAdmin, RawBroker, RawConfig, RawFilter, RawFlood, RawGroupLimits, RawLimits,
    RawLink, RawList, RawMedia, RawModeration, RawRule, RawStore, RawWave,
};

/// The known key nearest to `unknown` in the table at `parent` (the path's segments, map
/// keys and list indexes alike), when it is close enough to be a typo of it.
pub fn nearest_key(parent: &[String], unknown: &str) -> Option<String> {
    let fields = table_keys(parent);
    // A secret may also be given as `<key>_file`.
    let file_keys = fields
        .iter()
        .filter(|key| secret_keys().any(|secret| secret == **key))
        .map(|key| format!("{key}_file"));
    let candidates = fields.iter().map(|key| (*key).to_owned()).chain(file_keys);
    // Up to a third of the word may be mistyped, at least one edit (`urll`, `brust`).
    let tolerance = (unknown.chars().count() / 3).max(1);
    candidates
        .map(|key| (edit_distance(unknown, &key), key))
        .filter(|(distance, _)| *distance <= tolerance)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, key)| key)
}

/// The keys of the table at `parent`; none for places that are not tables of known keys.
fn table_keys(parent: &[String]) -> &'static [&'static str] {
    let parent: Vec<&str> = parent.iter().map(String::as_str).collect();
    match parent.as_slice() {
        [] => fields::<RawConfig>(),
        ["broker"] => fields::<RawBroker>(),
        ["admin"] => fields::<RawAdmin>(),
        ["store"] => fields::<RawStore>(),
        ["media"] => fields::<RawMedia>(),
        ["accounts", _] => fields::<AccountTable>(),
        ["links", _] => fields::<RawLink>(),
        ["limits", _] => fields::<RawLimits>(),
        ["limits", _, "groups", _] => fields::<RawGroupLimits>(),
        ["filters", _] | ["links", _, "filters"] => fields::<RawFilter>(),
        ["filters", _, "rules", _] | ["links", _, "filters", "rules", _] => fields::<RawRule>(),
        ["moderation"] => fields::<RawModeration>(),
        ["moderation", "flood"] => fields::<RawFlood>(),
        ["moderation", "wave"] => fields::<RawWave>(),
        ["moderation", "lists", _] => fields::<RawList>(),
        _ => &[],
    }
}

/// The key names a derived `Deserialize` struct accepts, as serde spells them.
fn fields<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    let mut names: &'static [&'static str] = &[];
    // The probe always fails once it has seen the names: nothing is decoded.
    let _ = T::deserialize(FieldNames { names: &mut names });
    names
}

/// A deserializer that only records the field names a struct asks it for.
struct FieldNames<'a> {
    /// Where the names go.
    names: &'a mut &'static [&'static str],
}

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.names = fields;
        Err(de::Error::custom("field names taken"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// Edit distance counting single-character insertions, deletions, substitutions and swaps
/// of neighbours (`brust` is one edit from `burst`): the optimal string alignment distance.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // rows[i][j]: distance between the first i characters of `a` and the first j of `b`.
    let mut rows = vec![vec![0; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let substitution = rows[i - 1][j - 1] + usize::from(a[i - 1] != b[j - 1]);
            let mut best = substitution.min(rows[i - 1][j] + 1).min(rows[i][j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(segments: &[&str]) -> Vec<String> {
        segments.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn distances() {
        assert_eq!(edit_distance("acess_token", "access_token"), 1);
        assert_eq!(edit_distance("fromat", "format"), 1);
        assert_eq!(edit_distance("colour", "roles"), 4);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn typos_get_the_nearest_key_of_their_own_table() {
        let near = |parent: &[&str], key: &str| nearest_key(&path(parent), key);
        assert_eq!(
            near(&["accounts", "qq"], "acess_token").as_deref(),
            Some("access_token")
        );
        assert_eq!(near(&["broker"], "urll").as_deref(), Some("url"));
        assert_eq!(near(&["links", "0"], "fromat").as_deref(), Some("format"));
        assert_eq!(
            near(&["links", "0", "filters", "rules", "1"], "actoin").as_deref(),
            Some("action")
        );
        assert_eq!(
            near(&["limits", "qq", "groups", "5"], "brust").as_deref(),
            Some("burst")
        );
        assert_eq!(
            near(&["accounts", "hub"], "tokn_file").as_deref(),
            Some("token_file")
        );
        assert_eq!(
            near(&["moderation", "lists", "ads"], "word").as_deref(),
            Some("words")
        );
        assert_eq!(
            near(&["moderation", "wave"], "min_char").as_deref(),
            Some("min_chars")
        );
        assert_eq!(
            near(&["filters", "wechat", "rules", "0"], "lsit").as_deref(),
            Some("list")
        );
        assert_eq!(near(&[], "colour"), None, "nothing near enough");
        assert_eq!(near(&["nowhere"], "url"), None);
    }
}
