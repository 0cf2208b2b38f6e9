//! Word lists for moderation: literal words, regexes and files of both, with allow entries
//! that excuse a hit, compiled once for fast matching and masking.
//!
//! Matching runs on normalized text ([`Normalize`], per list):
//! - literal words are normalized like the text at compile time and found by one
//!   Aho-Corasick automaton per list (leftmost-longest), so with fillers dropped `兼@职刷单`
//!   and `兼 职 刷 单` still hit `兼职刷单`;
//! - regexes run on the text with the list's width and case folding but with fillers KEPT
//!   (a regex names the fillers it allows itself, as in `QQ[:：]\s*\d{5,11}`; with case
//!   folding on, a regex matches case-insensitively);
//! - allow entries are literal, normalized like the words, and suppress every hit whose
//!   original span lies inside one of their matches.
//!
//! Hits are reported as byte spans of the ORIGINAL text. A span runs from the first to the
//! last original character of the match, so the fillers between them belong to it: masking
//! `兼 职 刷 单` gives `*******`, the spaces included (a mask should not leave the word's
//! shape readable).
//!
//! List files hold one entry per line: blank lines and lines starting with `#` are skipped,
//! `re:` starts a regex, anything else is a literal word (surrounding whitespace trimmed).

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use aho_corasick::{AhoCorasick, MatchKind};
use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

use crate::moderation::normalize::{normalize, normalize_mapped, original_span, Normalize};

/// The prefix that makes a line of a list file a regex.
pub const REGEX_PREFIX: &str = "re:";

/// A word list as configured.
#[derive(Debug, Clone, Default)]
pub struct ListSpec {
    /// The list's name, used in errors and hits.
    pub name: String,
    /// Literal words.
    pub words: Vec<String>,
    /// Regexes (Rust `regex` syntax), run on the text normalized without dropping fillers.
    pub patterns: Vec<String>,
    /// Files of entries, one a line (see the module documentation for the format).
    pub files: Vec<PathBuf>,
    /// How text and words are normalized before matching.
    pub normalize: Normalize,
    /// Literal entries that excuse a hit lying inside one of their matches.
    pub allow: Vec<String>,
}

/// Where an entry of a list was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntrySource {
    /// In the list's own `words`, `patterns` or `allow`.
    Inline,
    /// On a line of a list file.
    File {
        /// The file.
        path: PathBuf,
        /// The line number, counted from 1.
        line: usize,
    },
}

impl fmt::Display for EntrySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntrySource::Inline => f.write_str("in the list itself"),
            EntrySource::File { path, line } => write!(f, "at {}:{line}", path.display()),
        }
    }
}

/// Why a word list cannot be compiled.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// A list file cannot be read (missing, unreadable, not UTF-8).
    #[error("word list `{list}`: cannot read {}: {source}", path.display())]
    ReadFile {
        /// The list.
        list: String,
        /// The file.
        path: PathBuf,
        /// What reading it said.
        #[source]
        source: std::io::Error,
    },
    /// A regex does not compile.
    #[error("word list `{list}`: bad regex `{pattern}` {at}: {source}")]
    BadPattern {
        /// The list.
        list: String,
        /// The regex as written.
        pattern: String,
        /// Where it was written.
        at: EntrySource,
        /// What the regex compiler said.
        #[source]
        source: regex::Error,
    },
    /// A regex matches the empty text, so it would hit every message.
    #[error("word list `{list}`: regex `{pattern}` {at} matches empty text")]
    EmptyPattern {
        /// The list.
        list: String,
        /// The regex as written.
        pattern: String,
        /// Where it was written.
        at: EntrySource,
    },
    /// A word or allow entry is empty once normalized (only fillers, say `!!!` or `😀` when
    /// fillers are dropped), so it could never be told apart from anything.
    #[error("word list `{list}`: entry `{word}` {at} is empty after normalization")]
    EmptyWord {
        /// The list.
        list: String,
        /// The entry as written.
        word: String,
        /// Where it was written.
        at: EntrySource,
    },
    /// The regexes, each valid, are too large together.
    #[error("word list `{list}`: the regexes together do not compile: {source}")]
    PatternSet {
        /// The list.
        list: String,
        /// What the regex compiler said.
        #[source]
        source: regex::Error,
    },
    /// The words are too many or too large for one automaton.
    #[error("word list `{list}`: the words do not fit one automaton: {source}")]
    Automaton {
        /// The list.
        list: String,
        /// What the automaton builder said.
        #[source]
        source: aho_corasick::BuildError,
    },
}

