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

use std::fmt;
use std::time::{Duration, Instant};

use crate::backoff::Backoff;

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

/// A member: its state, its failures in a row, and why it last stopped or restarted.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub state: State,
    pub failures: u32,
    /// The reason of the last [`Action::Record`] (None before the first stop or restart).
    pub reason: Option<Reason>,
}

impl Default for Member {
    fn default() -> Self {
        Member {
            state: State::Stopped,
            failures: 0,
            reason: None,
        }
    }
}

/// How a process ended: its exit code, or the signal that killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    /// The signal's number.
    Signal(i32),
    /// Its status could not be read.
    Unknown,
}

impl Exit {
    /// The exit of a reaped process.
    pub fn of(status: std::process::ExitStatus) -> Exit {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(signal)) => Exit::Signal(signal),
            (None, None) => Exit::Unknown,
        }
    }

    /// The signal's name (`SIGKILL`), or its number when it has none.
    pub fn signal_name(signal: i32) -> String {
        nix::sys::signal::Signal::try_from(signal)
            .map(|s| s.as_str().to_owned())
            .unwrap_or_else(|_| format!("signal {signal}"))
    }
}

impl fmt::Display for Exit {
    /// `exited with code 3`, `killed by SIGKILL`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exited with code {code}"),
            Exit::Signal(signal) => write!(f, "killed by {}", Exit::signal_name(*signal)),
            Exit::Unknown => f.write_str("exited (status unknown)"),
        }
    }
}

/// Why a member stopped or was restarted. Its Display is the reason in words, for the log
/// and the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The process exited by itself (Display: `exited with code 3`, `killed by SIGKILL`).
    Exited(Exit),
    /// `failures` health checks in a row of the `of` allowed failed; `why` the last answer
    /// (`NOT_SERVING`) or why there was none.
    HealthFailed { failures: u32, of: u32, why: String },
    /// It did not report SERVING within its startup wait.
    StartupTimeout(Duration),
    /// Recycled after serving `after`, while idle.
    Recycled { after: Duration, idle: bool },
    /// A config reload changed or removed it.
    ConfigChanged,
    /// `quaestor cluster restart`.
    OperatorRestart,
    /// `quaestor cluster stop`.
    OperatorStop,
    /// The cluster stops.
    Shutdown,
    /// Its process could not be started.
    SpawnFailed(String),
}

/// The cause a stop or restart is counted under (see [`Reason::kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasonKind {
    /// It exited or could not be started.
    Crash,
    /// Failed health checks, or no SERVING within the startup wait.
    Health,
    Recycle,
    Config,
    Operator,
    Shutdown,
}

impl ReasonKind {
    /// `crash`, `health`, `recycle`, `config`, `operator`, `shutdown`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonKind::Crash => "crash",
            ReasonKind::Health => "health",
            ReasonKind::Recycle => "recycle",
            ReasonKind::Config => "config",
            ReasonKind::Operator => "operator",
            ReasonKind::Shutdown => "shutdown",
        }
    }
}

impl Reason {
    pub fn kind(&self) -> ReasonKind {
        match self {
            Reason::Exited(_) | Reason::SpawnFailed(_) => ReasonKind::Crash,
            Reason::HealthFailed { .. } | Reason::StartupTimeout(_) => ReasonKind::Health,
            Reason::Recycled { .. } => ReasonKind::Recycle,
            Reason::ConfigChanged => ReasonKind::Config,
            Reason::OperatorRestart | Reason::OperatorStop => ReasonKind::Operator,
            Reason::Shutdown => ReasonKind::Shutdown,
        }
    }

    /// Planned (recycle, config, operator, shutdown: logged at INFO), or not (crash,
    /// health: WARN).
    pub fn is_planned(&self) -> bool {
        !matches!(self.kind(), ReasonKind::Crash | ReasonKind::Health)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Exited(exit) => exit.fmt(f),
            Reason::HealthFailed { failures, of, why } => {
                write!(f, "heartbeat failed {failures}/{of} ({why})")
            }
            Reason::StartupTimeout(wait) => write!(f, "startup timeout {}", Seconds(*wait)),
            Reason::Recycled { after, idle } => {
                write!(f, "recycled after {}", Hours(*after))?;
                if *idle {
                    f.write_str(" while idle")?;
                }
                Ok(())
            }
            Reason::ConfigChanged => f.write_str("config changed"),
            Reason::OperatorRestart => f.write_str("operator restart"),
            Reason::OperatorStop => f.write_str("operator stop"),
            Reason::Shutdown => f.write_str("cluster shutdown"),
            Reason::SpawnFailed(why) => write!(f, "cannot start: {why}"),
        }
    }
}

