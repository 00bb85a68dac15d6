//! A YAML document as a tree whose every node and key knows its line and column.
//!
//! Built from `saphyr-parser` events with an explicit stack (no recursion, so no input can
//! exhaust the stack), with the rules every quaestor config file follows checked on the way:
//! one document, keys are text, no key twice in one mapping (compared without regard to case,
//! as the .NET configuration binder compares them), bounded nesting and alias expansion.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use super::error::{KeyPath, Pos, Problem};

/// Deeper nesting than this is refused (the deepest real config is 4 levels).
const MAX_DEPTH: usize = 64;
/// Nodes that aliases may copy in, in total ("billion laughs" stays small).
const MAX_ALIAS_NODES: usize = 10_000;
/// Nodes kept for aliases to copy, in total (each anchor keeps a copy of its value).
const MAX_ANCHOR_NODES: usize = 100_000;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// An empty value (`key:`), `~` or `null`.
    Null,
    /// Any other scalar, as its text (quotes removed, escapes resolved).
    Scalar(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub value: Value,
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    /// The key as written in the file.
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

impl Node {
    /// What kind of value this is, for messages ("expected a list, found a mapping").
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "an empty value",
            Value::Scalar(_) => "a single value",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// A parse failure: where, under which key, and what.
#[derive(Debug)]
pub(crate) struct ParseFailure {
    pub pos: Pos,
    pub key: KeyPath,
    pub problem: Problem,
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        /// Nodes in this subtree so far, itself included.
        size: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        /// Nodes in this subtree so far (keys too), itself included.
        size: usize,
        entries: Vec<Entry>,
        /// Lower-cased key → line of its first occurrence.
        seen: HashMap<String, usize>,
        pending_key: Option<(String, Pos)>,
    },
}

struct Builder {
    stack: Vec<Frame>,
    /// Anchor id → its value and that value's node count; `None`: too large to keep.
    anchors: HashMap<usize, Option<(Node, usize)>>,
    alias_budget: usize,
    anchor_budget: usize,
    root: Option<Node>,
    documents: usize,
}

fn pos_of(span: &Span) -> Pos {
    Pos {
        line: span.start.line(),
        column: span.start.col() + 1,
    }
}

fn is_null(text: &str, style: ScalarStyle) -> bool {
    style == ScalarStyle::Plain && matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

impl Builder {
    /// The key path of the place the parser is at, e.g. `agents[1].ports`.
    fn path(&self) -> KeyPath {
        let mut path = KeyPath::root();
        for frame in &self.stack {
            match frame {
                Frame::Seq { items, .. } => path.push_index(items.len()),
                Frame::Map { pending_key, .. } => {
                    if let Some((key, _)) = pending_key {
                        path.push_key(key);
                    }
                }
            }
        }
        path
    }

    fn fail(&self, pos: Pos, problem: Problem) -> ParseFailure {
        ParseFailure {
            pos,
            key: self.path(),
            problem,
        }
    }

    fn remember(&mut self, anchor: usize, node: &Node, size: usize) {
        if anchor == 0 {
            return;
        }
        let kept = if size <= self.anchor_budget {
            self.anchor_budget -= size;
            Some((node.clone(), size))
        } else {
            None
        };
        self.anchors.insert(anchor, kept);
    }

    /// A complete node of `size` nodes: into its parent, or the document root.
    fn add(&mut self, node: Node, size: usize) -> Result<(), ParseFailure> {
        let Some(top) = self.stack.last_mut() else {
            self.root = Some(node);
            return Ok(());
        };
        match top {
            Frame::Seq {
                items, size: total, ..
            } => {
                *total += size;
                items.push(node);
            }
            Frame::Map {
                entries,
                seen,
                pending_key,
                size: total,
                ..
            } => {
                *total += size;
                match pending_key.take() {
                    Some((key, key_pos)) => entries.push(Entry {
                        key,
                        key_pos,
                        value: node,
                    }),
                    None => {
                        let key = match node.value {
                            Value::Scalar(text) => text,
                            Value::Null => {
                                return Err(self.fail(
                                    node.pos,
                                    Problem::Syntax("a key must not be empty".into()),
                                ));
                            }
                            Value::Seq(_) | Value::Map(_) => {
                                return Err(self.fail(
                                    node.pos,
                                    Problem::Syntax("a key must be plain text".into()),
                                ));
                            }
                        };
                        let folded = key.to_lowercase();
                        if let Some(&first_line) = seen.get(&folded) {
                            // Name the duplicate itself in the key path.
                            *pending_key = Some((key, node.pos));
                            return Err(self.fail(node.pos, Problem::DuplicateKey { first_line }));
                        }
                        seen.insert(folded, node.pos.line);
                        *pending_key = Some((key, node.pos));
                    }
                }
            }
        }
        Ok(())
    }

    fn open(&mut self, frame: Frame, pos: Pos) -> Result<(), ParseFailure> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(self.fail(
                pos,
                Problem::Syntax(format!("nesting deeper than {MAX_DEPTH} levels")),
            ));
        }
        self.stack.push(frame);
        Ok(())
    }

    fn on_event(&mut self, event: Event<'_>, span: Span) -> Result<(), ParseFailure> {
        let pos = pos_of(&span);
        match event {
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(self.fail(
                        pos,
                        Problem::Syntax(
                            "a second YAML document (`---`); a config file holds one".into(),
                        ),
                    ));
                }
            }
            Event::Scalar(text, style, anchor, _tag) => {
                let value = if is_null(&text, style) {
                    Value::Null
                } else {
                    Value::Scalar(text.into_owned())
                };
                let node = Node { value, pos };
                self.remember(anchor, &node, 1);
                self.add(node, 1)?;
            }
            Event::Alias(id) => {
                let (target, size) = match self.anchors.get(&id) {
                    Some(Some((target, size))) => (target, *size),
                    Some(None) => {
                        return Err(self.fail(
                            pos,
                            Problem::Syntax("alias of a value too large to copy".into()),
                        ));
                    }
                    None => return Err(self.fail(pos, Problem::Syntax("unknown alias".into()))),
                };
                if size > self.alias_budget {
                    return Err(self.fail(
                        pos,
                        Problem::Syntax(format!(
                            "aliases expand to more than {MAX_ALIAS_NODES} values"
                        )),
                    ));
                }
                self.alias_budget -= size;
                let mut node = target.clone();
                node.pos = pos;
                self.add(node, size)?;
            }
            Event::SequenceStart(anchor, _tag) => self.open(
                Frame::Seq {
                    pos,
                    anchor,
                    size: 1,
                    items: Vec::new(),
                },
                pos,
            )?,
            Event::MappingStart(anchor, _tag) => self.open(
                Frame::Map {
                    pos,
                    anchor,
                    size: 1,
                    entries: Vec::new(),
                    seen: HashMap::new(),
                    pending_key: None,
                },
                pos,
            )?,
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor, size) = match self.stack.pop() {
                    Some(Frame::Seq {
                        pos,
                        anchor,
                        size,
                        items,
                    }) => (
                        Node {
                            value: Value::Seq(items),
                            pos,
                        },
                        anchor,
                        size,
                    ),
                    Some(Frame::Map {
                        pos,
                        anchor,
                        size,
                        entries,
                        ..
                    }) => (
                        Node {
                            value: Value::Map(entries),
                            pos,
                        },
                        anchor,
                        size,
                    ),
                    None => {
                        return Err(self.fail(pos, Problem::Syntax("unbalanced end".into())));
                    }
                };
                self.remember(anchor, &node, size);
                self.add(node, size)?;
            }
        }
        Ok(())
    }
}

