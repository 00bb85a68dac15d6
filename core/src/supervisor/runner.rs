//! Runs one member: the state machine of [`member`](super::member) driven by what happens to
//! the real process. Event-driven: the process's exit is seen at once (`Child::wait`), health
//! is asked on a timer (every `readiness_poll` while starting, every heartbeat while ready),
//! and the other timers come from the deadlines the state carries.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use tokio::process::Child;
use tokio::sync::{mpsc, watch};

use super::member::{
    Action, Event, Exit, Member, Policy, Reason, ReasonKind, Seconds, State, transition,
};
use super::spawn::{MemberCommand, Spawner, signal_group};
use crate::client::{ClientError, Target};
use crate::registry::ServiceLocation;
use crate::registry::etcd::{EtcdError, EtcdRegistrar};
use crate::registry::memory::MemoryRegistry;
use crate::server::health::ServingStatus;
use crate::wallclock::utc;

/// Where members are registered while they serve.
pub trait MemberRegistry: Send + Sync {
    fn register<'a>(
        &'a self,
        location: &'a ServiceLocation,
    ) -> BoxFuture<'a, Result<(), EtcdError>>;
    fn deregister<'a>(
        &'a self,
        location: &'a ServiceLocation,
    ) -> BoxFuture<'a, Result<(), EtcdError>>;
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl MemberRegistry for MemoryRegistry {
    fn register<'a>(
        &'a self,
        location: &'a ServiceLocation,
    ) -> BoxFuture<'a, Result<(), EtcdError>> {
        MemoryRegistry::register(self, location.clone());
        Box::pin(async { Ok(()) })
    }
    fn deregister<'a>(
        &'a self,
        location: &'a ServiceLocation,
    ) -> BoxFuture<'a, Result<(), EtcdError>> {
        MemoryRegistry::deregister(self, location);
        Box::pin(async { Ok(()) })
    }
}

impl MemberRegistry for EtcdRegistrar {
    fn register<'a>(
        &'a self,
        location: &'a ServiceLocation,
    ) -> BoxFuture<'a, Result<(), EtcdError>> {
        Box::pin(EtcdRegistrar::register(self, location))
    }
    fn deregister<'a>(
        &'a self,
        location: &'a ServiceLocation,
    ) -> BoxFuture<'a, Result<(), EtcdError>> {
        Box::pin(EtcdRegistrar::deregister(self, location))
    }
}

/// Everything a runner needs to know about its member.
#[derive(Clone)]
pub struct MemberSpec {
    /// E.g. `Worker[2]`, for the log and the status.
    pub tag: String,
    pub command: MemberCommand,
    /// Where its health is asked (`host:port`).
    pub health_address: String,
    /// The service names to check; empty: the server as a whole (`""`).
    pub services: Vec<String>,
    /// Registered while it serves (none when excluded from the registry).
    pub locations: Vec<ServiceLocation>,
    pub policy: Policy,
    pub heartbeat: Duration,
    pub response_timeout: Duration,
    pub stop_signal: Signal,
    /// Ask for a parent-death signal (members whose shutdown action is not None).
    pub die_with_supervisor: bool,
    /// Ask its health (gRPC, at `health_address`): Starting until SERVING, restarted when it
    /// fails. Off: serving as soon as it runs, and only its exit restarts it (the sidecar's
    /// worker, whose health the sidecar probes itself).
    pub check_health: bool,
}

/// The settings of a member that can change while it runs (on a config reload), without
/// restarting its process.
#[derive(Debug, Clone, PartialEq)]
pub struct Tuning {
    pub policy: Policy,
    pub heartbeat: Duration,
    pub response_timeout: Duration,
    pub stop_signal: Signal,
    pub die_with_supervisor: bool,
}

impl MemberSpec {
    pub fn tuning(&self) -> Tuning {
        Tuning {
            policy: self.policy.clone(),
            heartbeat: self.heartbeat,
            response_timeout: self.response_timeout,
            stop_signal: self.stop_signal,
            die_with_supervisor: self.die_with_supervisor,
        }
    }

    fn retune(&mut self, tuning: Tuning) {
        self.policy = tuning.policy;
        self.heartbeat = tuning.heartbeat;
        self.response_timeout = tuning.response_timeout;
        self.stop_signal = tuning.stop_signal;
        self.die_with_supervisor = tuning.die_with_supervisor;
    }
}

