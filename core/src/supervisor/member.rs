//! The member state machine: what one supervised process is doing, and what the supervisor
//! must do next.
//!
//! [`transition`] is pure: (member, event) → (member, actions). Time arrives with the events,
//! so tests drive it as a table. The runtime performs the actions (spawning, signalling,
//! registering) and feeds back what happened (spawned, serving, exited, ticks).
//!
//! ```text
//!            Spawned          Serving
//! Stopped ──▶ Starting ──────▶ Ready ──(health fails)──▶ Unhealthy ──(exit)──┐
//!    ▲          │ (exit, timeout)  │ (exit)                                   ▼
//!    │          └──────────────────┴──────────────────────────────▶ BackingOff ──(due)──▶ spawn
//!    │                             │ (recycle)                            │ (too many in a row)
//!    │                             ▼                                      ▼
//! Stopping ◀──(stop)── any    Recycling ──(exit)──▶ spawn at once      Failed ──(slow retry)──▶ spawn
//!
//! any ──(operator restart)──▶ Restarting ──(exit)──▶ spawn at once (failures reset)
//! BackingOff, Failed ──(operator start)──▶ spawn at once (failures reset)
//! ```

use std::time::{Duration, Instant};

/// How a member is started, checked and restarted.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// How long a starting member may take to report SERVING (`startupWaitSeconds`).
    pub startup_wait: Duration,
    /// Failures in a row (failed starts, crashes) before the member is Failed
    /// (`memberMaxStartupRetries`).
    pub max_failures: u32,
    /// The first restart delay; it doubles with each failure in a row.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Serving this long resets the failure count.
    pub reset_after: Duration,
    /// Failed health checks in a row before a restart (1, as in the C# version).
    pub unhealthy_after: u32,
    /// How long a stop waits after the stop signal before SIGKILL
    /// (`memberMaxShutdownTimeSeconds`).
    pub shutdown_timeout: Duration,
    /// How long a Failed member waits before it is tried again.
    pub failed_retry: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            startup_wait: Duration::from_secs(8),
            max_failures: 25,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            reset_after: Duration::from_secs(60),
            unhealthy_after: 1,
            shutdown_timeout: Duration::from_secs(45),
            failed_retry: Duration::from_secs(300),
        }
    }
}

/// Where a member is.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Not running, and not meant to (before the first start; after a stop).
    Stopped,
    /// Spawned; waiting (until `deadline`) for it to report SERVING.
    Starting {
        pid: u32,
        since: Instant,
        deadline: Instant,
    },
    /// SERVING and registered; `failed_checks` health checks in a row failed.
    Ready {
        pid: u32,
        since: Instant,
        failed_checks: u32,
    },
    /// Being stopped because it is unhealthy (or did not start in time); restarts after.
    Unhealthy { pid: u32, stop: Stop },
    /// Being stopped to be recycled; starts again at once after.
    Recycling { pid: u32, stop: Stop },
    /// Being stopped because the operator restarts it; starts again at once after (not a
    /// failure).
    Restarting { pid: u32, stop: Stop },
    /// Being stopped for good.
    Stopping { pid: u32, stop: Stop },
    /// Waiting to start again.
    BackingOff { until: Instant },
    /// Failed `max_failures` times in a row; tried again at `retry_at`.
    Failed { reason: String, retry_at: Instant },
}

/// A stop under way: SIGKILL at `deadline` unless the process exits first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop {
    pub deadline: Instant,
    pub killed: bool,
}

/// A member: its state and its failures in a row.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub state: State,
    pub failures: u32,
}