/// Parses one YAML document. `Ok(None)` for a file with no document (empty, or comments only).
pub(crate) fn parse(text: &str) -> Result<Option<Node>, ParseFailure> {
    let mut builder = Builder {
        stack: Vec::new(),
        anchors: HashMap::new(),
        alias_budget: MAX_ALIAS_NODES,
        anchor_budget: MAX_ANCHOR_NODES,
        root: None,
        documents: 0,
    };
    for item in Parser::new_from_str(text) {
        match item {
            Ok((event, span)) => builder.on_event(event, span)?,
            Err(error) => {
                let marker = error.marker();
                let pos = Pos {
                    line: marker.line(),
                    column: marker.col() + 1,
                };
                return Err(builder.fail(pos, Problem::Syntax(error.info().to_owned())));
            }
        }
    }
    Ok(builder.root)
}

/// Turns the bytes of a file into text: UTF-8 (with or without BOM), or UTF-16 with a BOM
/// (what Windows editors write when told "Unicode"). On failure: where the bad bytes are.
pub(crate) fn decode(bytes: &[u8]) -> Result<String, (Pos, Problem)> {
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        return decode_utf16(rest, u16::from_le_bytes);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        return decode_utf16(rest, u16::from_be_bytes);
    }
    let bytes = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(text.to_owned()),
        Err(error) => {
            let good = &bytes[..error.valid_up_to()];
            // `good` is valid UTF-8 by construction.
            let good = std::str::from_utf8(good).unwrap_or_default();
            Err((
                end_pos(good),
                Problem::Encoding(format!(
                    "the file is not UTF-8 (invalid byte 0x{:02X})",
                    bytes[error.valid_up_to()]
                )),
            ))
        }
    }
}