/// How often readiness is asked while a member starts.
const READINESS_POLL: Duration = Duration::from_millis(200);

/// What a runner publishes about its member.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberStatus {
    pub tag: String,
    pub state: State,
    /// The process, while there is one.
    pub pid: Option<u32>,
    /// When the current process was started (None while there is none).
    pub started: Option<Instant>,
    pub failures: u32,
    /// Starts so far, the first included.
    pub starts: u32,
    pub last_health: Option<ServingStatus>,
    /// The states it went through, oldest first (the last [`HISTORY`]): transient states such
    /// as Unhealthy or Recycling can be seen afterwards.
    pub history: Vec<&'static str>,
    /// How its last process ended (None before the first exit).
    pub last_exit: Option<Exit>,
    /// When that was.
    pub last_exit_at: Option<SystemTime>,
    /// Why it last stopped or restarted (None before the first stop or restart).
    pub last_reason: Option<Reason>,
    /// Its stops and restarts so far, by cause.
    pub restarts_by: RestartCounts,
    /// Drained by the operator: kept out of the registry while it runs on, until undrained.
    pub drained: bool,
}

/// Stops and restarts of a member by cause, each counted when it is decided (or, for a
/// crash, seen). A stop for good (operator stop, removed by a reload) counts too; the
/// cluster's own shutdown does not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestartCounts {
    /// It exited by itself, or could not be started.
    pub crashes: u32,
    /// Failed health checks, or no SERVING within the startup wait.
    pub health: u32,
    pub recycles: u32,
    /// Changed by a config reload (counted on the member that replaces it).
    pub config: u32,
    /// Operator restart or stop.
    pub operator: u32,
}

impl RestartCounts {
    fn count(&mut self, kind: ReasonKind) {
        let n = match kind {
            ReasonKind::Crash => &mut self.crashes,
            ReasonKind::Health => &mut self.health,
            ReasonKind::Recycle => &mut self.recycles,
            ReasonKind::Config => &mut self.config,
            ReasonKind::Operator => &mut self.operator,
            ReasonKind::Shutdown => return,
        };
        *n += 1;
    }
}

/// How many past states a status keeps.
pub const HISTORY: usize = 32;

/// Orders to a runner.
#[derive(Debug, Clone, PartialEq)]
pub enum Order {
    Recycle,
    /// Stop it for good: the cluster stops (`StopFor(Reason::Shutdown)`); the runner ends.
    Stop,
    /// Stop it for good, for this reason (config changed); the runner ends.
    StopFor(Reason),
    /// The operator's stop: stop the process and keep it stopped (the runner stays, and
    /// nothing restarts it) until [`Order::Start`].
    Halt,
    /// The operator's start: start a member that is stopped, backing off or failed, at once.
    Start,
    /// The operator's restart: a graceful stop, then a start at once (not a failure).
    Restart,
    /// Keep it out of the registry (deregister it now if it serves) without touching its
    /// process or its health: maintenance.
    Drain,
    /// Undo [`Order::Drain`]: registered again as soon as (or if) it serves.
    Undrain,
    /// Deregister and let go of the process without stopping it (shutdown action None).
    Leave,
    /// Use these settings from now on (the process keeps running).
    Retune(Box<Tuning>),
}

/// A running member: its status, and a way to give it orders. The runner ends after a stop.
pub struct Runner {
    pub status: watch::Receiver<MemberStatus>,
    orders: mpsc::Sender<Order>,
    pub task: tokio::task::JoinHandle<()>,
}

/// What others need to follow a runner and give it orders (cheap to clone).
#[derive(Debug, Clone)]
pub struct RunnerHandle {
    pub status: watch::Receiver<MemberStatus>,
    orders: mpsc::Sender<Order>,
}

impl RunnerHandle {
    pub async fn order(&self, order: Order) {
        let _ = self.orders.send(order).await;
    }
}

impl Runner {
    pub fn handle(&self) -> RunnerHandle {
        RunnerHandle {
            status: self.status.clone(),
            orders: self.orders.clone(),
        }
    }

