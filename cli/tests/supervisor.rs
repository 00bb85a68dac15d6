//! Supervisor pieces that need the real binary: members started through the `exec-member`
//! shim die with a parent killed by SIGKILL (and, as a control, members started without it
//! outlive it).

use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use quaestor_test_support::{process_running, quaestor_bin, spawn_reading, wait_for, within};

const TIMEOUT: Duration = Duration::from_secs(30);

fn bin() -> PathBuf {
    quaestor_bin(env!("CARGO_BIN_EXE_quaestor"))
}

/// A parent shell that starts `member` in the background, prints its pid, is then killed
/// with SIGKILL; returns whether the member is still running afterwards.
fn member_outlives_killed_parent(member: &str) -> bool {
    let script = format!("{member} & echo $!; wait");
    let (mut parent, lines) = spawn_reading(PathBuf::from("/bin/sh").as_path(), &["-c", &script]);
    let pid: i32 = lines.expect("the member's pid", TIMEOUT, |line| line.trim().parse().ok());
    wait_for("the member to run", TIMEOUT, || {
        process_running(pid).then_some(())
    });
    // Kill only the parent shell, not its process group.
    kill(Pid::from_raw(parent.pid() as i32), Signal::SIGKILL).expect("kill the parent");
    parent.wait_exit(TIMEOUT);
    let outlived = within(Duration::from_secs(5), || {
        (!process_running(pid)).then_some(())
    })
    .is_none();
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    outlived
}

#[test]
fn members_die_with_a_killed_supervisor_through_the_shim() {
    let shim = bin();
    let through_shim = format!("{} exec-member --parent $$ -- sleep 600", shim.display());
    assert!(
        !member_outlives_killed_parent(&through_shim),
        "the shim's member must die with its parent"
    );
    assert!(
        member_outlives_killed_parent("sleep 600"),
        "control: a plain child outlives its parent"
    );
}

#[test]
fn the_shim_reports_a_program_it_cannot_start() {
    let out = quaestor_test_support::run(
        &bin(),
        &[
            "exec-member",
            "--parent",
            &std::process::id().to_string(),
            "--",
            "/nonexistent/worker",
        ],
        TIMEOUT,
    );
    assert_eq!(out.code, Some(127), "{out:?}");
    assert!(out.stderr.contains("/nonexistent/worker"), "{out:?}");
}

mod runner {
    use std::sync::Arc;
    use std::time::Duration;

    use nix::sys::signal::Signal;
    use quaestor_core::registry::memory::MemoryRegistry;
    use quaestor_core::registry::{RegistryReader, ServiceLocation};
    use quaestor_core::supervisor::member::{Policy, State};
    use quaestor_core::supervisor::runner::{MemberSpec, MemberStatus, Runner};
    use quaestor_core::supervisor::spawn::{MemberCommand, Spawner, log_lines};
    use quaestor_test_support::wait_for_async;
    use tokio::sync::watch;

    use super::bin;

    const TIMEOUT: Duration = Duration::from_secs(30);

    fn policy() -> Policy {
        Policy {
            startup_wait: Duration::from_secs(10),
            max_failures: 25,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            reset_after: Duration::from_secs(60),
            unhealthy_after: 1,
            shutdown_timeout: Duration::from_secs(5),
            failed_retry: Duration::from_secs(300),
        }
    }

    /// A `quaestor worker` member on a free port with `extra` arguments.
    fn worker_spec(extra: &[&str]) -> (MemberSpec, u16) {
        let port = quaestor_test_support::free_port();
        let mut args = vec!["worker".to_owned(), "--port".to_owned(), port.to_string()];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let spec = MemberSpec {
            tag: "Worker[0]".into(),
            command: MemberCommand {
                program: bin(),
                args,
                env: vec![],
                working_dir: None,
            },
            health_address: format!("127.0.0.1:{port}"),
            services: vec!["Worker".into()],
            locations: vec![
                ServiceLocation::new("", "Worker", "127.0.0.1", port).expect("location"),
            ],
            policy: policy(),
            heartbeat: Duration::from_millis(200),
            response_timeout: Duration::from_secs(2),
            stop_signal: Signal::SIGTERM,
            die_with_supervisor: true,
            check_health: true,
        };
        (spec, port)
    }