/// A duration in seconds for people: `8 s`, `0.5 s`, `2.25 s`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seconds(pub Duration);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.as_secs_f64();
        if s >= 10.0 || s.fract() == 0.0 {
            write!(f, "{} s", s.round())
        } else {
            let text = format!("{s:.2}");
            write!(f, "{} s", text.trim_end_matches('0').trim_end_matches('.'))
        }
    }
}

/// A long duration for people: `24 h`, `1.5 h`, `12 min`, `40 s`.
struct Hours(Duration);

impl fmt::Display for Hours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.as_secs_f64();
        let short = |x: f64| {
            let text = format!("{x:.1}");
            text.trim_end_matches('0').trim_end_matches('.').to_owned()
        };
        if s >= 3600.0 {
            write!(f, "{} h", short(s / 3600.0))
        } else if s >= 60.0 {
            write!(f, "{} min", short(s / 60.0))
        } else {
            write!(f, "{}", Seconds(self.0))
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
    /// The process exited.
    Exited { exit: Exit },
    /// Recycle it (the runtime checked it is idle).
    Recycle,
    /// Stop it for good, for `reason` (config changed, operator stop, shutdown).
    Stop { reason: Reason },
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
    /// Why it stops or restarts (once per stop or restart, when decided or seen): to log,
    /// count and show in the status. It becomes the member's `reason`.
    Record(Reason),
}

/// The next member and the actions to take, for `event` at `now`.
pub fn transition(
    member: &Member,
    event: &Event,
    now: Instant,
    policy: &Policy,
) -> (Member, Vec<Action>) {
    let (mut next, actions) = step(member, event, now, policy);
    if let Some(reason) = actions.iter().rev().find_map(|a| match a {
        Action::Record(reason) => Some(reason),
        _ => None,
    }) {
        next.reason = Some(reason.clone());
    }
    (next, actions)
}