    /// Starts running `spec`: spawns the process at once.
    pub fn start(spec: MemberSpec, spawner: Spawner, registry: Arc<dyn MemberRegistry>) -> Runner {
        Runner::start_after(spec, spawner, registry, None)
    }

    /// [`Runner::start`] for a member that replaces `previous` (the last status of the member
    /// of that name, stopped because the config changed it): its last exit, and its restarts
    /// by cause, carry over, and the replacement counts as a config restart.
    pub fn start_after(
        spec: MemberSpec,
        spawner: Spawner,
        registry: Arc<dyn MemberRegistry>,
        previous: Option<&MemberStatus>,
    ) -> Runner {
        let mut first = MemberStatus {
            tag: spec.tag.clone(),
            state: State::Stopped,
            pid: None,
            started: None,
            failures: 0,
            starts: 0,
            last_health: None,
            history: vec![member_state_name(&State::Stopped)],
            last_exit: None,
            last_exit_at: None,
            last_reason: None,
            restarts_by: RestartCounts::default(),
            drained: false,
        };
        if let Some(previous) = previous {
            first.last_exit = previous.last_exit;
            first.last_exit_at = previous.last_exit_at;
            first.last_reason = Some(Reason::ConfigChanged);
            first.restarts_by = previous.restarts_by;
            if previous.last_reason != Some(Reason::ConfigChanged) {
                // Its stop was not counted as a config change (it was stopped for another
                // reason just before); the replacement is.
                first.restarts_by.config += 1;
            }
        }
        let (status_tx, status) = watch::channel(first);
        let (orders, orders_rx) = mpsc::channel(8);
        let task = tokio::spawn(run(spec, spawner, registry, status_tx, orders_rx));
        Runner {
            status,
            orders,
            task,
        }
    }

    pub async fn order(&self, order: Order) {
        let _ = self.orders.send(order).await;
    }

    /// Stops the member (deregister, stop signal, SIGKILL after the timeout) and waits.
    pub async fn stop(self) {
        let _ = self.orders.send(Order::Stop).await;
        let _ = self.task.await;
    }
}