/// What kind of entry a hit matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A literal word.
    Word,
    /// A regex.
    Pattern,
}

/// One match of a list entry in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The entry as written in the list (a word, or a regex without `re:`).
    pub entry: String,
    /// Whether the entry is a word or a regex.
    pub kind: EntryKind,
    /// Byte range in the ORIGINAL text, from the first matched character to the end of the
    /// last (fillers between them included).
    pub span: Range<usize>,
}

impl Hit {
    /// The original text of the hit.
    pub fn matched<'a>(&self, text: &'a str) -> &'a str {
        text.get(self.span.clone()).unwrap_or_default()
    }
}

/// A word list compiled for matching.
#[derive(Debug, Clone)]
pub struct CompiledList {
    /// The list's name.
    name: String,
    /// How text is normalized before matching.
    normalize: Normalize,
    /// The words as written, indexed by the automaton's pattern ids.
    words: Vec<String>,
    /// The normalized words (`None` when the list has none).
    automaton: Option<AhoCorasick>,
    /// The regexes as written, in the order of `patterns` and `pattern_set`.
    pattern_sources: Vec<String>,
    /// Each regex on its own, for spans.
    patterns: Vec<Regex>,
    /// All regexes at once, for the fast "any match?" test.
    pattern_set: RegexSet,
    /// The normalized allow entries (`None` when the list has none).
    allow: Option<AhoCorasick>,
}

/// Largest list file read: far above any real word list (a million entries), and a bound on
/// what a wrong path (a log, a disk image) can cost at load.
pub const MAX_LIST_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// The contents of a list file: a regular file (never a FIFO or a device, which could block
/// loading or never end) of at most [`MAX_LIST_FILE_BYTES`], in UTF-8.
fn read_list_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let metadata = std::fs::metadata(path)?;
    if !metadata.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let too_large = || std::io::Error::other(format!("larger than {MAX_LIST_FILE_BYTES} bytes"));
    if metadata.len() > MAX_LIST_FILE_BYTES {
        return Err(too_large());
    }
    let mut contents = String::new();
    std::fs::File::open(path)?
        .take(MAX_LIST_FILE_BYTES + 1)
        .read_to_string(&mut contents)?;
    if contents.len() as u64 > MAX_LIST_FILE_BYTES {
        return Err(too_large());
    }
    Ok(contents)
}

/// Entries read from the spec and its files, each with where it was written.
#[derive(Default)]
struct Entries {
    /// Literal words.
    words: Vec<(String, EntrySource)>,
    /// Regexes.
    patterns: Vec<(String, EntrySource)>,
}

impl Entries {
    /// Reads one list file into the entries.
    fn read_file(&mut self, list: &str, path: &Path) -> Result<(), ListError> {
        let contents = read_list_file(path).map_err(|source| ListError::ReadFile {
            list: list.to_owned(),
            path: path.to_owned(),
            source,
        })?;
        for (index, line) in contents.lines().enumerate() {
            let line = line.trim_start_matches('\u{FEFF}').trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = EntrySource::File {
                path: path.to_owned(),
                line: index + 1,
            };
            match line.strip_prefix(REGEX_PREFIX) {
                Some(pattern) => self.patterns.push((pattern.to_owned(), at)),
                None => self.words.push((line.to_owned(), at)),
            }
        }
        Ok(())
    }
}

impl CompiledList {
    /// Compiles a list: reads its files, normalizes its words and allow entries, builds the
    /// automata and compiles the regexes.
    ///
    /// # Errors
    /// The first problem [`CompiledList::compile_all`] finds.
    pub fn compile(spec: &ListSpec) -> Result<CompiledList, ListError> {
        CompiledList::compile_all(spec).map_err(|mut errors| errors.swap_remove(0))
    }

