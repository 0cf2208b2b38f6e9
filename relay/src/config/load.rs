//! Reading the config file: TOML through the `config` crate, then `${ENV}` interpolation in
//! every string, then `<key>_file` for secrets, then deserialization that records every
//! unknown key instead of stopping at the first. Every problem found is returned together.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::raw::{secret_keys, RawConfig};
use super::suggest::nearest_key;

/// Where environment variables come from; a trait so tests need not touch the process env.
pub trait Env {
    /// The value of a variable, `None` when unset or not UTF-8.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for std::collections::HashMap<&str, &str> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).map(|v| (*v).to_owned())
    }
}

/// Largest secret file (`<key>_file`) read: a token or password, never more.
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// Reads and decodes a config file. Returns the raw config (as far as it could be decoded)
/// and every problem met on the way.
pub fn read(path: &Path, env: &dyn Env) -> (RawConfig, Vec<String>) {
    match read_tree(path) {
        Ok(tree) => {
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            finish(tree, &credentials_base(&dir, env), env)
        }
        Err(problem) => (RawConfig::default(), vec![problem]),
    }
}

/// Decodes config text held in memory exactly as [`read`] decodes a file whose directory is
/// `dir` (where relative `<key>_file` paths are looked up unless `$CREDENTIALS_DIRECTORY` is
/// set).
pub fn read_text(text: &str, dir: &Path, env: &dyn Env) -> (RawConfig, Vec<String>) {
    let source = config::File::from_str(text, config::FileFormat::Toml);
    match tree_of(source) {
        Ok(tree) => finish(tree, &credentials_base(dir, env), env),
        Err(error) => (RawConfig::default(), vec![format!("config text: {error}")]),
    }
}

/// Interpolation, secret files and decoding of a parsed tree.
fn finish(mut tree: Value, base: &Path, env: &dyn Env) -> (RawConfig, Vec<String>) {
    let mut problems = Vec::new();
    interpolate(&mut tree, "", env, &mut problems);
    resolve_secret_files(&mut tree, "", base, &mut problems);
    let raw = decode(tree, &mut problems);
    (raw, problems)
}

/// The file as a JSON tree, through the `config` crate's TOML source.
fn read_tree(path: &Path) -> Result<Value, String> {
    if !path.is_file() {
        return Err(format!(
            "config file `{}` does not exist or is not a file",
            path.display()
        ));
    }
    let source = config::File::from(path.to_path_buf()).format(config::FileFormat::Toml);
    tree_of(source).map_err(|error| format!("config file `{}`: {error}", path.display()))
}

/// A TOML source as a JSON tree.
fn tree_of<S>(source: S) -> Result<Value, config::ConfigError>
where
    S: config::Source + Send + Sync + 'static,
{
    config::Config::builder()
        .add_source(source)
        .build()
        .and_then(|cfg| cfg.try_deserialize::<Value>())
}

/// Decodes the tree into [`RawConfig`], noting unknown keys and type errors.
fn decode(tree: Value, problems: &mut Vec<String>) -> RawConfig {
    let mut unknown = Vec::new();
    let mut note_unknown = |path: serde_ignored::Path<'_>| {
        let mut segments = segments(&path);
        let key = segments.pop().unwrap_or_default();
        unknown.push((path.to_string(), nearest_key(&segments, &key)));
    };
    let deserializer = serde_ignored::Deserializer::new(tree, &mut note_unknown);
    let raw = match serde_path_to_error::deserialize::<_, RawConfig>(deserializer) {
        Ok(raw) => raw,
        Err(error) => {
            problems.push(format!("`{}`: {}", error.path(), error.inner()));
            RawConfig::default()
        }
    };
    for (key, nearest) in unknown {
        match nearest {
            Some(nearest) => {
                problems.push(format!("`{key}`: unknown key; did you mean `{nearest}`?"))
            }
            None => problems.push(format!("`{key}`: unknown key")),
        }
    }
    raw
}

