//! Runs one member: the state machine of [`member`](super::member) driven by what happens to
//! the real process. Event-driven: the process's exit is seen at once (`Child::wait`), health
//! is asked on a timer (every `readiness_poll` while starting, every heartbeat while ready),
//! and the other timers come from the deadlines the state carries.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::process::Child;
use tokio::sync::{mpsc, watch};

use super::member::{Action, Event, Member, Policy, State, transition};
use super::spawn::{MemberCommand, Spawner, signal_group};
use crate::client::Target;
use crate::registry::ServiceLocation;
use crate::registry::etcd::{EtcdError, EtcdRegistrar};
use crate::registry::memory::MemoryRegistry;
use crate::server::health::ServingStatus;

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
    /// Drained by the operator: kept out of the registry while it runs on, until undrained.
    pub drained: bool,
}

/// How many past states a status keeps.
pub const HISTORY: usize = 32;

/// Orders to a runner.
#[derive(Debug, Clone, PartialEq)]
pub enum Order {
    Recycle,
    /// Stop for good: the runner ends.
    Stop,
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
        let (status_tx, status) = watch::channel(MemberStatus {
            tag: spec.tag.clone(),
            state: State::Stopped,
            pid: None,
            started: None,
            failures: 0,
            starts: 0,
            last_health: None,
            history: vec![member_state_name(&State::Stopped)],
            drained: false,
        });
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
                tracing::debug!(member = %spec.tag, from = ?member.state, to = ?next.state, ?event, "member state");
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
                    pending.push(follow_up);
                    if matches!(action, Action::Spawn) {
                        next_health = Instant::now() + READINESS_POLL;
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

        let wake = next_wake(&member.state, next_health);
        tokio::select! {
            exited = async { child.as_mut().expect("checked").wait().await }, if child.is_some() => {
                child = None;
                status.send_modify(|s| {
                    s.pid = None;
                    s.started = None;
                });
                let code = exited.ok().and_then(|s| s.code());
                tracing::info!(member = %spec.tag, ?code, "member exited");
                pending.push(Event::Exited { code });
            }
            order = orders.recv() => match order {
                Some(Order::Recycle) => pending.push(Event::Recycle),
                Some(Order::Stop) => {
                    halted = false;
                    pending.push(Event::Stop);
                }
                Some(Order::Halt) => {
                    tracing::info!(member = %spec.tag, "stopped by the operator; it stays stopped until started");
                    halted = true;
                    pending.push(Event::Stop);
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
                None => pending.push(Event::Stop),
            },
            () = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if now >= next_health && matches!(member.state, State::Starting { .. } | State::Ready { .. }) {
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
fn next_wake(state: &State, next_health: Instant) -> Instant {
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
        matches!(state, State::Starting { .. } | State::Ready { .. }).then_some(next_health);
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
    let channel = target.connect().await.map_err(|e| e.to_string())?;
    let all = if services.is_empty() {
        vec![String::new()]
    } else {
        services.to_vec()
    };
    for service in &all {
        let status = target
            .check_health(channel.clone(), service)
            .await
            .map_err(|e| e.to_string())?;
        if status != ServingStatus::Serving {
            return Ok(status);
        }
    }
    Ok(ServingStatus::Serving)
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
    let pid = child.as_ref().and_then(Child::id);
    match action {
        Action::Spawn => match spawner.spawn(&spec.command, &spec.tag, spec.die_with_supervisor) {
            Ok(spawned) => {
                let pid = spawned.id().unwrap_or_default();
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
                tracing::error!(member = %spec.tag, %error, "cannot start member");
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
        Action::ReportFailed { reason } => {
            tracing::error!(member = %spec.tag, %reason, "member FAILED; it will be tried again later");
            None
        }
    }
}