    /// Compiles a list like [`CompiledList::compile`], but reports every bad entry, so an
    /// operator fixes a list (or a file of it) in one pass.
    ///
    /// # Errors
    /// At least one [`ListError`], each naming the list (and the file and line of a bad entry
    /// from a file): a file that cannot be read, a regex that is invalid or matches empty
    /// text, a word that is empty after normalization, or a whole too large to compile.
    pub fn compile_all(spec: &ListSpec) -> Result<CompiledList, Vec<ListError>> {
        let list = spec.name.as_str();
        let mut errors = Vec::new();
        let mut entries = Entries {
            words: spec
                .words
                .iter()
                .map(|word| (word.clone(), EntrySource::Inline))
                .collect(),
            patterns: spec
                .patterns
                .iter()
                .map(|pattern| (pattern.clone(), EntrySource::Inline))
                .collect(),
        };
        for path in &spec.files {
            if let Err(error) = entries.read_file(list, path) {
                errors.push(error);
            }
        }
        let normalized_words = normalize_words(list, &entries.words, spec.normalize, &mut errors);
        let allow_entries: Vec<(String, EntrySource)> = spec
            .allow
            .iter()
            .map(|word| (word.clone(), EntrySource::Inline))
            .collect();
        let normalized_allow = normalize_words(list, &allow_entries, spec.normalize, &mut errors);

        let case_insensitive = spec.normalize.case;
        let mut patterns = Vec::with_capacity(entries.patterns.len());
        for (pattern, at) in &entries.patterns {
            match RegexBuilder::new(pattern)
                .case_insensitive(case_insensitive)
                .build()
            {
                Ok(compiled) if compiled.is_match("") => errors.push(ListError::EmptyPattern {
                    list: list.to_owned(),
                    pattern: pattern.clone(),
                    at: at.clone(),
                }),
                Ok(compiled) => patterns.push(compiled),
                Err(source) => errors.push(ListError::BadPattern {
                    list: list.to_owned(),
                    pattern: pattern.clone(),
                    at: at.clone(),
                    source,
                }),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let automaton = build_automaton(list, &normalized_words, MatchKind::LeftmostLongest)
            .map_err(|error| vec![error])?;
        let allow = build_automaton(list, &normalized_allow, MatchKind::Standard)
            .map_err(|error| vec![error])?;
        let pattern_set = RegexSetBuilder::new(entries.patterns.iter().map(|(p, _)| p))
            .case_insensitive(case_insensitive)
            .build()
            .map_err(|source| {
                vec![ListError::PatternSet {
                    list: list.to_owned(),
                    source,
                }]
            })?;

        Ok(CompiledList {
            name: spec.name.clone(),
            normalize: spec.normalize,
            words: entries.words.into_iter().map(|(word, _)| word).collect(),
            automaton,
            pattern_sources: entries.patterns.into_iter().map(|(p, _)| p).collect(),
            patterns,
            pattern_set,
            allow,
        })
    }

    /// The list's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many entries (words and regexes, files included; allow entries not counted).
    pub fn len(&self) -> usize {
        self.words.len() + self.patterns.len()
    }

    /// True when the list has no words and no regexes (it never hits).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every hit in a text that no allow entry excuses, in order of position. Literal words
    /// do not overlap one another (leftmost-longest); a regex hit may overlap a word hit.
    pub fn find(&self, text: &str) -> Vec<Hit> {
        let mut hits = Vec::new();
        let mut word_view = None;
        if let Some(automaton) = &self.automaton {
            let (normalized, map) = normalize_mapped(text, self.normalize);
            for found in automaton.find_iter(&normalized) {
                let Some(span) = original_span(text, &map, found.range()) else {
                    continue;
                };
                let entry = self
                    .words
                    .get(found.pattern().as_usize())
                    .cloned()
                    .unwrap_or_default();
                hits.push(Hit {
                    entry,
                    kind: EntryKind::Word,
                    span,
                });
            }
            word_view = Some((normalized, map));
        }
        if !self.patterns.is_empty() {
            let (normalized, map) = normalize_mapped(text, self.normalize.keeping_symbols());
            for index in self.pattern_set.matches(&normalized).iter() {
                let (Some(pattern), Some(source)) =
                    (self.patterns.get(index), self.pattern_sources.get(index))
                else {
                    continue;
                };
                for found in pattern.find_iter(&normalized) {
                    if let Some(span) = original_span(text, &map, found.range()) {
                        hits.push(Hit {
                            entry: source.clone(),
                            kind: EntryKind::Pattern,
                            span,
                        });
                    }
                }
            }
        }
        if let (Some(allow), false) = (&self.allow, hits.is_empty()) {
            let (normalized, map) =
                word_view.unwrap_or_else(|| normalize_mapped(text, self.normalize));
            let allowed: Vec<Range<usize>> = allow
                .find_overlapping_iter(&normalized)
                .filter_map(|found| original_span(text, &map, found.range()))
                .collect();
            hits.retain(|hit| {
                !allowed
                    .iter()
                    .any(|excuse| excuse.start <= hit.span.start && hit.span.end <= excuse.end)
            });
        }
        hits.sort_by_key(|hit| (hit.span.start, hit.span.end));
        hits
    }

    /// True when the text has a hit: the fast path (one automaton search and one regex-set
    /// test); only a list with allow entries looks further when something matched.
    pub fn is_hit(&self, text: &str) -> bool {
        let mut matched = false;
        if let Some(automaton) = &self.automaton {
            matched = automaton.is_match(&normalize(text, self.normalize));
        }
        if !matched && !self.patterns.is_empty() {
            matched = self
                .pattern_set
                .is_match(&normalize(text, self.normalize.keeping_symbols()));
        }
        if !matched {
            return false;
        }
        self.allow.is_none() || !self.find(text).is_empty()
    }

    /// The text with every original character covered by a hit replaced by `*` (fillers
    /// inside a hit included), or `None` when nothing hits.
    pub fn mask(&self, text: &str) -> Option<String> {
        let hits = self.find(text);
        if hits.is_empty() {
            return None;
        }
        let covered = merge_spans(hits.into_iter().map(|hit| hit.span));
        let mut covered = covered.iter().peekable();
        let mut out = String::with_capacity(text.len());
        for (offset, c) in text.char_indices() {
            while covered.peek().is_some_and(|span| span.end <= offset) {
                covered.next();
            }
            if covered.peek().is_some_and(|span| span.start <= offset) {
                out.push('*');
            } else {
                out.push(c);
            }
        }
        Some(out)
    }
}

/// The words normalized with `options`; a word that normalizes to nothing is left out and
/// reported as [`ListError::EmptyWord`] in `errors`.
fn normalize_words(
    list: &str,
    words: &[(String, EntrySource)],
    options: Normalize,
    errors: &mut Vec<ListError>,
) -> Vec<String> {
    let mut normalized_words = Vec::with_capacity(words.len());
    for (word, at) in words {
        let normalized = normalize(word, options);
        if normalized.is_empty() {
            errors.push(ListError::EmptyWord {
                list: list.to_owned(),
                word: word.clone(),
                at: at.clone(),
            });
        } else {
            normalized_words.push(normalized);
        }
    }
    normalized_words
}

/// One automaton for the words, or `None` when there are none.
///
/// # Errors
/// [`ListError::Automaton`] when the words are too large for one automaton.
fn build_automaton(
    list: &str,
    words: &[String],
    kind: MatchKind,
) -> Result<Option<AhoCorasick>, ListError> {
    if words.is_empty() {
        return Ok(None);
    }
    AhoCorasick::builder()
        .match_kind(kind)
        .build(words)
        .map(Some)
        .map_err(|source| ListError::Automaton {
            list: list.to_owned(),
            source,
        })
}

/// Sorted, disjoint byte ranges covering the same bytes as `spans`.
fn merge_spans(spans: impl Iterator<Item = Range<usize>>) -> Vec<Range<usize>> {
    let mut spans: Vec<Range<usize>> = spans.collect();
    spans.sort_by_key(|span| span.start);
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(spans.len());
    for span in spans {
        match merged.last_mut() {
            Some(last) if span.start <= last.end => last.end = last.end.max(span.end),
            _ => merged.push(span),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use proptest::prelude::*;

    use super::*;
    use crate::moderation::fingerprint::fingerprint;

    fn list(words: &[&str], patterns: &[&str], allow: &[&str]) -> CompiledList {
        CompiledList::compile(&ListSpec {
            name: "ads".into(),
            words: words.iter().map(|w| w.to_string()).collect(),
            patterns: patterns.iter().map(|p| p.to_string()).collect(),
            allow: allow.iter().map(|a| a.to_string()).collect(),
            ..ListSpec::default()
        })
        .expect("compiles")
    }

    #[test]
    fn words_are_found_through_fillers_and_masked_in_the_original() {
        let ads = list(&["兼职刷单"], &[], &[]);
        assert_eq!(
            ads.mask("今天兼职刷单日结").as_deref(),
            Some("今天****日结")
        );
        assert_eq!(ads.mask("兼 职 刷 单").as_deref(), Some("*******"));
        assert_eq!(ads.mask("快来兼职@刷单!").as_deref(), Some("快来*****!"));
        assert_eq!(ads.mask("兼职😀刷单").as_deref(), Some("*****"));
        let hits = ads.find("今天兼职刷单日结");
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].entry, "兼职刷单");
        assert_eq!(hits[0].kind, EntryKind::Word);
        assert_eq!(hits[0].matched("今天兼职刷单日结"), "兼职刷单");
        assert!(ads.is_hit("兼职@刷单"));
        assert!(!ads.is_hit("今天刷单兼职"));
        assert_eq!(ads.mask("今天天气好"), None);
        assert_eq!(ads.len(), 1);
    }

    #[test]
    fn allow_entries_suppress_the_hits_they_cover() {
        let ads = list(&["兼职"], &[], &["兼职老师"]);
        assert!(!ads.is_hit("招聘兼职老师"));
        assert!(!ads.is_hit("招聘兼 职 老 师"));
        assert_eq!(ads.mask("招聘兼职老师"), None);
        assert!(ads.is_hit("招聘兼职老师，也招兼职"));
        assert_eq!(
            ads.mask("招聘兼职老师，也招兼职").as_deref(),
            Some("招聘兼职老师，也招**")
        );
    }

    #[test]
    fn case_and_width_are_folded() {
        let ads = list(&["VX"], &[], &[]);
        for text in ["加ＶＸ", "加vx", "加Vx", "加 v x"] {
            assert!(ads.is_hit(text), "{text}");
        }
        assert_eq!(ads.mask("加ＶＸ123").as_deref(), Some("加**123"));
        let exact = CompiledList::compile(&ListSpec {
            name: "exact".into(),
            words: vec!["VX".into()],
            normalize: Normalize::NONE,
            ..ListSpec::default()
        })
        .expect("compiles");
        assert!(exact.is_hit("加VX"));
        assert!(!exact.is_hit("加vx"));
        assert!(!exact.is_hit("加ＶＸ"));
    }

    #[test]
    fn regexes_run_on_width_and_case_folded_text_with_fillers() {
        let ads = list(&[], &[r"QQ[:：]\s*\d{5,11}"], &[]);
        assert!(ads.is_hit("加我 qq：123456789 详聊"));
        assert!(ads.is_hit("加我ＱＱ： １２３４５６"));
        assert!(!ads.is_hit("QQ 群很多"));
        let text = "加我 QQ: 12345678 详聊";
        let hits = ads.find(text);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].kind, EntryKind::Pattern);
        assert_eq!(hits[0].matched(text), "QQ: 12345678");
        assert_eq!(ads.mask(text).as_deref(), Some("加我 ************ 详聊"));
    }