async fn run(
    mut spec: MemberSpec,
    spawner: Spawner,
    registry: Arc<dyn MemberRegistry>,
    status: watch::Sender<MemberStatus>,
    mut orders: mpsc::Receiver<Order>,
) {
    let mut target = Target::new(&spec.health_address, None, spec.response_timeout).ok();
    let mut member = Member::default();
    let mut child: Option<Child> = None;
    let mut next_health = Instant::now();
    let mut pending = vec![Event::Start];
    // Stopped by the operator: the runner waits for orders instead of ending.
    let mut halted = false;
    let mut drained = false;
    loop {
        for event in std::mem::take(&mut pending) {
            let now = Instant::now();
            let (mut next, actions) = transition(&member, &event, now, &spec.policy);
            // Jitter on every new backoff (up to +20 %), so members that failed together
            // do not all come back at the same moment.
            if let State::BackingOff { until } = &mut next.state {
                if !matches!(member.state, State::BackingOff { .. }) {
                    *until += until
                        .saturating_duration_since(now)
                        .mul_f64(fastrand::f64() * 0.2);
                }
            }
            if next.state != member.state {
                tracing::debug!(
                    member = %spec.tag,
                    from = member_state_name(&member.state),
                    to = member_state_name(&next.state),
                    "member state"
                );
            }
            let recorded = actions.iter().find_map(|a| match a {
                Action::Record(reason) => Some(reason.clone()),
                _ => None,
            });
            tell(&spec, &member, &next, &event, recorded.as_ref(), now);
            if let Some(reason) = recorded {
                status.send_modify(|s| {
                    s.restarts_by.count(reason.kind());
                    s.last_reason = Some(reason);
                });
            }
            member = next;
            for action in actions {
                if drained && action == Action::Register {
                    continue;
                }
                if let Some(follow_up) = perform(
                    &action,
                    &spec,
                    &spawner,
                    registry.as_ref(),
                    &mut child,
                    &status,
                )
                .await
                {
                    let spawned = matches!(follow_up, Event::Spawned { .. });
                    pending.push(follow_up);
                    if matches!(action, Action::Spawn) {
                        next_health = Instant::now() + READINESS_POLL;
                    }
                    // Nothing to ask: serving as soon as it runs.
                    if spawned && !spec.check_health {
                        pending.push(Event::Serving);
                    }
                }
            }
            status.send_modify(|s| {
                if member_state_name(&s.state) != member_state_name(&member.state) {
                    if s.history.len() == HISTORY {
                        s.history.remove(0);
                    }
                    s.history.push(member_state_name(&member.state));
                }
                s.state = member.state.clone();
                s.failures = member.failures;
            });
        }
        if !pending.is_empty() {
            continue;
        }
        // Stopped for good (a recycled member's restart is already under way by now).
        if matches!(member.state, State::Stopped) && child.is_none() && !halted {
            return;
        }

        let wake = next_wake(&member.state, spec.check_health.then_some(next_health));
        tokio::select! {
            exited = async { child.as_mut().expect("checked").wait().await }, if child.is_some() => {
                child = None;
                status.send_modify(|s| {
                    s.pid = None;
                    s.started = None;
                });
                let exit = exited.map_or(Exit::Unknown, Exit::of);
                status.send_modify(|s| {
                    s.last_exit = Some(exit);
                    s.last_exit_at = Some(SystemTime::now());
                });
                pending.push(Event::Exited { exit });
            }
            order = orders.recv() => match order {
                Some(Order::Recycle) => pending.push(Event::Recycle),
                Some(Order::Stop) => {
                    halted = false;
                    pending.push(Event::Stop { reason: Reason::Shutdown });
                }
                Some(Order::StopFor(reason)) => {
                    halted = false;
                    pending.push(Event::Stop { reason });
                }
                Some(Order::Halt) => {
                    tracing::info!(member = %spec.tag, "stopped by the operator; it stays stopped until started");
                    halted = true;
                    pending.push(Event::Stop { reason: Reason::OperatorStop });
                }
                Some(Order::Start) => {
                    halted = false;
                    tracing::info!(member = %spec.tag, "started by the operator");
                    pending.push(Event::Start);
                }
                Some(Order::Restart) => {
                    halted = false;
                    tracing::info!(member = %spec.tag, "restarted by the operator");
                    pending.push(Event::Restart);
                }
                Some(Order::Drain) => {
                    if !drained {
                        drained = true;
                        if matches!(member.state, State::Ready { .. }) {
                            perform(&Action::Deregister, &spec, &spawner, registry.as_ref(), &mut child, &status).await;
                        }
                        tracing::info!(member = %spec.tag, "drained: out of the registry until undrained");
                    }
                    status.send_modify(|s| s.drained = true);
                }
                Some(Order::Undrain) => {
                    if drained {
                        drained = false;
                        if matches!(member.state, State::Ready { .. }) {
                            perform(&Action::Register, &spec, &spawner, registry.as_ref(), &mut child, &status).await;
                        }
                        tracing::info!(member = %spec.tag, "undrained: registered again while it serves");
                    }
                    status.send_modify(|s| s.drained = false);
                }
                Some(Order::Retune(tuning)) => {
                    if *tuning != spec.tuning() {
                        tracing::info!(member = %spec.tag, "new settings");
                        spec.retune(*tuning);
                        target = Target::new(&spec.health_address, None, spec.response_timeout).ok();
                    }
                }
                Some(Order::Leave) => {
                    if matches!(member.state, State::Ready { .. }) && !drained {
                        perform(&Action::Deregister, &spec, &spawner, registry.as_ref(), &mut child, &status).await;
                    }
                    tracing::info!(member = %spec.tag, "left running (shutdown action None)");
                    return;
                }
                // Nobody can give orders any more: stop.
                None => pending.push(Event::Stop { reason: Reason::Shutdown }),
            },
            () = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if spec.check_health && now >= next_health && matches!(member.state, State::Starting { .. } | State::Ready { .. }) {
                    let healthy = check(&target, &spec.services).await;
                    status.send_modify(|s| s.last_health = Some(healthy.as_ref().copied().unwrap_or(ServingStatus::Unknown)));
                    let starting = matches!(member.state, State::Starting { .. });
                    match healthy {
                        Ok(ServingStatus::Serving) => pending.push(Event::Serving),
                        // While starting, anything else only means "not yet".
                        _ if starting => {}
                        Ok(other) => pending.push(Event::HealthFailed { reason: other.as_str_name().to_owned() }),
                        Err(reason) => pending.push(Event::HealthFailed { reason }),
                    }
                    let starting_now = matches!(member.state, State::Starting { .. });
                    next_health = Instant::now() + if starting_now { READINESS_POLL } else { spec.heartbeat };
                }
                pending.push(Event::Tick);
            }
        }
    }
}