impl Default for Member {
    fn default() -> Self {
        Member {
            state: State::Stopped,
            failures: 0,
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Start it (initially, or after a stop). A member waiting to start again (BackingOff,
    /// Failed) is started at once, its failure count reset (the operator's `start`).
    Start,
    /// The process was spawned.
    Spawned { pid: u32 },
    /// The process could not be spawned.
    SpawnFailed { reason: String },
    /// A health check answered SERVING for every service.
    Serving,
    /// A health check failed (NOT_SERVING, no answer in time).
    HealthFailed { reason: String },
    /// The process exited (`code` is `None` for a signal).
    Exited { code: Option<i32> },
    /// Recycle it (the runtime checked it is idle).
    Recycle,
    /// Stop it for good.
    Stop,
    /// The operator restarts it: a graceful stop, then a start at once; not a failure, and
    /// the failure count starts again from 0.
    Restart,
    /// Time passed (timers: start deadline, backoff, kill deadline, failure reset).
    Tick,
}

/// What the supervisor must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Spawn the process.
    Spawn,
    /// Add it to the registry.
    Register,
    /// Remove it from the registry.
    Deregister,
    /// Send the stop signal to its process group.
    Signal,
    /// SIGKILL its process group.
    Kill,
    /// It failed too often: say so loudly.
    ReportFailed { reason: String },
}

/// The next member and the actions to take, for `event` at `now`.
pub fn transition(
    member: &Member,
    event: &Event,
    now: Instant,
    policy: &Policy,
) -> (Member, Vec<Action>) {
    use Event as E;
    use State as S;
    let failures = member.failures;
    let stop = || Stop {
        deadline: now + policy.shutdown_timeout,
        killed: false,
    };
    let stay = || (member.clone(), Vec::new());
    let with =
        |state: State, failures: u32, actions: Vec<Action>| (Member { state, failures }, actions);

    match (&member.state, event) {
        // Stop: from anywhere, for good.
        (S::Stopped | S::BackingOff { .. } | S::Failed { .. }, E::Stop) => {
            with(S::Stopped, failures, vec![])
        }
        (S::Starting { pid, .. }, E::Stop) => with(
            S::Stopping {
                pid: *pid,
                stop: stop(),
            },
            failures,
            vec![Action::Signal],
        ),
        (S::Ready { pid, .. }, E::Stop) => with(
            S::Stopping {
                pid: *pid,
                stop: stop(),
            },
            failures,
            vec![Action::Deregister, Action::Signal],
        ),
        (
            S::Unhealthy { pid, stop } | S::Recycling { pid, stop } | S::Restarting { pid, stop },
            E::Stop,
        ) => with(
            S::Stopping {
                pid: *pid,
                stop: *stop,
            },
            failures,
            vec![],
        ),

        // Starting.
        (S::Stopped, E::Start) => with(S::Stopped, failures, vec![Action::Spawn]),
        (S::BackingOff { .. } | S::Failed { .. }, E::Start) => {
            with(S::Stopped, 0, vec![Action::Spawn])
        }

        // The operator's restart: stop gracefully (a stop under way goes on), then start.
        (S::Stopped | S::BackingOff { .. } | S::Failed { .. }, E::Restart) => {
            with(S::Stopped, 0, vec![Action::Spawn])
        }
        (S::Starting { pid, .. }, E::Restart) => with(
            S::Restarting {
                pid: *pid,
                stop: stop(),
            },
            0,
            vec![Action::Signal],
        ),
        (S::Ready { pid, .. }, E::Restart) => with(
            S::Restarting {
                pid: *pid,
                stop: stop(),
            },
            0,
            vec![Action::Deregister, Action::Signal],
        ),
        (
            S::Unhealthy { pid, stop } | S::Recycling { pid, stop } | S::Stopping { pid, stop },
            E::Restart,
        ) => with(
            S::Restarting {
                pid: *pid,
                stop: *stop,
            },
            0,
            vec![],
        ),
        (S::Restarting { .. }, E::Exited { .. }) => with(S::Stopped, 0, vec![Action::Spawn]),
        (S::Stopped | S::BackingOff { .. } | S::Failed { .. }, E::Spawned { pid }) => with(
            S::Starting {
                pid: *pid,
                since: now,
                deadline: now + policy.startup_wait,
            },
            failures,
            vec![],
        ),
        (S::Stopped | S::BackingOff { .. } | S::Failed { .. }, E::SpawnFailed { reason }) => {
            failed(failures + 1, reason, now, policy)
        }
        (S::Starting { pid, .. }, E::Serving) => with(
            S::Ready {
                pid: *pid,
                since: now,
                failed_checks: 0,
            },
            failures,
            vec![Action::Register],
        ),
        (S::Starting { .. }, E::Exited { code }) => failed(
            failures + 1,
            &exit_reason(*code, "while starting"),
            now,
            policy,
        ),
        (S::Starting { pid, deadline, .. }, E::Tick) if now >= *deadline => with(
            S::Unhealthy {
                pid: *pid,
                stop: stop(),
            },
            failures,
            vec![Action::Signal],
        ),

        // Ready.
        (S::Ready { pid, since, .. }, E::Serving) => with(
            S::Ready {
                pid: *pid,
                since: *since,
                failed_checks: 0,
            },
            reset(failures, *since, now, policy),
            vec![],
        ),
        (
            S::Ready {
                pid,
                since,
                failed_checks,
            },
            E::HealthFailed { .. },
        ) => {
            let failed_checks = failed_checks + 1;
            if failed_checks >= policy.unhealthy_after {
                with(
                    S::Unhealthy {
                        pid: *pid,
                        stop: stop(),
                    },
                    reset(failures, *since, now, policy),
                    vec![Action::Deregister, Action::Signal],
                )
            } else {
                with(
                    S::Ready {
                        pid: *pid,
                        since: *since,
                        failed_checks,
                    },
                    failures,
                    vec![],
                )
            }
        }
        (S::Ready { since, .. }, E::Exited { code }) => {
            let (next, mut actions) = failed(
                reset(failures, *since, now, policy) + 1,
                &exit_reason(*code, "while serving"),
                now,
                policy,
            );
            actions.insert(0, Action::Deregister);
            (next, actions)
        }
        (S::Ready { pid, .. }, E::Recycle) => with(
            S::Recycling {
                pid: *pid,
                stop: stop(),
            },
            failures,
            vec![Action::Deregister, Action::Signal],
        ),
        (
            S::Ready {
                pid,
                since,
                failed_checks,
            },
            E::Tick,
        ) => with(
            S::Ready {
                pid: *pid,
                since: *since,
                failed_checks: *failed_checks,
            },
            reset(failures, *since, now, policy),
            vec![],
        ),

        // Stops under way.
        (S::Unhealthy { .. }, E::Exited { .. }) => {
            failed(failures + 1, "it was unhealthy", now, policy)
        }
        (S::Recycling { .. }, E::Exited { .. }) => with(S::Stopped, failures, vec![Action::Spawn]),
        (S::Stopping { .. }, E::Exited { .. }) => with(S::Stopped, failures, vec![]),
        (
            S::Unhealthy { pid, stop }
            | S::Recycling { pid, stop }
            | S::Restarting { pid, stop }
            | S::Stopping { pid, stop },
            E::Tick,
        ) if now >= stop.deadline && !stop.killed => {
            let killed = Stop {
                deadline: stop.deadline,
                killed: true,
            };
            let state = match &member.state {
                S::Unhealthy { .. } => S::Unhealthy {
                    pid: *pid,
                    stop: killed,
                },
                S::Recycling { .. } => S::Recycling {
                    pid: *pid,
                    stop: killed,
                },
                S::Restarting { .. } => S::Restarting {
                    pid: *pid,
                    stop: killed,
                },
                _ => S::Stopping {
                    pid: *pid,
                    stop: killed,
                },
            };
            with(state, failures, vec![Action::Kill])
        }

        // Waiting to start again.
        (S::BackingOff { until }, E::Tick) if now >= *until => {
            with(member.state.clone(), failures, vec![Action::Spawn])
        }
        (S::Failed { retry_at, .. }, E::Tick) if now >= *retry_at => {
            with(member.state.clone(), failures, vec![Action::Spawn])
        }

        // Anything else changes nothing (e.g. a late health answer, a tick with nothing due).
        _ => stay(),
    }
}

/// After the `failures`-th failure in a row: back off, or Failed when there were too many.
fn failed(failures: u32, reason: &str, now: Instant, policy: &Policy) -> (Member, Vec<Action>) {
    if failures >= policy.max_failures {
        let reason = format!("{failures} failures in a row, the last: {reason}");
        return (
            Member {
                state: State::Failed {
                    reason: reason.clone(),
                    retry_at: now + policy.failed_retry,
                },
                failures,
            },
            vec![Action::ReportFailed { reason }],
        );
    }
    (
        Member {
            state: State::BackingOff {
                until: now + backoff(failures, policy),
            },
            failures,
        },
        vec![],
    )
}

/// The delay before the next start after `failures` failures in a row: the initial delay
/// doubled for each failure after the first, at most `backoff_max`. (The runner adds up to
/// 20 % jitter.)
pub fn backoff(failures: u32, policy: &Policy) -> Duration {
    let doublings = failures.saturating_sub(1).min(30);
    policy
        .backoff_initial
        .saturating_mul(1u32 << doublings)
        .min(policy.backoff_max)
}

/// The failure count, reset once the member has served for `reset_after`.
fn reset(failures: u32, serving_since: Instant, now: Instant, policy: &Policy) -> u32 {
    if now.saturating_duration_since(serving_since) >= policy.reset_after {
        0
    } else {
        failures
    }
}

fn exit_reason(code: Option<i32>, when: &str) -> String {
    match code {
        Some(code) => format!("it exited with code {code} {when}"),
        None => format!("it was killed by a signal {when}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            startup_wait: Duration::from_secs(8),
            max_failures: 3,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(4),
            reset_after: Duration::from_secs(60),
            unhealthy_after: 2,
            shutdown_timeout: Duration::from_secs(45),
            failed_retry: Duration::from_secs(300),
        }
    }

    /// Seconds after a fixed start, as Instants.
    struct Clock(Instant);
    impl Clock {
        fn at(&self, seconds: u64) -> Instant {
            self.0 + Duration::from_secs(seconds)
        }
    }

    fn member(state: State, failures: u32) -> Member {
        Member { state, failures }
    }

    #[test]
    fn the_transition_table() {
        let c = Clock(Instant::now());
        let p = policy();
        let stop_at = |s| Stop {
            deadline: c.at(s),
            killed: false,
        };
        let ready = |since, failed_checks| State::Ready {
            pid: 7,
            since: c.at(since),
            failed_checks,
        };
        let starting = State::Starting {
            pid: 7,
            since: c.at(0),
            deadline: c.at(8),
        };
        let r = |reason: &str| reason.to_owned();
        // (member before, event, now, member after, actions)
        let table: Vec<(Member, Event, u64, Member, Vec<Action>)> = vec![
            // Start and readiness.
            (
                member(State::Stopped, 0),
                Event::Start,
                0,
                member(State::Stopped, 0),
                vec![Action::Spawn],
            ),
            (
                member(State::Stopped, 0),
                Event::Spawned { pid: 7 },
                0,
                member(starting.clone(), 0),
                vec![],
            ),
            (
                member(starting.clone(), 0),
                Event::Serving,
                2,
                member(ready(2, 0), 0),
                vec![Action::Register],
            ),
            (
                member(starting.clone(), 0),
                Event::Tick,
                7,
                member(starting.clone(), 0),
                vec![],
            ),
            (
                member(starting.clone(), 0),
                Event::Tick,
                8,
                member(
                    State::Unhealthy {
                        pid: 7,
                        stop: stop_at(53),
                    },
                    0,
                ),
                vec![Action::Signal],
            ),
            // A crash while starting backs off; the delay doubles with failures in a row.
            (
                member(starting.clone(), 0),
                Event::Exited { code: Some(1) },
                3,
                member(State::BackingOff { until: c.at(4) }, 1),
                vec![],
            ),
            (
                member(starting.clone(), 1),
                Event::Exited { code: Some(1) },
                3,
                member(State::BackingOff { until: c.at(5) }, 2),
                vec![],
            ),
            // Too many in a row: Failed, loudly, retried slowly.
            (
                member(starting.clone(), 2),
                Event::Exited { code: None },
                3,
                member(
                    State::Failed {
                        reason: r(
                            "3 failures in a row, the last: it was killed by a signal while starting",
                        ),
                        retry_at: c.at(303),
                    },
                    3,
                ),
                vec![Action::ReportFailed {
                    reason: r(
                        "3 failures in a row, the last: it was killed by a signal while starting",
                    ),
                }],
            ),
            (
                member(State::Stopped, 0),
                Event::SpawnFailed {
                    reason: r("no such file"),
                },
                0,
                member(State::BackingOff { until: c.at(1) }, 1),
                vec![],
            ),
            // Backing off, then spawning again when due.
            (
                member(State::BackingOff { until: c.at(4) }, 1),
                Event::Tick,
                3,
                member(State::BackingOff { until: c.at(4) }, 1),
                vec![],
            ),
            (
                member(State::BackingOff { until: c.at(4) }, 1),
                Event::Tick,
                4,
                member(State::BackingOff { until: c.at(4) }, 1),
                vec![Action::Spawn],
            ),
            (
                member(State::BackingOff { until: c.at(4) }, 1),
                Event::Spawned { pid: 7 },
                0,
                member(starting.clone(), 1),
                vec![],
            ),
            (
                member(
                    State::Failed {
                        reason: r("x"),
                        retry_at: c.at(300),
                    },
                    3,
                ),
                Event::Tick,
                300,
                member(
                    State::Failed {
                        reason: r("x"),
                        retry_at: c.at(300),
                    },
                    3,
                ),
                vec![Action::Spawn],
            ),
            // Ready: health checks, a crash, the failure count reset after a healthy period.
            (
                member(ready(0, 0), 1),
                Event::HealthFailed {
                    reason: r("NOT_SERVING"),
                },
                5,
                member(ready(0, 1), 1),
                vec![],
            ),
            (
                member(ready(0, 1), 1),
                Event::Serving,
                6,
                member(ready(0, 0), 1),
                vec![],
            ),
            (
                member(ready(0, 1), 1),
                Event::HealthFailed {
                    reason: r("timeout"),
                },
                6,
                member(
                    State::Unhealthy {
                        pid: 7,
                        stop: stop_at(51),
                    },
                    1,
                ),
                vec![Action::Deregister, Action::Signal],
            ),
            (
                member(ready(0, 0), 2),
                Event::Exited { code: Some(0) },
                5,
                member(
                    State::Failed {
                        reason: r(
                            "3 failures in a row, the last: it exited with code 0 while serving",
                        ),
                        retry_at: c.at(305),
                    },
                    3,
                ),
                vec![
                    Action::Deregister,
                    Action::ReportFailed {
                        reason: r(
                            "3 failures in a row, the last: it exited with code 0 while serving",
                        ),
                    },
                ],
            ),
            (
                member(ready(0, 0), 2),
                Event::Exited { code: Some(0) },
                60,
                member(State::BackingOff { until: c.at(61) }, 1),
                vec![Action::Deregister],
            ),
            (
                member(ready(0, 0), 2),
                Event::Tick,
                60,
                member(ready(0, 0), 0),
                vec![],
            ),
            // Unhealthy: stop, SIGKILL after the timeout, back off after the exit.
            (
                member(
                    State::Unhealthy {
                        pid: 7,
                        stop: stop_at(45),
                    },
                    0,
                ),
                Event::Tick,
                44,
                member(
                    State::Unhealthy {
                        pid: 7,
                        stop: stop_at(45),
                    },
                    0,
                ),
                vec![],
            ),
            (
                member(
                    State::Unhealthy {
                        pid: 7,
                        stop: stop_at(45),
                    },
                    0,
                ),
                Event::Tick,
                45,
                member(
                    State::Unhealthy {
                        pid: 7,
                        stop: Stop {
                            deadline: c.at(45),
                            killed: true,
                        },
                    },
                    0,
                ),
                vec![Action::Kill],
            ),
            (
                member(
                    State::Unhealthy {
                        pid: 7,
                        stop: Stop {
                            deadline: c.at(45),
                            killed: true,
                        },
                    },
                    0,
                ),
                Event::Tick,
                50,
                member(
                    State::Unhealthy {
                        pid: 7,
                        stop: Stop {
                            deadline: c.at(45),
                            killed: true,
                        },
                    },
                    0,
                ),
                vec![],
            ),
            (
                member(
                    State::Unhealthy {
                        pid: 7,
                        stop: stop_at(45),
                    },
                    0,
                ),
                Event::Exited { code: None },
                10,
                member(State::BackingOff { until: c.at(11) }, 1),
                vec![],
            ),
            // Recycling: deregister and stop, then start at once (not a failure).
            (
                member(ready(0, 0), 0),
                Event::Recycle,
                100,
                member(
                    State::Recycling {
                        pid: 7,
                        stop: stop_at(145),
                    },
                    0,
                ),
                vec![Action::Deregister, Action::Signal],
            ),
            (
                member(
                    State::Recycling {
                        pid: 7,
                        stop: stop_at(145),
                    },
                    0,
                ),
                Event::Exited { code: Some(0) },
                101,
                member(State::Stopped, 0),
                vec![Action::Spawn],
            ),
            (
                member(starting.clone(), 0),
                Event::Recycle,
                1,
                member(starting.clone(), 0),
                vec![],
            ),
            // Stop: deregister first, then the signal; SIGKILL after the timeout.
            (
                member(ready(0, 0), 0),
                Event::Stop,
                10,
                member(
                    State::Stopping {
                        pid: 7,
                        stop: stop_at(55),
                    },
                    0,
                ),
                vec![Action::Deregister, Action::Signal],
            ),
            (
                member(starting.clone(), 0),
                Event::Stop,
                1,
                member(
                    State::Stopping {
                        pid: 7,
                        stop: stop_at(46),
                    },
                    0,
                ),
                vec![Action::Signal],
            ),
            (
                member(
                    State::Stopping {
                        pid: 7,
                        stop: stop_at(55),
                    },
                    0,
                ),
                Event::Tick,
                55,
                member(
                    State::Stopping {
                        pid: 7,
                        stop: Stop {
                            deadline: c.at(55),
                            killed: true,
                        },
                    },
                    0,
                ),
                vec![Action::Kill],
            ),
            (
                member(
                    State::Stopping {
                        pid: 7,
                        stop: stop_at(55),
                    },
                    0,
                ),
                Event::Exited { code: Some(0) },
                12,
                member(State::Stopped, 0),
                vec![],
            ),
            (
                member(
                    State::Recycling {
                        pid: 7,
                        stop: stop_at(145),
                    },
                    0,
                ),
                Event::Stop,
                120,
                member(
                    State::Stopping {
                        pid: 7,
                        stop: stop_at(145),
                    },
                    0,
                ),
                vec![],
            ),
            (
                member(State::BackingOff { until: c.at(4) }, 2),
                Event::Stop,
                1,
                member(State::Stopped, 2),
                vec![],
            ),
            (
                member(State::Stopped, 0),
                Event::Stop,
                1,
                member(State::Stopped, 0),
                vec![],
            ),
            // The operator's restart: a graceful stop, then a start at once; not a failure.
            (
                member(ready(0, 0), 2),
                Event::Restart,
                10,
                member(
                    State::Restarting {
                        pid: 7,
                        stop: stop_at(55),
                    },
                    0,
                ),
                vec![Action::Deregister, Action::Signal],
            ),
            (
                member(
                    State::Restarting {
                        pid: 7,
                        stop: stop_at(55),
                    },
                    0,
                ),
                Event::Exited { code: None },
                12,
                member(State::Stopped, 0),
                vec![Action::Spawn],
            ),
            (
                member(
                    State::Restarting {
                        pid: 7,
                        stop: stop_at(55),
                    },
                    0,
                ),
                Event::Tick,
                55,
                member(
                    State::Restarting {
                        pid: 7,
                        stop: Stop {
                            deadline: c.at(55),
                            killed: true,
                        },
                    },
                    0,
                ),
                vec![Action::Kill],
            ),
            (
                member(
                    State::Stopping {
                        pid: 7,
                        stop: stop_at(55),
                    },
                    0,
                ),
                Event::Restart,
                12,
                member(
                    State::Restarting {
                        pid: 7,
                        stop: stop_at(55),
                    },
                    0,
                ),
                vec![],
            ),
            (
                member(State::Stopped, 0),
                Event::Restart,
                1,
                member(State::Stopped, 0),
                vec![Action::Spawn],
            ),
            (
                member(
                    State::Restarting {
                        pid: 7,
                        stop: stop_at(55),
                    },
                    0,
                ),
                Event::Stop,
                12,
                member(
                    State::Stopping {
                        pid: 7,
                        stop: stop_at(55),
                    },
                    0,
                ),
                vec![],
            ),
            // The operator's start of a member waiting to start again: at once, afresh.
            (
                member(
                    State::Failed {
                        reason: r("x"),
                        retry_at: c.at(300),
                    },
                    3,
                ),
                Event::Start,
                5,
                member(State::Stopped, 0),
                vec![Action::Spawn],
            ),
            (
                member(State::BackingOff { until: c.at(4) }, 2),
                Event::Start,
                1,
                member(State::Stopped, 0),
                vec![Action::Spawn],
            ),
            (
                member(ready(0, 0), 1),
                Event::Start,
                1,
                member(ready(0, 0), 1),
                vec![],
            ),
            // Stray events change nothing.
            (
                member(State::Stopped, 0),
                Event::Serving,
                1,
                member(State::Stopped, 0),
                vec![],
            ),
            (
                member(
                    State::Stopping {
                        pid: 7,
                        stop: stop_at(55),
                    },
                    0,
                ),
                Event::HealthFailed { reason: r("late") },
                12,
                member(
                    State::Stopping {
                        pid: 7,
                        stop: stop_at(55),
                    },
                    0,
                ),
                vec![],
            ),
        ];
        for (i, (before, event, now, after, actions)) in table.into_iter().enumerate() {
            let (got, got_actions) = transition(&before, &event, c.at(now), &p);
            assert_eq!(
                (&got, &got_actions),
                (&after, &actions),
                "row {i}: {before:?} + {event:?} at {now} s"
            );
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let p = policy();
        let delays: Vec<u64> = (1..=5).map(|n| backoff(n, &p).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 4, 4]);
        assert_eq!(backoff(u32::MAX, &p), p.backoff_max, "no overflow");
    }
}