    #[test]
    fn list_files_hold_words_regexes_and_comments() {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(
            file,
            "# ads\n\n兼职刷单\n  日结  \nre:加\\s*v\\d+\n# re:not("
        )
        .expect("write");
        let ads = CompiledList::compile(&ListSpec {
            name: "ads".into(),
            words: vec!["代购".into()],
            files: vec![file.path().to_owned()],
            ..ListSpec::default()
        })
        .expect("compiles");
        assert_eq!(ads.len(), 4);
        assert!(ads.is_hit("日 结"));
        assert!(ads.is_hit("找我加 V8"));
        assert!(ads.is_hit("海外代购"));
        assert!(!ads.is_hit("# ads"));
    }

    #[test]
    fn a_bad_regex_in_a_file_names_the_file_and_line() {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(file, "# ads\n兼职\nre:QQ(\\d+").expect("write");
        let error = CompiledList::compile(&ListSpec {
            name: "ads".into(),
            files: vec![file.path().to_owned()],
            ..ListSpec::default()
        })
        .expect_err("bad regex");
        let message = error.to_string();
        assert!(matches!(
            &error,
            ListError::BadPattern {
                at: EntrySource::File { line: 3, .. },
                ..
            }
        ));
        assert!(message.contains("`ads`"), "{message}");
        assert!(
            message.contains(&format!("{}:3", file.path().display())),
            "{message}"
        );
        assert!(message.contains("QQ(\\d+"), "{message}");
        assert!(message.contains("unclosed group"), "{message}");
    }

