//! Recycling: each member of an agent with `recyclingIntervalHours` is restarted after that
//! interval (±10 %), but only while it is idle (every service reports 0 current requests; a
//! member that reports no load counts as idle, as in the C# version), and never two members
//! of one agent at once.

use std::time::{Duration, Instant};

use tonic::Code;

use super::member::State;
use super::runner::{Order, RunnerHandle};
use crate::client::{ClientError, Target};

/// How long a due member that is busy (or not serving) waits before it is asked again.
const RETRY: Duration = Duration::from_secs(1);
/// How long a recycled member may take to serve again before the next one is recycled anyway.
const BACK_IN_SERVICE: Duration = Duration::from_secs(120);

/// One member to recycle: how to order it, and where to ask about its load.
#[derive(Debug, Clone)]
pub struct Recyclable {
    pub runner: RunnerHandle,
    pub load_address: String,
    pub services: Vec<String>,
}

/// Recycles `members` (of one agent) every `interval`, one at a time, each when idle. Runs
/// until aborted.
pub async fn recycle_agent(
    members: Vec<Recyclable>,
    interval: Duration,
    response_timeout: Duration,
) {
    if members.is_empty() || interval.is_zero() {
        return;
    }
    let start = Instant::now();
    let mut due: Vec<Instant> = members.iter().map(|_| start + jittered(interval)).collect();
    loop {
        let Some((next, &when)) = due.iter().enumerate().min_by_key(|(_, when)| **when) else {
            return;
        };
        tokio::time::sleep_until(when.into()).await;
        let member = &members[next];
        let serving = matches!(member.runner.status.borrow().state, State::Ready { .. });
        if !serving || !idle(member, response_timeout).await {
            due[next] = Instant::now() + RETRY;
            continue;
        }
        let starts = member.runner.status.borrow().starts;
        tracing::info!(member = %member.runner.status.borrow().tag, "recycling");
        member.runner.order(Order::Recycle).await;
        // One at a time: wait until it serves again (or give up waiting after a while).
        let mut status = member.runner.status.clone();
        let back = status.wait_for(|s| s.starts > starts && matches!(s.state, State::Ready { .. }));
        let _ = tokio::time::timeout(BACK_IN_SERVICE, back).await;
        due[next] = Instant::now() + jittered(interval);
    }
}

/// Every service reports 0 current requests, or the member reports no load at all.
async fn idle(member: &Recyclable, response_timeout: Duration) -> bool {
    let Ok(target) = Target::new(&member.load_address, None, response_timeout) else {
        return false;
    };
    let Ok(channel) = target.connect().await else {
        return false;
    };
    for service in &member.services {
        match target.report_load(channel.clone(), "", service).await {
            Ok(report) if report.server_stats.is_some_and(|s| s.current_requests > 0) => {
                return false;
            }
            Ok(_) => {}
            Err(ClientError::Rpc { status, .. })
                if matches!(status.code(), Code::OutOfRange | Code::Unimplemented) => {}
            Err(_) => return false,
        }
    }
    true
}

/// `interval` ± 10 %, so that members started together are not recycled together.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + fastrand::f64() * 0.2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        let interval = Duration::from_secs(3600);
        for _ in 0..1000 {
            let j = jittered(interval);
            assert!(
                j >= Duration::from_secs(3240) && j <= Duration::from_secs(3960),
                "{j:?}"
            );
        }
    }
}
