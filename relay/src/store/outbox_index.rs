//! Which messages wait in the persistent store's outboxes, and under which sequence number:
//! held in memory by the store's writer thread, so that putting a message and settling it
//! need no index table in the file (three B-tree writes and a table per commit fewer).
//!
//! It is rebuilt from the outbox table when the store opens, and what a commit changed in it
//! is undone when that commit fails, so it always names exactly what the file holds. Its size
//! follows the outboxes', which egress bounds ([`crate::egress::OUTBOX_LIMIT`] per account).

use std::collections::HashMap;

/// The outbox names (`account␟send-log key`) of waiting messages → their sequence numbers.
#[derive(Debug, Default)]
pub(super) struct OutboxIndex {
    /// Outbox name → sequence number of its entry in the outbox table.
    seqs: HashMap<String, u64>,
    /// The last sequence number given out; never reused, also after a failed commit.
    last_seq: u64,
    /// What the commit under way changed, to undo if it fails.
    undo: Vec<Undo>,
}

/// One change of a commit under way.
#[derive(Debug)]
enum Undo {
    /// A name was added.
    Added(String),
    /// A name was taken out; it had this sequence number.
    Removed(String, u64),
}

impl OutboxIndex {
    /// An index whose sequence numbers continue after `last_seq`.
    pub(super) fn starting_after(last_seq: u64) -> OutboxIndex {
        OutboxIndex {
            last_seq,
            ..OutboxIndex::default()
        }
    }

    /// Takes in an entry the outbox table holds (when the store opens).
    pub(super) fn load(&mut self, name: String, seq: u64) {
        self.last_seq = self.last_seq.max(seq);
        self.seqs.insert(name, seq);
    }

    /// True when a message waits under `name`.
    pub(super) fn contains(&self, name: &str) -> bool {
        self.seqs.contains_key(name)
    }

    /// Adds `name` under a new sequence number, which it returns.
    pub(super) fn add(&mut self, name: String) -> u64 {
        self.last_seq += 1;
        let seq = self.last_seq;
        if let Some(previous) = self.seqs.insert(name.clone(), seq) {
            self.undo.push(Undo::Removed(name.clone(), previous));
        }
        self.undo.push(Undo::Added(name));
        seq
    }

    /// Takes `name` out; its sequence number, or `None` when nothing waits under it.
    pub(super) fn take(&mut self, name: &str) -> Option<u64> {
        let (name, seq) = self.seqs.remove_entry(name)?;
        self.undo.push(Undo::Removed(name, seq));
        Some(seq)
    }

    /// The commit under way is durable: its changes stay.
    pub(super) fn committed(&mut self) {
        self.undo.clear();
    }

    /// The commit under way failed: its changes are undone, newest first.
    pub(super) fn rolled_back(&mut self) {
        while let Some(change) = self.undo.pop() {
            match change {
                Undo::Added(name) => {
                    self.seqs.remove(&name);
                }
                Undo::Removed(name, seq) => {
                    self.seqs.insert(name, seq);
                }
            }
        }
    }

    /// How many messages wait.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.seqs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_commit_leaves_the_index_as_the_file_has_it() {
        let mut index = OutboxIndex::starting_after(7);
        index.load("a\u{1f}one".into(), 3);
        index.committed();

        // A commit settles `one`, puts `two` and `three`, then settles `two`, and fails.
        assert_eq!(index.take("a\u{1f}one"), Some(3));
        assert_eq!(index.add("a\u{1f}two".into()), 8);
        assert_eq!(index.add("a\u{1f}three".into()), 9);
        assert_eq!(index.take("a\u{1f}two"), Some(8));
        index.rolled_back();
        assert!(index.contains("a\u{1f}one"));
        assert!(!index.contains("a\u{1f}two"));
        assert!(!index.contains("a\u{1f}three"));
        assert_eq!(index.len(), 1);

        // Numbers are not given out twice, also after the failure.
        assert_eq!(index.add("a\u{1f}two".into()), 10);
        index.committed();
        index.rolled_back();
        assert!(index.contains("a\u{1f}two"));
        assert_eq!(index.take("a\u{1f}missing"), None);
    }
}