/// The map keys and list indexes of a decoding path, outermost first.
fn segments(path: &serde_ignored::Path<'_>) -> Vec<String> {
    match path {
        serde_ignored::Path::Root => Vec::new(),
        serde_ignored::Path::Seq { parent, index } => {
            let mut segments = segments(parent);
            segments.push(index.to_string());
            segments
        }
        serde_ignored::Path::Map { parent, key } => {
            let mut segments = segments(parent);
            segments.push(key.clone());
            segments
        }
        serde_ignored::Path::Some { parent }
        | serde_ignored::Path::NewtypeStruct { parent }
        | serde_ignored::Path::NewtypeVariant { parent } => segments(parent),
    }
}

/// Joins a key path for messages: `accounts.hub.token`, `links[0].name`.
fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Replaces `${NAME}` in every string with the variable's value (`$$` is a literal `$`).
fn interpolate(value: &mut Value, path: &str, env: &dyn Env, problems: &mut Vec<String>) {
    match value {
        Value::String(text) if text.contains('$') => match expand(text, env) {
            Ok(expanded) => *text = expanded,
            Err(problem) => {
                let shown = if is_secret_path(path) {
                    "<redacted>".to_owned()
                } else {
                    format!("{text:?}")
                };
                problems.push(format!("`{path}` = {shown}: {problem}"));
            }
        },
        Value::Array(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                interpolate(item, &format!("{path}[{index}]"), env, problems);
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                interpolate(item, &join(path, key), env, problems);
            }
        }
        _ => {}
    }
}

/// True when the last key of a path names a secret.
fn is_secret_path(path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path);
    secret_keys().any(|key| key == last)
}

/// Expands one string.
fn expand(text: &str, env: &dyn Env) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = inner
                .find('}')
                .ok_or_else(|| "unterminated `${` (write `$$` for a literal `$`)".to_owned())?;
            let name = &inner[..end];
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!("`${{{name}}}` is not a valid variable name"));
            }
            let value = env
                .var(name)
                .ok_or_else(|| format!("environment variable `{name}` is not set"))?;
            out.push_str(&value);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Where a relative `<key>_file` path is looked up: `$CREDENTIALS_DIRECTORY` under systemd,
/// else the config file's directory `config_dir`.
fn credentials_base(config_dir: &Path, env: &dyn Env) -> PathBuf {
    if let Some(dir) = env.var("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    config_dir.to_path_buf()
}

/// The contents of a secret file: a regular file (never a FIFO or device, which could block
/// or never end) of at most [`MAX_SECRET_FILE_BYTES`], in UTF-8.
fn read_secret_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let metadata = std::fs::metadata(path).map_err(|error| error.to_string())?;
    if !metadata.is_file() {
        return Err("not a regular file".into());
    }
    if metadata.len() > MAX_SECRET_FILE_BYTES {
        return Err(format!("larger than {MAX_SECRET_FILE_BYTES} bytes"));
    }
    let file = std::fs::File::open(path).map_err(|error| error.to_string())?;
    let mut contents = String::new();
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_string(&mut contents)
        .map_err(|error| error.to_string())?;
    if contents.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(format!("larger than {MAX_SECRET_FILE_BYTES} bytes"));
    }
    Ok(contents)
}

/// Replaces every `<secret>_file = PATH` with `<secret> = <file contents>`.
fn resolve_secret_files(value: &mut Value, path: &str, base: &Path, problems: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            resolve_in_table(map, path, base, problems);
            for (key, item) in map.iter_mut() {
                resolve_secret_files(item, &join(path, key), base, problems);
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                resolve_secret_files(item, &format!("{path}[{index}]"), base, problems);
            }
        }
        _ => {}
    }
}