    fn spawner() -> Spawner {
        Spawner {
            shim: Some(bin()),
            sink: log_lines(),
        }
    }

    async fn until(
        status: &mut watch::Receiver<MemberStatus>,
        what: &str,
        ready: impl Fn(&MemberStatus) -> bool,
    ) -> MemberStatus {
        wait_for_async(what, TIMEOUT, || {
            let current = status.borrow_and_update().clone();
            let done = ready(&current).then_some(current);
            async move { done }
        })
        .await
    }

    fn is_ready(s: &MemberStatus) -> bool {
        matches!(s.state, State::Ready { .. })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn starts_with_readiness_and_registers_only_while_serving() {
        let registry = MemoryRegistry::new();
        let (spec, port) = worker_spec(&[]);
        let runner = Runner::start(spec, spawner(), Arc::new(registry.clone()));
        let mut status = runner.status.clone();
        until(&mut status, "Ready", is_ready).await;
        let registered: Vec<u16> = registry
            .current()
            .locations
            .values()
            .map(|l| l.port)
            .collect();
        assert_eq!(registered, [port], "registered once SERVING");
        runner.stop().await;
        assert!(
            registry.current().locations.is_empty(),
            "deregistered by the stop"
        );
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "the worker is gone"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crash_is_restarted_after_backoff() {
        let registry = MemoryRegistry::new();
        let (spec, _) = worker_spec(&["--exit-after", "1s", "--exit-code", "3"]);
        let runner = Runner::start(spec, spawner(), Arc::new(registry.clone()));
        let mut status = runner.status.clone();
        until(&mut status, "Ready", is_ready).await;
        let crashed_at = std::time::Instant::now();
        until(&mut status, "a restart", |s| s.starts >= 2).await;
        let restarted = until(&mut status, "Ready again", |s| is_ready(s) && s.starts >= 2).await;
        eprintln!("crash to SERVING again: {:?}", crashed_at.elapsed());
        assert!(
            restarted.failures >= 1,
            "the crash counts as a failure: {restarted:?}"
        );
        runner.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn not_serving_is_restarted() {
        let registry = MemoryRegistry::new();
        // Every change of the registry, as counts of registered locations.
        let mut views = registry.subscribe();
        let counts = tokio::spawn(async move {
            let mut counts = Vec::new();
            while views.changed().await.is_ok() {
                counts.push(views.borrow_and_update().locations.len());
            }
            counts
        });
        let (spec, _) = worker_spec(&["--unhealthy-after", "1s"]);
        let runner = Runner::start(spec, spawner(), Arc::new(registry.clone()));
        let mut status = runner.status.clone();
        let again = until(&mut status, "Ready again", |s| is_ready(s) && s.starts >= 2).await;
        let unhealthy = again
            .history
            .iter()
            .position(|s| *s == "Unhealthy")
            .expect("went through Unhealthy");
        assert_eq!(again.history[unhealthy - 1], "Ready", "{:?}", again.history);
        runner.stop().await;
        drop(registry);
        let counts = counts.await.expect("recorder");
        assert_eq!(
            counts,
            [1, 0, 1, 0],
            "registered, withdrawn when unhealthy, again when serving, withdrawn at the stop"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn too_many_failed_starts_make_it_failed() {
        let (mut spec, _) = worker_spec(&[]);
        spec.command = MemberCommand {
            program: "/bin/false".into(),
            args: vec![],
            env: vec![],
            working_dir: None,
        };
        spec.policy.max_failures = 3;
        let runner = Runner::start(spec, spawner(), Arc::new(MemoryRegistry::new()));
        let mut status = runner.status.clone();
        let failed = until(&mut status, "Failed", |s| {
            matches!(s.state, State::Failed { .. })
        })
        .await;
        assert_eq!((failed.starts, failed.failures), (3, 3));
        runner.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_that_ignores_sigterm_is_killed_with_its_children() {
        let (mut spec, _) = worker_spec(&[]);
        // Ignores SIGTERM, and has a child of its own; it never reports SERVING.
        spec.command = MemberCommand {
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                "trap '' TERM; sleep 600 & echo $! > child.pid; wait".into(),
            ],
            env: vec![],
            working_dir: Some(tempfile::tempdir().expect("dir").keep()),
        };
        let dir = spec.command.working_dir.clone().expect("dir");
        spec.policy.shutdown_timeout = Duration::from_millis(500);
        let runner = Runner::start(spec, spawner(), Arc::new(MemoryRegistry::new()));
        let mut status = runner.status.clone();
        until(&mut status, "Starting", |s| {
            matches!(s.state, State::Starting { .. })
        })
        .await;
        let child_pid: i32 = wait_for_async("the member's child", TIMEOUT, || async {
            std::fs::read_to_string(dir.join("child.pid"))
                .ok()?
                .trim()
                .parse()
                .ok()
        })
        .await;
        tokio::time::timeout(TIMEOUT, runner.stop())
            .await
            .expect("the stop ends with SIGKILL");
        wait_for_async("the member's child to die", TIMEOUT, || async {
            (!quaestor_test_support::process_running(child_pid)).then_some(())
        })
        .await;
        let _ = std::fs::remove_dir_all(dir);
    }
}

mod recycling {
    use std::sync::Arc;
    use std::time::Duration;

    use quaestor_core::config::QuaestorConfig;
    use quaestor_core::proto::example::WorkRequest;
    use quaestor_core::proto::example::work_client::WorkClient;
    use quaestor_core::registry::memory::MemoryRegistry;
    use quaestor_core::supervisor::cluster::{Cluster, ClusterOptions};
    use quaestor_core::supervisor::runner::MemberStatus;
    use quaestor_core::supervisor::spawn::{Spawner, log_lines};
    use quaestor_test_support::{wait_for_async, within};

    use super::bin;

    const TIMEOUT: Duration = Duration::from_secs(60);

    /// `count` workers on free ports, recycled every `hours`.
    fn config(count: usize, hours: f64) -> (QuaestorConfig, Vec<u16>) {
        let ports = quaestor_test_support::free_ports(count);
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        let text = format!(
            "clusterConfig:\n  heartBeatIntervalSeconds: 1\n  memberResponseTimeOutSeconds: 2\n  memberMaxShutdownTimeSeconds: 5\n\
             agents:\n  - agentType: Worker\n    executablePath: {}\n    commandLineArguments: worker --port {{Port}}\n    \
             processCount: {count}\n    clusterShutdownAction: Kill\n    hostName: 127.0.0.1\n    ports: [ {} ]\n    \
             serviceNames: [ Worker ]\n    recyclingIntervalHours: {hours}\n",
            bin().display(),
            list.join(", ")
        );
        (
            QuaestorConfig::parse(&text, "test.yml").expect("valid config"),
            ports,
        )
    }

    async fn start(config: &QuaestorConfig) -> Cluster {
        let options = ClusterOptions {
            working_dir: std::env::temp_dir(),
            quaestor_bin: Some(bin()),
        };
        let spawner = Spawner {
            shim: Some(bin()),
            sink: log_lines(),
        };
        Cluster::start(config, &options, Arc::new(MemoryRegistry::new()), spawner)
            .await
            .expect("cluster")
    }

    fn starts(cluster: &Cluster) -> Vec<u32> {
        cluster
            .statuses()
            .iter()
            .map(|s: &MemberStatus| s.starts)
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_members_are_recycled_one_at_a_time() {
        // About every 1.5 s.
        let (config, _) = config(2, 0.0004);
        let cluster = start(&config).await;
        // Every state change of both members, in one ordered log.
        let log = Arc::new(std::sync::Mutex::new(Vec::<(usize, &'static str)>::new()));
        for (index, mut status) in cluster.status_receivers().into_iter().enumerate() {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut last = "";
                while status.changed().await.is_ok() {
                    let state = *status.borrow_and_update().history.last().expect("a state");
                    if state != last {
                        log.lock().expect("log").push((index, state));
                        last = state;
                    }
                }
            });
        }
        wait_for_async("both members recycled", TIMEOUT, || {
            let done = starts(&cluster).iter().all(|&n| n >= 2);
            async move { done.then_some(()) }
        })
        .await;
        for status in cluster.statuses() {
            assert!(status.history.contains(&"Recycling"), "{status:?}");
        }
        cluster.stop().await;
        // Once both served, never both out of service at once (until the cluster's own stop).
        let log = log.lock().expect("log").clone();
        let before_stop = log.iter().take_while(|(_, state)| *state != "Stopping");
        let mut serving = [false, false];
        let mut both_served = false;
        for (index, state) in before_stop {
            serving[*index] = *state == "Ready";
            both_served |= serving == [true, true];
            assert!(
                !both_served || serving.iter().any(|s| *s),
                "both members out of service at once: {log:?}"
            );
        }
        assert!(both_served, "{log:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_member_is_recycled_only_once_idle() {
        let (config, ports) = config(1, 0.0003);
        let cluster = start(&config).await;
        wait_for_async("the member to serve", TIMEOUT, || {
            let ready = cluster.statuses()[0].history.contains(&"Ready");
            async move { ready.then_some(()) }
        })
        .await;
        let mut work = WorkClient::connect(format!("http://127.0.0.1:{}", ports[0]))
            .await
            .expect("connect");
        let call = tokio::spawn(async move {
            work.do_work(WorkRequest {
                milliseconds: 600_000,
                service_name: String::new(),
            })
            .await
        });
        // Busy for several intervals (about 1.1 s each): not recycled.
        let recycled_while_busy = within(Duration::from_secs(4), || {
            (starts(&cluster)[0] >= 2).then_some(())
        });
        assert!(
            recycled_while_busy.is_none(),
            "a busy member must not be recycled"
        );
        call.abort();
        wait_for_async("the recycle once idle", TIMEOUT, || {
            let done = starts(&cluster)[0] >= 2;
            async move { done.then_some(()) }
        })
        .await;
        cluster.stop().await;
    }
}

/// quaestor's own agent keys reach the member: `workingDirectory` is where its relative
/// executable is found and where it runs, `stopSignal` is what a stop sends.
mod agent_settings {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;
    use std::time::Duration;

    use quaestor_core::config::QuaestorConfig;
    use quaestor_core::registry::memory::MemoryRegistry;
    use quaestor_core::supervisor::cluster::{Cluster, ClusterOptions};
    use quaestor_core::supervisor::member::State;
    use quaestor_core::supervisor::spawn::{Spawner, log_lines};
    use quaestor_test_support::wait_for_async;

    use super::bin;

    const TIMEOUT: Duration = Duration::from_secs(30);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn working_directory_and_stop_signal_apply() {
        let dir = tempfile::tempdir().expect("dir");
        let sub = dir.path().join("run/here");
        std::fs::create_dir_all(&sub).expect("mkdir");
        let script = sub.join("stopper.sh");
        // Says which signal stopped it, in its working directory; never serves.
        std::fs::write(
            &script,
            "#!/bin/sh\ntrap 'echo INT > stopped-by; exit 0' INT\n\
             trap 'echo TERM > stopped-by; exit 0' TERM\n\
             echo started > started\nwhile :; do sleep 0.05; done\n",
        )
        .expect("write");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let text = "clusterConfig:\n  memberMaxShutdownTimeSeconds: 600\nagents:\n\
                    - agentType: Stopper\n  executablePath: ./stopper.sh\n  workingDirectory: run/here\n  \
                    stopSignal: int\n  clusterShutdownAction: Kill\n  startupWaitSeconds: 600\n";
        let config = QuaestorConfig::parse(text, "test.yml").expect("config");
        let options = ClusterOptions {
            working_dir: dir.path().to_owned(),
            quaestor_bin: Some(bin()),
        };
        let spawner = Spawner {
            shim: Some(bin()),
            sink: log_lines(),
        };
        let cluster = Cluster::start(&config, &options, Arc::new(MemoryRegistry::new()), spawner)
            .await
            .expect("cluster");
        wait_for_async(
            "the member to start in its working directory",
            TIMEOUT,
            || async { sub.join("started").exists().then_some(()) },
        )
        .await;
        assert!(matches!(
            cluster.statuses()[0].state,
            State::Starting { .. }
        ));
        // A SIGKILL would come only after 600 s: the stop ends because SIGINT was sent.
        tokio::time::timeout(TIMEOUT, cluster.stop())
            .await
            .expect("stopped by its stop signal");
        assert_eq!(
            std::fs::read_to_string(sub.join("stopped-by")).expect("trap ran"),
            "INT\n"
        );
    }
}
