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

/// `time` as RFC 3339 in UTC with milliseconds (`2026-12-01T09:56:45.051Z`).
pub fn rfc3339(time: SystemTime) -> String {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// The date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_939_005_051);
        assert_eq!(rfc3339(t), "2026-11-29T07:56:45.051Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