/// The `_file` keys of one table.
fn resolve_in_table(
    map: &mut Map<String, Value>,
    path: &str,
    base: &Path,
    problems: &mut Vec<String>,
) {
    for secret in secret_keys() {
        let file_key = format!("{secret}_file");
        let Some(file_value) = map.remove(&file_key) else {
            continue;
        };
        let key_path = join(path, &file_key);
        let Value::String(file) = file_value else {
            problems.push(format!("`{key_path}`: must be a file path string"));
            continue;
        };
        if map.contains_key(secret) {
            problems.push(format!(
                "`{key_path}` = {file:?}: `{secret}` is set too; give one of them"
            ));
            continue;
        }
        let full = base.join(&file);
        match read_secret_file(&full) {
            Ok(contents) => {
                let secret_value = contents.trim_end_matches(['\r', '\n']).to_owned();
                if secret_value.is_empty() {
                    problems.push(format!(
                        "`{key_path}` = {file:?}: `{}` is empty",
                        full.display()
                    ));
                } else {
                    map.insert(secret.to_owned(), Value::String(secret_value));
                }
            }
            Err(error) => problems.push(format!(
                "`{key_path}` = {file:?}: cannot read `{}`: {error}",
                full.display()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn expansion_rules() {
        let env: HashMap<&str, &str> = [("A", "x"), ("LONG_NAME", "y")].into();
        assert_eq!(expand("${A}-${LONG_NAME}", &env).expect("ok"), "x-y");
        assert_eq!(expand("$$5 and $", &env).expect("ok"), "$5 and $");
        assert!(expand("${MISSING}", &env)
            .expect_err("missing")
            .contains("`MISSING` is not set"));
        assert!(expand("${A", &env)
            .expect_err("open")
            .contains("unterminated"));
        assert!(expand("${A-B}", &env)
            .expect_err("bad")
            .contains("not a valid"));
    }

    #[test]
    fn unknown_keys_are_all_reported_and_secret_files_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("tok"), "from-file\n").expect("write");
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            r#"
            colour = "red"
            [broker]
            urll = "x"
            [accounts.hub]
            platform = "api"
            listen = "127.0.0.1:1"
            token_file = "tok"
            [[links]]
            groups = ["hub:a", "hub:b"]
            fromat = "x"
            "#,
        )
        .expect("write");
        let env: HashMap<&str, &str> = HashMap::new();
        let (raw, problems) = read(&path, &env);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems.contains(&"`broker.urll`: unknown key; did you mean `url`?".to_owned()),
            "{problems:?}"
        );
        assert!(
            problems.contains(&"`links.0.fromat`: unknown key; did you mean `format`?".to_owned()),
            "{problems:?}"
        );
        assert!(
            problems.contains(&"`colour`: unknown key".to_owned()),
            "{problems:?}"
        );
        for key in ["colour", "broker.urll", "links.0.fromat"] {
            assert!(
                problems.iter().any(|p| p.contains(key)),
                "{key} missing in {problems:?}"
            );
        }
        assert_eq!(raw.accounts["hub"].token.as_deref(), Some("from-file"));
        let text = std::fs::read_to_string(&path).expect("read back");
        let (from_text, text_problems) = read_text(&text, dir.path(), &env);
        assert_eq!(text_problems, problems, "text and file read alike");
        assert_eq!(
            from_text.accounts["hub"].token.as_deref(),
            Some("from-file")
        );
    }

    #[test]
    fn secret_files_must_be_small_regular_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("a-dir")).expect("mkdir");
        let big = "x".repeat(MAX_SECRET_FILE_BYTES as usize + 1);
        std::fs::write(dir.path().join("big"), big).expect("write");
        let env: HashMap<&str, &str> = HashMap::new();
        for (file, why) in [
            ("a-dir", "not a regular file"),
            ("/dev/zero", "not a regular file"),
            ("big", "larger than"),
        ] {
            let text = format!(
                "[accounts.hub]\nplatform = \"api\"\nlisten = \"127.0.0.1:1\"\ntoken_file = {file:?}\n"
            );
            let (_, problems) = read_text(&text, dir.path(), &env);
            assert!(
                problems.iter().any(|p| p.contains(why)),
                "{file}: {problems:?}"
            );
        }
    }
}