    #[test]
    fn an_inline_bad_regex_and_empty_entries_are_errors() {
        let bad = CompiledList::compile(&ListSpec {
            name: "ads".into(),
            patterns: vec!["[".into()],
            ..ListSpec::default()
        });
        assert!(matches!(
            bad,
            Err(ListError::BadPattern {
                at: EntrySource::Inline,
                ..
            })
        ));
        let empty = CompiledList::compile(&ListSpec {
            name: "ads".into(),
            patterns: vec!["x*".into()],
            ..ListSpec::default()
        });
        assert!(matches!(empty, Err(ListError::EmptyPattern { .. })));
        let fillers_only = CompiledList::compile(&ListSpec {
            name: "ads".into(),
            words: vec!["!!!".into()],
            ..ListSpec::default()
        });
        assert!(matches!(fillers_only, Err(ListError::EmptyWord { .. })));
    }

    #[test]
    fn every_bad_entry_is_reported_at_once() {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(file, "re:(\nok\nre:[\n!!!").expect("write");
        let errors = CompiledList::compile_all(&ListSpec {
            name: "ads".into(),
            words: vec!["".into()],
            patterns: vec!["a**".into()],
            files: vec![
                file.path().to_owned(),
                PathBuf::from("/nonexistent/q/x.txt"),
            ],
            ..ListSpec::default()
        })
        .expect_err("bad entries");
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let all = lines.join("\n");
        let path = file.path().display().to_string();
        for expected in [
            format!("`(` at {path}:1"),
            format!("`[` at {path}:3"),
            format!("`!!!` at {path}:4 is empty"),
            "`` in the list itself is empty".to_owned(),
            "/nonexistent/q/x.txt".to_owned(),
        ] {
            assert!(all.contains(&expected), "{expected} not in:\n{all}");
        }
        assert_eq!(errors.len(), 6, "{all}");
        assert!(matches!(
            CompiledList::compile(&ListSpec {
                name: "ads".into(),
                patterns: vec!["(".into(), "[".into()],
                ..ListSpec::default()
            }),
            Err(ListError::BadPattern { pattern, .. }) if pattern == "("
        ));
    }