/// The name of a state, for logs and status.
pub fn member_state_name(state: &State) -> &'static str {
    match state {
        State::Stopped => "Stopped",
        State::Starting { .. } => "Starting",
        State::Ready { .. } => "Ready",
        State::Unhealthy { .. } => "Unhealthy",
        State::Recycling { .. } => "Recycling",
        State::Restarting { .. } => "Restarting",
        State::Stopping { .. } => "Stopping",
        State::BackingOff { .. } => "BackingOff",
        State::Failed { .. } => "Failed",
    }
}

/// When the loop must wake up next: the state's deadline, or the next health question.
fn next_wake(state: &State, next_health: Option<Instant>) -> Instant {
    let far = Instant::now() + Duration::from_secs(3600);
    let deadline = match state {
        State::Starting { deadline, .. } => Some(*deadline),
        State::BackingOff { until } => Some(*until),
        State::Failed { retry_at, .. } => Some(*retry_at),
        State::Unhealthy { stop, .. }
        | State::Recycling { stop, .. }
        | State::Restarting { stop, .. }
        | State::Stopping { stop, .. }
            if !stop.killed =>
        {
            Some(stop.deadline)
        }
        _ => None,
    };
    let health =
        next_health.filter(|_| matches!(state, State::Starting { .. } | State::Ready { .. }));
    [deadline, health]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(far)
}

/// Every service SERVING → Serving; otherwise the first other status, or why there was no answer.
async fn check(target: &Option<Target>, services: &[String]) -> Result<ServingStatus, String> {
    let Some(target) = target else {
        return Err("no valid health address".to_owned());
    };
    let channel = target.connect().await.map_err(|e| no_answer(&e))?;
    let all = if services.is_empty() {
        vec![String::new()]
    } else {
        services.to_vec()
    };
    for service in &all {
        let status = target
            .check_health(channel.clone(), service)
            .await
            .map_err(|e| no_answer(&e))?;
        if status != ServingStatus::Serving {
            return Ok(status);
        }
    }
    Ok(ServingStatus::Serving)
}

/// Why a health check got no answer, for the reason: `no answer in 20 s`, `cannot connect:
/// …`, `answered Unimplemented`.
fn no_answer(error: &ClientError) -> String {
    match error {
        ClientError::Timeout { after, .. } => format!("no answer in {}", Seconds(*after)),
        ClientError::Unreachable { reason, .. } => format!("cannot connect: {reason}"),
        ClientError::Rpc { status, .. } => format!("answered {:?}", status.code()),
        other => other.to_string(),
    }
}

/// Performs one action; returns the event it leads to, if any (a spawn's outcome).
async fn perform(
    action: &Action,
    spec: &MemberSpec,
    spawner: &Spawner,
    registry: &dyn MemberRegistry,
    child: &mut Option<Child>,
    status: &watch::Sender<MemberStatus>,
) -> Option<Event> {
    // The member's own pid (its group's id), while its process runs.
    let pid = child.as_ref().and(status.borrow().pid);
    match action {
        Action::Spawn => match spawner.spawn(&spec.command, &spec.tag, spec.die_with_supervisor) {
            Ok(spawned) => {
                let pid = spawner.member_pid(&spawned, spec.die_with_supervisor).await;
                tracing::info!(member = %spec.tag, pid, "member started");
                *child = Some(spawned);
                status.send_modify(|s| {
                    s.starts += 1;
                    s.pid = Some(pid);
                    s.started = Some(Instant::now());
                });
                Some(Event::Spawned { pid })
            }
            Err(error) => {
                // Logged with what follows (the backoff) once the state machine has it.
                tracing::debug!(member = %spec.tag, %error, "cannot start member");
                Some(Event::SpawnFailed {
                    reason: error.to_string(),
                })
            }
        },
        Action::Register => {
            for location in &spec.locations {
                if let Err(error) = registry.register(location).await {
                    tracing::warn!(member = %spec.tag, %location, %error, "cannot register");
                }
            }
            None
        }
        Action::Deregister => {
            for location in &spec.locations {
                if let Err(error) = registry.deregister(location).await {
                    tracing::warn!(member = %spec.tag, %location, %error, "cannot deregister");
                }
            }
            None
        }
        Action::Signal => {
            if let Some(pid) = pid {
                let _ = signal_group(pid, spec.stop_signal);
            }
            None
        }
        Action::Kill => {
            if let Some(pid) = pid {
                tracing::warn!(member = %spec.tag, pid, "member did not stop in time; SIGKILL to its group");
                let _ = signal_group(pid, Signal::SIGKILL);
            }
            None
        }
        // Both logged by `tell`, with what follows.
        Action::ReportFailed { .. } | Action::Record(_) => None,
    }
}

