//! The recent output of every member: a ring of its last lines (each with its stream and the
//! time it was read), for `quaestor cluster logs`, and a feed of new lines for `logs -f`.
//!
//! The book is keyed by member tag (`Worker[1]`), so a restarted member's lines follow those
//! of the process before it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::broadcast;

use super::spawn::{LineSink, Output};

/// Lines kept per member unless told otherwise.
pub const DEFAULT_LINES: usize = 1000;

/// One line a member printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Increases with every line of the book: orders lines of several members.
    pub seq: u64,
    pub member: String,
    pub stream: Output,
    /// When the supervisor read it.
    pub time: SystemTime,
    pub text: String,
}

/// The recent lines of every member (cheap to clone: clones share the book).
#[derive(Debug, Clone)]
pub struct LogBook {
    inner: Arc<Mutex<Pages>>,
    feed: broadcast::Sender<LogLine>,
}

#[derive(Debug)]
struct Pages {
    capacity: usize,
    next_seq: u64,
    members: HashMap<String, VecDeque<LogLine>>,
}

impl Default for LogBook {
    fn default() -> Self {
        LogBook::new(DEFAULT_LINES)
    }
}

impl LogBook {
    /// A book that keeps the last `capacity` lines of each member.
    pub fn new(capacity: usize) -> LogBook {
        let (feed, _) = broadcast::channel(1024);
        LogBook {
            inner: Arc::new(Mutex::new(Pages {
                capacity: capacity.max(1),
                next_seq: 0,
                members: HashMap::new(),
            })),
            feed,
        }
    }

    /// Keeps `text`, a line `member` printed on `stream`.
    pub fn record(&self, member: &str, stream: Output, text: &str) {
        let line = {
            let mut pages = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let seq = pages.next_seq;
            pages.next_seq += 1;
            let capacity = pages.capacity;
            let line = LogLine {
                seq,
                member: member.to_owned(),
                stream,
                time: SystemTime::now(),
                text: text.to_owned(),
            };
            let page = pages.members.entry(member.to_owned()).or_default();
            if page.len() == capacity {
                page.pop_front();
            }
            page.push_back(line.clone());
            line
        };
        // Nobody following is fine.
        let _ = self.feed.send(line);
    }

    /// The last `count` lines of `members` together, oldest first.
    pub fn recent(&self, members: &[String], count: usize) -> Vec<LogLine> {
        let pages = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut lines: Vec<LogLine> = members
            .iter()
            .filter_map(|m| pages.members.get(m))
            .flat_map(|page| page.iter().rev().take(count).cloned())
            .collect();
        lines.sort_by_key(|l| l.seq);
        let skip = lines.len().saturating_sub(count);
        lines.drain(..skip);
        lines
    }

    /// Every line recorded from now on (a follower that lags loses the oldest).
    pub fn follow(&self) -> broadcast::Receiver<LogLine> {
        self.feed.subscribe()
    }

    /// A sink that keeps every line in this book, then passes it to `then` (the log).
    pub fn sink(&self, then: LineSink) -> LineSink {
        let book = self.clone();
        Arc::new(move |output, member, pid, line| {
            book.record(member, output, line);
            then(output, member, pid, line);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_book_keeps_the_last_lines_of_each_member() {
        let book = LogBook::new(3);
        let mut feed = book.follow();
        for i in 0..5 {
            book.record("Worker[0]", Output::Stdout, &format!("w{i}"));
        }
        book.record("Worker[1]", Output::Stderr, "other");
        let texts = |lines: Vec<LogLine>| lines.into_iter().map(|l| l.text).collect::<Vec<_>>();
        assert_eq!(
            texts(book.recent(&["Worker[0]".into()], 10)),
            ["w2", "w3", "w4"]
        );
        assert_eq!(texts(book.recent(&["Worker[0]".into()], 2)), ["w3", "w4"]);
        assert_eq!(
            texts(book.recent(&["Worker[1]".into(), "Worker[0]".into()], 2)),
            ["w4", "other"]
        );
        assert!(book.recent(&["Nobody[0]".into()], 5).is_empty());
        let first = feed.try_recv().expect("fed");
        assert_eq!((first.text.as_str(), first.stream), ("w0", Output::Stdout));
    }
}