    #[test]
    fn a_directory_or_device_is_not_read() {
        for path in ["/dev/zero", "/"] {
            let error = CompiledList::compile(&ListSpec {
                name: "ads".into(),
                files: vec![PathBuf::from(path)],
                ..ListSpec::default()
            })
            .expect_err("not a list file");
            assert!(
                error.to_string().contains("not a regular file"),
                "{path}: {error}"
            );
        }
    }

    #[test]
    fn a_missing_file_names_the_path() {
        let path = PathBuf::from("/nonexistent/qunbridge/ads.txt");
        let error = CompiledList::compile(&ListSpec {
            name: "ads".into(),
            files: vec![path.clone()],
            ..ListSpec::default()
        })
        .expect_err("missing");
        assert!(matches!(&error, ListError::ReadFile { path: p, .. } if *p == path));
        assert!(error.to_string().contains("/nonexistent/qunbridge/ads.txt"));
    }

    #[test]
    fn an_empty_list_never_hits() {
        let empty = list(&[], &[], &["x"]);
        assert!(empty.is_empty());
        assert!(!empty.is_hit("anything"));
        assert_eq!(empty.mask("anything"), None);
    }

    proptest! {
        #[test]
        fn no_input_panics(text in any::<String>()) {
            let ads = list(&["兼职", "vx", "ǰ"], &[r"QQ[:：]\s*\d{5,11}", r"\p{Han}{2}\d"], &["兼职老师"]);
            let _ = fingerprint(&text);
            let (normalized, map) = normalize_mapped(&text, Normalize::ALL);
            prop_assert_eq!(map.len(), normalized.len());
            let hits = ads.find(&text);
            for hit in &hits {
                prop_assert!(text.get(hit.span.clone()).is_some());
            }
            prop_assert_eq!(ads.is_hit(&text), !hits.is_empty());
            let masked = ads.mask(&text);
            prop_assert_eq!(masked.is_some(), !hits.is_empty());
            if let Some(masked) = masked {
                prop_assert_eq!(masked.chars().count(), text.chars().count());
            }
        }
    }
}