/// The process of a state, if it has one.
fn pid_of(state: &State) -> Option<u32> {
    match state {
        State::Starting { pid, .. }
        | State::Ready { pid, .. }
        | State::Unhealthy { pid, .. }
        | State::Recycling { pid, .. }
        | State::Restarting { pid, .. }
        | State::Stopping { pid, .. } => Some(*pid),
        State::Stopped | State::BackingOff { .. } | State::Failed { .. } => None,
    }
}

/// Logs a stop or restart once, in words: when it is decided (with its reason: INFO when
/// planned, WARN otherwise) and when the process is gone (what comes next: the time of the
/// next start when backing off; ERROR when it is Failed).
fn tell(
    spec: &MemberSpec,
    before: &Member,
    after: &Member,
    event: &Event,
    recorded: Option<&Reason>,
    now: Instant,
) {
    let tag = &spec.tag;
    let who = match pid_of(&before.state) {
        Some(pid) => format!("{tag} (pid {pid})"),
        None => tag.clone(),
    };
    let pid = pid_of(&before.state).unwrap_or_default();
    let exited = match event {
        Event::Exited { exit } => Some(*exit),
        _ => None,
    };
    // What was decided, or how a process being stopped ended.
    let what = match (recorded, exited) {
        (Some(reason), _) => reason.to_string(),
        (None, Some(exit)) => format!("stopped ({exit})"),
        (None, None) => return,
    };
    let next = match &after.state {
        State::BackingOff { until } => format!(
            "restarting in {} (at {}), failure {} of {}",
            Seconds(until.saturating_duration_since(now)),
            clock(*until, now),
            after.failures,
            spec.policy.max_failures
        ),
        State::Failed { reason, retry_at } => {
            tracing::error!(
                member = %tag,
                pid,
                "{who} {what}; FAILED ({reason}); next try in {} (at {})",
                Seconds(retry_at.saturating_duration_since(now)),
                clock(*retry_at, now)
            );
            return;
        }
        State::Unhealthy { .. } => "stopping it, to restart".to_owned(),
        State::Recycling { .. } | State::Restarting { .. } => {
            "stopping it, to start again".to_owned()
        }
        State::Stopping { .. } => "stopping it".to_owned(),
        State::Stopped
            if exited.is_some()
                && matches!(
                    before.state,
                    State::Recycling { .. } | State::Restarting { .. }
                ) =>
        {
            "starting it again".to_owned()
        }
        State::Stopped if exited.is_some() => String::new(),
        State::Stopped => "it was not running".to_owned(),
        State::Starting { .. } | State::Ready { .. } => return,
    };
    let line = if next.is_empty() {
        format!("{who} {what}")
    } else {
        format!("{who} {what}; {next}")
    };
    if recorded.is_none_or(Reason::is_planned) {
        tracing::info!(member = %tag, pid, "{line}");
    } else {
        tracing::warn!(member = %tag, pid, "{line}");
    }
}

/// The wall-clock time (UTC, as the log's timestamps) of `at`, an instant near `now`:
/// `10:31:07`.
fn clock(at: Instant, now: Instant) -> String {
    let wall = SystemTime::now() + at.saturating_duration_since(now);
    let (_, time) = utc(wall);
    time
}