fn decode_utf16(bytes: &[u8], word: fn([u8; 2]) -> u16) -> Result<String, (Pos, Problem)> {
    let units = bytes.chunks_exact(2).map(|pair| word([pair[0], pair[1]]));
    let mut text = String::with_capacity(bytes.len() / 2);
    for unit in char::decode_utf16(units) {
        match unit {
            Ok(c) => text.push(c),
            Err(_) => {
                return Err((
                    end_pos(&text),
                    Problem::Encoding("the file is not valid UTF-16 (lone surrogate)".into()),
                ));
            }
        }
    }
    if bytes.len() % 2 != 0 {
        return Err((
            end_pos(&text),
            Problem::Encoding("the file is not valid UTF-16 (odd number of bytes)".into()),
        ));
    }
    Ok(text)
}

/// The position just after `text`.
fn end_pos(text: &str) -> Pos {
    let line = text.matches('\n').count() + 1;
    let last = text.rsplit('\n').next().unwrap_or("");
    Pos {
        line,
        column: last.trim_end_matches('\r').chars().count() + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(text: &str) -> Node {
        parse(text).expect("parses").expect("has a document")
    }

    #[test]
    fn keys_and_values_know_their_place() {
        let node = root("# comment\na:\n  b: [ 1, 2 ]\n  c:\n");
        let Value::Map(top) = &node.value else {
            panic!("map")
        };
        assert_eq!(top[0].key, "a");
        assert_eq!(top[0].key_pos, Pos { line: 2, column: 1 });
        let Value::Map(inner) = &top[0].value.value else {
            panic!("map")
        };
        assert_eq!(inner[0].key_pos, Pos { line: 3, column: 3 });
        let Value::Seq(items) = &inner[0].value.value else {
            panic!("seq")
        };
        assert_eq!(items[1].value, Value::Scalar("2".into()));
        assert_eq!(
            items[1].pos,
            Pos {
                line: 3,
                column: 11
            }
        );
        assert_eq!(inner[1].value.value, Value::Null);
    }

    #[test]
    fn null_spellings_and_quoted_text() {
        let node = root("a: ~\nb: null\nc: 'null'\nd: \"\"\n");
        let Value::Map(entries) = &node.value else {
            panic!("map")
        };
        assert_eq!(entries[0].value.value, Value::Null);
        assert_eq!(entries[1].value.value, Value::Null);
        assert_eq!(entries[2].value.value, Value::Scalar("null".into()));
        assert_eq!(entries[3].value.value, Value::Scalar(String::new()));
    }

    #[test]
    fn duplicate_keys_differing_in_case_are_refused() {
        let failure = parse("top:\n  useTls: true\n  UseTLS: false\n").unwrap_err();
        assert_eq!(failure.pos, Pos { line: 3, column: 3 });
        assert_eq!(failure.key.to_string(), "top.UseTLS");
        assert!(matches!(
            failure.problem,
            Problem::DuplicateKey { first_line: 2 }
        ));
    }

    #[test]
    fn empty_and_comment_only_files_have_no_document() {
        assert!(parse("").unwrap().is_none());
        assert!(parse("# nothing\n\n# here\n").unwrap().is_none());
    }

    #[test]
    fn second_document_is_refused() {
        let failure = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(failure.pos.line, 2);
    }

    #[test]
    fn aliases_expand_within_a_budget() {
        let node = root("a: &x [1, 2]\nb: *x\n");
        let Value::Map(entries) = &node.value else {
            panic!("map")
        };
        assert_eq!(entries[1].value.value, entries[0].value.value);
        assert_eq!(entries[1].value.pos.line, 2);

        let mut laughs = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            laughs.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let failure = parse(&laughs).unwrap_err();
        assert!(
            failure.problem.to_string().contains("aliases expand"),
            "{}",
            failure.problem
        );

        // Anchors are cheap to write and each keeps a copy: their total is bounded too.
        let items = "x, ".repeat(30_000);
        let nested = format!("a: &a [&b [&c [&d [{items}]]]]\nb: *a\n");
        let failure = parse(&nested).unwrap_err();
        assert!(
            failure.problem.to_string().contains("too large"),
            "{}",
            failure.problem
        );
        assert_eq!(failure.pos.line, 2);
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = "[".repeat(100_000);
        assert!(parse(&deep).is_err());
        let mut block = String::new();
        for depth in 0..200 {
            block.push_str(&" ".repeat(depth));
            block.push_str("k:\n");
        }
        assert!(parse(&block).is_err());
    }

    #[test]
    fn decode_handles_bom_utf16_and_bad_bytes() {
        assert_eq!(decode(b"\xEF\xBB\xBFa: 1").unwrap(), "a: 1");
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("a: 1".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        assert_eq!(decode(&utf16).unwrap(), "a: 1");
        let (pos, problem) = decode(b"a: 1\nbb: \xFF\n").unwrap_err();
        assert_eq!(pos, Pos { line: 2, column: 5 });
        assert!(problem.to_string().contains("0xFF"));
        assert!(decode(&[0xFF, 0xFE, 0x00]).is_err());
        assert!(decode(&[0xFF, 0xFE, 0x00, 0xD8]).is_err()); // lone surrogate
    }
}
