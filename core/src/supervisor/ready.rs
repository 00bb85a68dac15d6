//! One line at INFO when every member of the cluster serves: `cluster ready: 4/4 SERVING`,
//! the first time, and again each time it becomes so after it was not.

use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::WatchStream;

use super::cluster::MemberView;
use super::member::State;

/// How many of `members` are Ready, out of how many.
pub fn serving(members: &[MemberView]) -> (usize, usize) {
    let ready = members
        .iter()
        .filter(|m| matches!(m.status.borrow().state, State::Ready { .. }))
        .count();
    (ready, members.len())
}

/// Logs "cluster ready: N/N SERVING" whenever every member of `members` has become Ready;
/// ends when the sender of `members` is gone.
pub async fn announce(mut members: watch::Receiver<Vec<MemberView>>) {
    let mut was_ready = false;
    loop {
        let current = members.borrow_and_update().clone();
        let mut changes = tokio_stream::StreamMap::new();
        for (at, member) in current.iter().enumerate() {
            changes.insert(at, WatchStream::new(member.status.clone()));
        }
        loop {
            let (ready, total) = serving(&current);
            let all = total > 0 && ready == total;
            if all && !was_ready {
                tracing::info!("cluster ready: {ready}/{total} SERVING");
            } else if !all && was_ready {
                tracing::debug!("cluster not ready: {ready}/{total} SERVING");
            }
            was_ready = all;
            tokio::select! {
                changed = members.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    break;
                }
                next = changes.next(), if !changes.is_empty() => {
                    if next.is_none() {
                        // Every runner is gone; wait for a new member list.
                        if members.changed().await.is_err() {
                            return;
                        }
                        break;
                    }
                }
            }
        }
    }
}
