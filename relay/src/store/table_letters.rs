//! Which namespaces of keys (a key's first letter, [`super::keys`]) the persistent store's
//! key table may hold, so that a lookup of keys it cannot hold skips the table.
//!
//! The core looks up every inbound message's envelope id, content key and echo fingerprint.
//! All three are short-lived, held in memory ([`super::short_lived`]), and reach the table
//! only when the set in memory is full, or from a store written before they were
//! short-lived. Knowing that no such key is there saves a read transaction and a B-tree
//! descent per key for every message.

use std::sync::atomic::{AtomicU64, Ordering};

/// Letters as bits: a key's first character, modulo 64. Two letters may share a bit, which
/// only makes a lookup read the table when it need not; a letter is never forgotten (a
/// removed key leaves its bit set).
#[derive(Debug, Default)]
pub struct TableLetters {
    /// One bit per first character (modulo 64).
    bits: AtomicU64,
}

/// The bit of a key's first character; the empty key has bit 0.
fn bit(key: &str) -> u64 {
    let first = key.chars().next().map_or(0, u32::from);
    1 << (first % 64)
}

impl TableLetters {
    /// Notes that the table holds (or is about to hold) `key`. The writer notes a key before
    /// the commit that writes it, so a reader that can see the key sees its letter.
    pub fn note(&self, key: &str) {
        self.bits.fetch_or(bit(key), Ordering::Release);
    }

    /// Notes every letter: what the table holds is not known.
    pub fn note_all(&self) {
        self.bits.store(u64::MAX, Ordering::Release);
    }

    /// False when the table holds no key of `key`'s letter.
    pub fn may_hold(&self, key: &str) -> bool {
        self.bits.load(Ordering::Acquire) & bit(key) != 0
    }

    /// The letters of what `keys` (a table's keys in order) holds, found by jumping from
    /// each first character found to the next one: one range read per letter present.
    ///
    /// # Errors
    /// The table's read error.
    pub fn of_table(
        keys: &impl redb::ReadableTable<&'static str, u64>,
    ) -> Result<TableLetters, redb::Error> {
        let letters = TableLetters::default();
        let mut from = String::new();
        loop {
            let Some(entry) = keys.range(from.as_str()..)?.next() else {
                return Ok(letters);
            };
            let (key, _) = entry?;
            let key = key.value();
            letters.note(key);
            let Some(first) = key.chars().next() else {
                // The empty key: go on from the smallest non-empty one.
                from = "\0".to_owned();
                continue;
            };
            match char::from_u32(u32::from(first) + 1) {
                Some(next) => from = next.to_string(),
                None => {
                    // The last character, or the one before the surrogates: stop guessing.
                    letters.note_all();
                    return Ok(letters);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{Database, ReadableDatabase, TableDefinition};

    const TABLE: TableDefinition<&str, u64> = TableDefinition::new("keys");

    #[test]
    fn the_letters_of_a_table_are_those_of_its_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::create(dir.path().join("t.redb")).expect("create");
        let txn = db.begin_write().expect("write");
        {
            let mut table = txn.open_table(TABLE).expect("table");
            for key in ["s\u{1f}a", "s\u{1f}b", "m\u{1f}x", "", "群", "\u{10ffff}z"] {
                table.insert(key, 1).expect("insert");
            }
        }
        txn.commit().expect("commit");
        let txn = db.begin_read().expect("read");
        let table = txn.open_table(TABLE).expect("table");
        let letters = TableLetters::of_table(&table).expect("letters");
        for key in ["s\u{1f}q", "m", "", "群岛"] {
            assert!(letters.may_hold(key), "{key:?}");
        }
        // The last character makes every letter possible.
        assert!(letters.may_hold("i\u{1f}qq:1:7"));

        let txn = db.begin_write().expect("write");
        {
            let mut table = txn.open_table(TABLE).expect("table");
            table.remove("\u{10ffff}z").expect("remove");
        }
        txn.commit().expect("commit");
        let txn = db.begin_read().expect("read");
        let table = txn.open_table(TABLE).expect("table");
        let letters = TableLetters::of_table(&table).expect("letters");
        assert!(letters.may_hold("s\u{1f}q"));
        assert!(letters.may_hold("群"));
        for key in ["i\u{1f}qq:1:7", "c\u{1f}x", "e\u{1f}qq"] {
            assert!(!letters.may_hold(key), "{key:?}");
        }
        letters.note("e\u{1f}qq\u{1f}1");
        assert!(letters.may_hold("e\u{1f}wx"));
        assert!(!letters.may_hold("i\u{1f}qq:1:7"));
    }
}
