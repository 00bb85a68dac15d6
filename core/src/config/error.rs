//! What can be wrong with a config file, and where: `FILE:LINE:COLUMN: key `a.b[0].c`: message`.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// A place in a config file; line and column count from 1 (column in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// Where a value sits in the document, written the way it is written in the file:
/// `clusterConfig.heartBeatIntervalSeconds`, `agents[1].ports[0]`, `agents.Worker.useTLS`.
/// The one formatting of key paths in every message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyPath(Vec<Segment>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

impl KeyPath {
    /// The document itself (no key).
    pub fn root() -> Self {
        Self::default()
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn push_key(&mut self, key: &str) {
        self.0.push(Segment::Key(key.to_owned()));
    }

    pub(crate) fn push_index(&mut self, index: usize) {
        self.0.push(Segment::Index(index));
    }

    pub(crate) fn key(&self, key: &str) -> Self {
        let mut path = self.clone();
        path.push_key(key);
        path
    }

    pub(crate) fn index(&self, index: usize) -> Self {
        let mut path = self.clone();
        path.push_index(index);
        path
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// What is wrong at one place of a config file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// Not YAML (or YAML this loader refuses: several documents, deep nesting, alias bombs).
    #[error("YAML syntax: {0}")]
    Syntax(String),
    /// Not text in a known encoding.
    #[error("{0}")]
    Encoding(String),
    /// A key this section does not have.
    #[error("unknown key{}", unknown_key_hint(.suggestion, .belongs_in, .valid))]
    UnknownKey {
        /// The nearest valid key, when one is near enough to be a likely typo.
        suggestion: Option<&'static str>,
        /// The section the key is valid in, when it is valid elsewhere (`port` in an agent
        /// is a typo of `ports`; `heartBeatIntervalSeconds` in an agent belongs elsewhere).
        belongs_in: Option<&'static str>,
        /// The keys that are valid at this place.
        valid: &'static [&'static str],
    },
    /// The same key twice in one mapping (keys are compared without regard to case).
    #[error(
        "duplicate key (first given on line {first_line}; keys are compared without regard to case)"
    )]
    DuplicateKey { first_line: usize },
    /// A key that must be given is not.
    #[error("`{0}` is required")]
    MissingKey(&'static str),
    /// A value of the wrong type or out of range.
    #[error("{0}")]
    InvalidValue(String),
}

fn unknown_key_hint(
    suggestion: &Option<&'static str>,
    belongs_in: &Option<&'static str>,
    valid: &[&'static str],
) -> String {
    match (suggestion, belongs_in) {
        (Some(key), _) => format!("; did you mean `{key}`?"),
        (None, Some(section)) => format!(" here; it belongs in {section}"),
        (None, None) if valid.is_empty() => String::new(),
        (None, None) => format!("; valid keys here: {}", valid.join(", ")),
    }
}

/// Loading a config file failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// No config file where one was looked for.
    #[error("no configuration file found (tried {})", tried_list(.tried))]
    NotFound { tried: Vec<PathBuf> },
    /// The file is read but its content is wrong at `pos`.
    #[error("{}", Located { path, pos: *pos, key, message: problem })]
    Invalid {
        path: PathBuf,
        pos: Pos,
        key: KeyPath,
        problem: Problem,
    },
}

impl ConfigError {
    pub(crate) fn invalid(path: &Path, pos: Pos, key: KeyPath, problem: Problem) -> Self {
        Self::Invalid {
            path: path.to_owned(),
            pos,
            key,
            problem,
        }
    }

    /// Where in the file, for [`ConfigError::Invalid`].
    pub fn pos(&self) -> Option<Pos> {
        match self {
            Self::Invalid { pos, .. } => Some(*pos),
            _ => None,
        }
    }

    /// Which key, for [`ConfigError::Invalid`] (the root path when the error has no key).
    pub fn key(&self) -> Option<&KeyPath> {
        match self {
            Self::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }

    /// What is wrong, for [`ConfigError::Invalid`].
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Self::Invalid { problem, .. } => Some(problem),
            _ => None,
        }
    }
}

fn tried_list(tried: &[PathBuf]) -> String {
    tried
        .iter()
        .map(|path| format!("`{}`", path.display()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Something in a config file that loads but is ignored (a key the C# version accepted and
/// quaestor has no use for); worth a log line.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigWarning {
    pub path: PathBuf,
    pub pos: Pos,
    pub key: KeyPath,
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Located {
            path: &self.path,
            pos: self.pos,
            key: &self.key,
            message: &self.message,
        }
        .fmt(f)
    }
}

/// `FILE:LINE:COLUMN: key `path`: message`, or without the key part at the document root.
struct Located<'a, M> {
    path: &'a Path,
    pos: Pos,
    key: &'a KeyPath,
    message: M,
}

impl<M: fmt::Display> fmt::Display for Located<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: ",
            self.path.display(),
            self.pos.line,
            self.pos.column
        )?;
        if !self.key.is_root() {
            write!(f, "key `{}`: ", self.key)?;
        }
        write!(f, "{}", self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_read_like_the_file() {
        let path = KeyPath::root().key("agents").index(1).key("ports").index(0);
        assert_eq!(path.to_string(), "agents[1].ports[0]");
        assert_eq!(
            KeyPath::root().key("agents").key("Worker").to_string(),
            "agents.Worker"
        );
        assert!(KeyPath::root().is_root());
    }

    #[test]
    fn invalid_displays_file_line_column_key_message() {
        let error = ConfigError::invalid(
            Path::new("q.yml"),
            Pos { line: 3, column: 5 },
            KeyPath::root()
                .key("clusterConfig")
                .key("heartBeatIntervalSecs"),
            Problem::UnknownKey {
                suggestion: Some("heartBeatIntervalSeconds"),
                belongs_in: None,
                valid: &[],
            },
        );
        assert_eq!(
            error.to_string(),
            "q.yml:3:5: key `clusterConfig.heartBeatIntervalSecs`: unknown key; \
             did you mean `heartBeatIntervalSeconds`?"
        );
        let error = ConfigError::invalid(
            Path::new("q.yml"),
            Pos { line: 1, column: 1 },
            KeyPath::root(),
            Problem::Syntax("bad".into()),
        );
        assert_eq!(error.to_string(), "q.yml:1:1: YAML syntax: bad");
    }
}