/// [`transition`], but for the member's `reason` (set from the `Record` action).
fn step(member: &Member, event: &Event, now: Instant, policy: &Policy) -> (Member, Vec<Action>) {
    use Event as E;
    use State as S;
    let failures = member.failures;
    let stop = || Stop {
        deadline: now + policy.shutdown_timeout,
        killed: false,
    };
    let stay = || (member.clone(), Vec::new());
    let with = |state: State, failures: u32, actions: Vec<Action>| {
        (
            Member {
                state,
                failures,
                reason: member.reason.clone(),
            },
            actions,
        )
    };
    let record = |reason: &Reason| Action::Record(reason.clone());

    match (&member.state, event) {
        // Stop: from anywhere, for good.
        (S::Stopped, E::Stop { .. }) => with(S::Stopped, failures, vec![]),
        (S::BackingOff { .. } | S::Failed { .. }, E::Stop { reason }) => {
            with(S::Stopped, failures, vec![record(reason)])
        }
        (S::Starting { pid, .. }, E::Stop { reason }) => with(
            S::Stopping {
                pid: *pid,
                stop: stop(),
            },
            failures,
            vec![record(reason), Action::Signal],
        ),
        (S::Ready { pid, .. }, E::Stop { reason }) => with(
            S::Stopping {
                pid: *pid,
                stop: stop(),
            },
            failures,
            vec![record(reason), Action::Deregister, Action::Signal],
        ),
        (
            S::Unhealthy { pid, stop } | S::Recycling { pid, stop } | S::Restarting { pid, stop },
            E::Stop { reason },
        ) => with(
            S::Stopping {
                pid: *pid,
                stop: *stop,
            },
            failures,
            vec![record(reason)],
        ),

        // Starting.
        (S::Stopped, E::Start) => with(S::Stopped, failures, vec![Action::Spawn]),
        (S::BackingOff { .. } | S::Failed { .. }, E::Start) => {
            with(S::Stopped, 0, vec![Action::Spawn])
        }

        // The operator's restart: stop gracefully (a stop under way goes on), then start.
        (S::Stopped | S::BackingOff { .. } | S::Failed { .. }, E::Restart) => with(
            S::Stopped,
            0,
            vec![record(&Reason::OperatorRestart), Action::Spawn],
        ),
        (S::Starting { pid, .. }, E::Restart) => with(
            S::Restarting {
                pid: *pid,
                stop: stop(),
            },
            0,
            vec![record(&Reason::OperatorRestart), Action::Signal],
        ),
        (S::Ready { pid, .. }, E::Restart) => with(
            S::Restarting {
                pid: *pid,
                stop: stop(),
            },
            0,
            vec![
                record(&Reason::OperatorRestart),
                Action::Deregister,
                Action::Signal,
            ],
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
            vec![record(&Reason::OperatorRestart)],
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
            failed(
                failures + 1,
                Reason::SpawnFailed(reason.clone()),
                now,
                policy,
            )
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
        (S::Starting { .. }, E::Exited { exit }) => {
            failed(failures + 1, Reason::Exited(*exit), now, policy)
        }
        (S::Starting { pid, deadline, .. }, E::Tick) if now >= *deadline => with(
            S::Unhealthy {
                pid: *pid,
                stop: stop(),
            },
            failures,
            vec![
                Action::Record(Reason::StartupTimeout(policy.startup_wait)),
                Action::Signal,
            ],
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
            E::HealthFailed { reason },
        ) => {
            let failed_checks = failed_checks + 1;
            if failed_checks >= policy.unhealthy_after {
                with(
                    S::Unhealthy {
                        pid: *pid,
                        stop: stop(),
                    },
                    reset(failures, *since, now, policy),
                    vec![
                        Action::Record(Reason::HealthFailed {
                            failures: failed_checks,
                            of: policy.unhealthy_after,
                            why: reason.clone(),
                        }),
                        Action::Deregister,
                        Action::Signal,
                    ],
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
        (S::Ready { since, .. }, E::Exited { exit }) => {
            let (next, mut actions) = failed(
                reset(failures, *since, now, policy) + 1,
                Reason::Exited(*exit),
                now,
                policy,
            );
            actions.insert(0, Action::Deregister);
            (next, actions)
        }
        (S::Ready { pid, since, .. }, E::Recycle) => with(
            S::Recycling {
                pid: *pid,
                stop: stop(),
            },
            failures,
            vec![
                Action::Record(Reason::Recycled {
                    after: now.saturating_duration_since(*since),
                    idle: true,
                }),
                Action::Deregister,
                Action::Signal,
            ],
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

        // Stops under way. An unhealthy member's exit counts as the failure it was stopped
        // for (the reason recorded then), not as a crash.
        (S::Unhealthy { .. }, E::Exited { .. }) => {
            let (mut next, mut actions) = failed(
                failures + 1,
                member
                    .reason
                    .clone()
                    .unwrap_or(Reason::Exited(Exit::Unknown)),
                now,
                policy,
            );
            actions.retain(|a| !matches!(a, Action::Record(_)));
            next.reason = member.reason.clone();
            (next, actions)
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

/// After the `failures`-th failure in a row, for `reason`: back off, or Failed when there
/// were too many. The reason is recorded.
fn failed(failures: u32, reason: Reason, now: Instant, policy: &Policy) -> (Member, Vec<Action>) {
    if failures >= policy.max_failures {
        let plural = if failures == 1 { "" } else { "s" };
        let text = format!("{failures} failure{plural} in a row, the last: {reason}");
        return (
            Member {
                state: State::Failed {
                    reason: text.clone(),
                    retry_at: now + policy.failed_retry,
                },
                failures,
                reason: Some(reason.clone()),
            },
            vec![
                Action::Record(reason),
                Action::ReportFailed { reason: text },
            ],
        );
    }
    (
        Member {
            state: State::BackingOff {
                until: now + backoff(failures, policy),
            },
            failures,
            reason: Some(reason.clone()),
        },
        vec![Action::Record(reason)],
    )
}

/// The delay before the next start after `failures` failures in a row: the initial delay
/// doubled for each failure after the first, at most `backoff_max`. (The runner adds up to
/// 20 % jitter.)
pub fn backoff(failures: u32, policy: &Policy) -> Duration {
    Backoff::new(policy.backoff_initial, policy.backoff_max).delay(failures)
}

/// The failure count, reset once the member has served for `reset_after`.
fn reset(failures: u32, serving_since: Instant, now: Instant, policy: &Policy) -> u32 {
    if now.saturating_duration_since(serving_since) >= policy.reset_after {
        0
    } else {
        failures
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
        Member {
            state,
            failures,
            reason: None,
        }
    }

    /// A member that last stopped or restarted for `reason`.
    fn because(state: State, failures: u32, reason: Reason) -> Member {
        Member {
            state,
            failures,
            reason: Some(reason),
        }
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
        let code = |code| Reason::Exited(Exit::Code(code));
        let timeout = Reason::StartupTimeout(Duration::from_secs(8));
        let recycled = Reason::Recycled {
            after: Duration::from_secs(100),
            idle: true,
        };
        let health = Reason::HealthFailed {
            failures: 2,
            of: 2,
            why: r("timeout"),
        };
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
                because(
                    State::Unhealthy {
                        pid: 7,
                        stop: stop_at(53),
                    },
                    0,
                    timeout.clone(),
                ),
                vec![Action::Record(timeout.clone()), Action::Signal],
            ),
            // A crash while starting backs off; the delay doubles with failures in a row.
            (
                member(starting.clone(), 0),
                Event::Exited {
                    exit: Exit::Code(1),
                },
                3,
                because(State::BackingOff { until: c.at(4) }, 1, code(1)),
                vec![Action::Record(code(1))],
            ),
            (
                member(starting.clone(), 1),
                Event::Exited {
                    exit: Exit::Code(3),
                },
                3,
                because(State::BackingOff { until: c.at(5) }, 2, code(3)),
                vec![Action::Record(code(3))],
            ),
            // Too many in a row: Failed, loudly, retried slowly.
            (
                member(starting.clone(), 2),
                Event::Exited {
                    exit: Exit::Signal(9),
                },
                3,
                because(
                    State::Failed {
                        reason: r("3 failures in a row, the last: killed by SIGKILL"),
                        retry_at: c.at(303),
                    },
                    3,
                    Reason::Exited(Exit::Signal(9)),
                ),
                vec![
                    Action::Record(Reason::Exited(Exit::Signal(9))),
                    Action::ReportFailed {
                        reason: r("3 failures in a row, the last: killed by SIGKILL"),
                    },
                ],
            ),
            (
                member(State::Stopped, 0),
                Event::SpawnFailed {
                    reason: r("no such file"),
                },
                0,
                because(
                    State::BackingOff { until: c.at(1) },
                    1,
                    Reason::SpawnFailed(r("no such file")),
                ),
                vec![Action::Record(Reason::SpawnFailed(r("no such file")))],
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
                because(
                    State::Unhealthy {
                        pid: 7,
                        stop: stop_at(51),
                    },
                    1,
                    health.clone(),
                ),
                vec![
                    Action::Record(health.clone()),
                    Action::Deregister,
                    Action::Signal,
                ],
            ),
            (
                member(ready(0, 0), 2),
                Event::Exited {
                    exit: Exit::Code(0),
                },
                5,
                because(
                    State::Failed {
                        reason: r("3 failures in a row, the last: exited with code 0"),
                        retry_at: c.at(305),
                    },
                    3,
                    code(0),
                ),
                vec![
                    Action::Deregister,
                    Action::Record(code(0)),
                    Action::ReportFailed {
                        reason: r("3 failures in a row, the last: exited with code 0"),
                    },
                ],
            ),
            (
                member(ready(0, 0), 2),
                Event::Exited {
                    exit: Exit::Code(0),
                },
                60,
                because(State::BackingOff { until: c.at(61) }, 1, code(0)),
                vec![Action::Deregister, Action::Record(code(0))],
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
                because(
                    State::Unhealthy {
                        pid: 7,
                        stop: stop_at(45),
                    },
                    0,
                    health.clone(),
                ),
                Event::Exited {
                    exit: Exit::Signal(15),
                },
                10,
                because(State::BackingOff { until: c.at(11) }, 1, health.clone()),
                vec![],
            ),
            // Recycling: deregister and stop, then start at once (not a failure).
            (
                member(ready(0, 0), 0),
                Event::Recycle,
                100,
                because(
                    State::Recycling {
                        pid: 7,
                        stop: stop_at(145),
                    },
                    0,
                    recycled.clone(),
                ),
                vec![
                    Action::Record(recycled.clone()),
                    Action::Deregister,
                    Action::Signal,
                ],
            ),
            (
                member(
                    State::Recycling {
                        pid: 7,
                        stop: stop_at(145),
                    },
                    0,
                ),
                Event::Exited {
                    exit: Exit::Code(0),
                },
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
                Event::Stop {
                    reason: Reason::ConfigChanged,
                },
                10,
                because(
                    State::Stopping {
                        pid: 7,
                        stop: stop_at(55),
                    },
                    0,
                    Reason::ConfigChanged,
                ),
                vec![
                    Action::Record(Reason::ConfigChanged),
                    Action::Deregister,
                    Action::Signal,
                ],
            ),
            (
                member(starting.clone(), 0),
                Event::Stop {
                    reason: Reason::OperatorStop,
                },
                1,
                because(
                    State::Stopping {
                        pid: 7,
                        stop: stop_at(46),
                    },
                    0,
                    Reason::OperatorStop,
                ),
                vec![Action::Record(Reason::OperatorStop), Action::Signal],
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
                Event::Exited {
                    exit: Exit::Code(0),
                },
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
                Event::Stop {
                    reason: Reason::Shutdown,
                },
                120,
                because(
                    State::Stopping {
                        pid: 7,
                        stop: stop_at(145),
                    },
                    0,
                    Reason::Shutdown,
                ),
                vec![Action::Record(Reason::Shutdown)],
            ),
            (
                member(State::BackingOff { until: c.at(4) }, 2),
                Event::Stop {
                    reason: Reason::OperatorStop,
                },
                1,
                because(State::Stopped, 2, Reason::OperatorStop),
                vec![Action::Record(Reason::OperatorStop)],
            ),
            (
                member(State::Stopped, 0),
                Event::Stop {
                    reason: Reason::Shutdown,
                },
                1,
                member(State::Stopped, 0),
                vec![],
            ),
            // The operator's restart: a graceful stop, then a start at once; not a failure.
            (
                member(ready(0, 0), 2),
                Event::Restart,
                10,
                because(
                    State::Restarting {
                        pid: 7,
                        stop: stop_at(55),
                    },
                    0,
                    Reason::OperatorRestart,
                ),
                vec![
                    Action::Record(Reason::OperatorRestart),
                    Action::Deregister,
                    Action::Signal,
                ],
            ),
            (
                member(
                    State::Restarting {
                        pid: 7,
                        stop: stop_at(55),
                    },
                    0,
                ),
                Event::Exited {
                    exit: Exit::Unknown,
                },
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
                because(
                    State::Restarting {
                        pid: 7,
                        stop: stop_at(55),
                    },
                    0,
                    Reason::OperatorRestart,
                ),
                vec![Action::Record(Reason::OperatorRestart)],
            ),
            (
                member(State::Stopped, 0),
                Event::Restart,
                1,
                because(State::Stopped, 0, Reason::OperatorRestart),
                vec![Action::Record(Reason::OperatorRestart), Action::Spawn],
            ),
            (
                member(
                    State::Restarting {
                        pid: 7,
                        stop: stop_at(55),
                    },
                    0,
                ),
                Event::Stop {
                    reason: Reason::OperatorStop,
                },
                12,
                because(
                    State::Stopping {
                        pid: 7,
                        stop: stop_at(55),
                    },
                    0,
                    Reason::OperatorStop,
                ),
                vec![Action::Record(Reason::OperatorStop)],
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
    fn reasons_read_as_words() {
        let words: Vec<String> = [
            Reason::HealthFailed {
                failures: 2,
                of: 2,
                why: "NOT_SERVING".into(),
            },
            Reason::HealthFailed {
                failures: 1,
                of: 1,
                why: "no answer in 20 s".into(),
            },
            Reason::Exited(Exit::Code(3)),
            Reason::Exited(Exit::Signal(9)),
            Reason::Exited(Exit::Signal(15)),
            Reason::StartupTimeout(Duration::from_secs(8)),
            Reason::StartupTimeout(Duration::from_millis(1500)),
            Reason::Recycled {
                after: Duration::from_secs(24 * 3600),
                idle: true,
            },
            Reason::Recycled {
                after: Duration::from_secs(90 * 60),
                idle: true,
            },
            Reason::ConfigChanged,
            Reason::OperatorRestart,
            Reason::OperatorStop,
            Reason::Shutdown,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            words,
            [
                "heartbeat failed 2/2 (NOT_SERVING)",
                "heartbeat failed 1/1 (no answer in 20 s)",
                "exited with code 3",
                "killed by SIGKILL",
                "killed by SIGTERM",
                "startup timeout 8 s",
                "startup timeout 1.5 s",
                "recycled after 24 h while idle",
                "recycled after 1.5 h while idle",
                "config changed",
                "operator restart",
                "operator stop",
                "cluster shutdown",
            ]
        );
        let kinds: Vec<&str> = [
            Reason::Exited(Exit::Code(3)),
            Reason::SpawnFailed("x".into()),
            Reason::StartupTimeout(Duration::from_secs(8)),
            Reason::Recycled {
                after: Duration::ZERO,
                idle: true,
            },
            Reason::ConfigChanged,
            Reason::OperatorRestart,
        ]
        .iter()
        .map(|r| r.kind().as_str())
        .collect();
        assert_eq!(
            kinds,
            ["crash", "crash", "health", "recycle", "config", "operator"]
        );
        assert!(!Reason::Exited(Exit::Code(0)).is_planned());
        assert!(Reason::ConfigChanged.is_planned());
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let p = policy();
        let delays: Vec<u64> = (1..=5).map(|n| backoff(n, &p).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 4, 4]);
        assert_eq!(backoff(u32::MAX, &p), p.backoff_max, "no overflow");
    }
}
