//! Why members stop and restart, as `quaestor cluster` logs it and `status` shows it: a
//! member that exits with code 3, one killed by SIGKILL, one that turns NOT_SERVING and one
//! that never serves (startup timeout), each with its reason, its crash or health count and
//! its next retry.

use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use quaestor_core::supervisor::control::MemberReport;
use quaestor_test_support::{process_running, wait_for};

mod common;
use common::{TIMEOUT, bin, quaestor, start_logged, try_status};

/// Waits until member `tag` satisfies `done`; returns its report.
fn member_when(
    socket: &Path,
    tag: &str,
    what: &str,
    done: impl Fn(&MemberReport) -> bool,
) -> MemberReport {
    wait_for(&format!("{tag} {what}"), TIMEOUT, || {
        try_status(socket)?
            .members
            .into_iter()
            .find(|m| m.member == tag && done(m))
    })
}

/// An agent `name` (also its service) running `executable ARGS`, backing off 30 s after a
/// failure (so that the backoff can be seen), never restarted twice during the test.
fn agent(name: &str, executable: &Path, args: &str, extra: &str) -> String {
    format!(
        "  - agentType: {name}\n    executablePath: {exe}\n    commandLineArguments: {args}\n    \
         clusterShutdownAction: Kill\n    hostName: 127.0.0.1\n    serviceNames: [ {name} ]\n    \
         restartBackoff:\n      initialSeconds: 30\n{extra}",
        exe = executable.display(),
    )
}

fn worker(name: &str, extra_args: &str) -> String {
    agent(
        name,
        &bin(),
        &format!("worker --host {{HostName}} --port {{Port}} --service {name} {extra_args}"),
        "",
    )
}

#[test]
fn every_stop_is_logged_and_shown_with_its_reason() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("quaestor.config.yml");
    let socket = dir.path().join("control.sock");
    let sleep = which("sleep");
    let text = format!(
        "clusterConfig:\n  name: reasons\n  heartBeatIntervalSeconds: 1\n  memberResponseTimeOutSeconds: 2\n  \
         memberMaxShutdownTimeSeconds: 5\nagents:\n{}{}{}{}{}",
        worker("Crasher", "--exit-after 1s --exit-code 3"),
        worker("Frozen", ""),
        worker("Victim", ""),
        worker("Sick", "--unhealthy-after 2s"),
        agent("Slow", &sleep, "600", "    startupWaitSeconds: 2\n"),
    );
    std::fs::write(&config, text).expect("write");
    let (mut cluster, log) = start_logged(&config, &socket);

    // SIGKILL to the victim's process (not its group) once it serves.
    let victim = member_when(&socket, "Victim[0]", "Ready", |m| m.state == "Ready");
    let victim_pid = victim.pid.expect("ready: a pid");
    assert_eq!(victim.last_reason, None, "no stop yet: {victim:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim_pid as i32),
        Signal::SIGKILL,
    )
    .expect("kill");
    // SIGSTOP to another's process group (the pid `status` shows is the group's id): it stops
    // answering its health checks.
    let frozen = member_when(&socket, "Frozen[0]", "Ready", |m| m.state == "Ready");
    let frozen_pid = frozen.pid.expect("ready: a pid");
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(frozen_pid as i32),
        Signal::SIGSTOP,
    )
    .expect("stop");

    // The log: one line per stop, with the member, its pid and the reason in words, and the
    // next start when backing off.
    let wanted: Vec<(&str, String)> = vec![
        (
            " WARN ",
            "exited with code 3; restarting in 3".to_owned(), // 30 s and up to 20 % jitter
        ),
        (
            " WARN ",
            format!("Victim[0] (pid {victim_pid}) killed by SIGKILL; restarting in 3"),
        ),
        (
            " WARN ",
            "heartbeat failed 1/1 (NOT_SERVING); stopping it, to restart".to_owned(),
        ),
        (
            " WARN ",
            "startup timeout 2 s; stopping it, to restart".to_owned(),
        ),
        (
            " WARN ",
            format!(
                "Frozen[0] (pid {frozen_pid}) heartbeat failed 1/1 (no answer in 2 s); stopping it, to restart"
            ),
        ),
    ];
    let mut seen: Vec<Option<String>> = vec![None; wanted.len()];
    let mut all_lines = Vec::new();
    let lines = log.expect("the five reasons", TIMEOUT, |line| {
        all_lines.push(line.to_owned());
        for (i, (level, text)) in wanted.iter().enumerate() {
            if seen[i].is_none() && line.contains(level) && line.contains(text.as_str()) {
                seen[i] = Some(line.to_owned());
            }
        }
        seen.iter().all(Option::is_some).then(|| seen.clone())
    });
    let lines: Vec<String> = lines.into_iter().flatten().collect();
    assert!(lines[0].contains("Crasher[0] (pid "), "{}", lines[0]);
    assert!(lines[2].contains("Sick[0] (pid "), "{}", lines[2]);
    assert!(lines[3].contains("Slow[0] (pid "), "{}", lines[3]);
    for line in &lines[..2] {
        assert!(
            line.contains("s (at ") && line.contains("), failure 1 of 25"),
            "the next retry, as a time of day: {line}"
        );
    }
    assert!(
        !all_lines
            .iter()
            .any(|l| l.contains("code=Some") || l.contains("code=None") || l.contains("Exited {")),
        "no Debug dumps: {all_lines:#?}"
    );

    // The status says the same.
    let backing_off = |m: &MemberReport| m.state == "BackingOff";
    let crasher = member_when(&socket, "Crasher[0]", "backing off", backing_off);
    assert_eq!(crasher.last_exit_code, Some(3), "{crasher:?}");
    assert_eq!(crasher.last_exit_signal, None);
    assert_eq!(crasher.last_exit.as_deref(), Some("exited with code 3"));
    assert_eq!(crasher.last_reason.as_deref(), Some("exited with code 3"));
    assert_eq!(crasher.last_reason_kind.as_deref(), Some("crash"));
    assert_eq!((crasher.crashes, crasher.health_restarts), (1, 0));
    assert!(
        crasher
            .next_retry_seconds
            .is_some_and(|s| s > 0.0 && s <= 36.0),
        "{crasher:?}"
    );
    assert!(
        crasher
            .next_retry_at
            .as_deref()
            .is_some_and(|at| at.len() == 20 && at.ends_with('Z')),
        "RFC 3339: {crasher:?}"
    );

    let victim = member_when(&socket, "Victim[0]", "backing off", backing_off);
    assert_eq!(
        victim.last_exit_signal.as_deref(),
        Some("SIGKILL"),
        "{victim:?}"
    );
    assert_eq!(victim.last_exit_code, None);
    assert_eq!(victim.last_reason.as_deref(), Some("killed by SIGKILL"));
    assert_eq!((victim.crashes, victim.health_restarts), (1, 0));
    assert!(victim.next_retry_seconds.is_some() && victim.next_retry_at.is_some());
    assert!(victim.last_exit_at.is_some());
    assert!(!process_running(victim_pid as i32));

    let sick = member_when(&socket, "Sick[0]", "backing off", backing_off);
    assert_eq!(
        sick.last_reason.as_deref(),
        Some("heartbeat failed 1/1 (NOT_SERVING)"),
        "{sick:?}"
    );
    assert_eq!(sick.last_reason_kind.as_deref(), Some("health"));
    assert_eq!((sick.crashes, sick.health_restarts), (0, 1));
    assert!(sick.next_retry_seconds.is_some());

    // Frozen: stopped, it ignores its stop signal; SIGKILL after the shutdown wait.
    let frozen = member_when(&socket, "Frozen[0]", "backing off", backing_off);
    assert_eq!(
        frozen.last_reason.as_deref(),
        Some("heartbeat failed 1/1 (no answer in 2 s)"),
        "{frozen:?}"
    );
    assert_eq!(frozen.last_exit_signal.as_deref(), Some("SIGKILL"));
    assert_eq!((frozen.crashes, frozen.health_restarts), (0, 1));

    let slow = member_when(&socket, "Slow[0]", "backing off", backing_off);
    assert_eq!(
        slow.last_reason.as_deref(),
        Some("startup timeout 2 s"),
        "{slow:?}"
    );
    assert_eq!((slow.crashes, slow.health_restarts), (0, 1));
    assert_eq!(
        slow.last_exit_signal.as_deref(),
        Some("SIGTERM"),
        "stopped by its stop signal"
    );
    assert_eq!(slow.restarts, 0, "not started again yet");

    // The table: the new columns, and the reason at the end of the line.
    let out = quaestor(&[
        "cluster",
        "status",
        "--control",
        socket.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let header: Vec<&str> = out
        .stdout
        .lines()
        .nth(1)
        .expect("header")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "MEMBER",
            "STATE",
            "PID",
            "PORT",
            "RESTARTS",
            "HEALTH",
            "UPTIME",
            "CRASH",
            "UNHEALTHY",
            "RECYCLE",
            "CONFIG",
            "OPERATOR",
            "LAST-EXIT",
            "NEXT-RETRY",
            "LAST-REASON"
        ]
    );
    let row = |tag: &str| -> Vec<String> {
        out.stdout
            .lines()
            .find(|l| l.starts_with(tag))
            .unwrap_or_else(|| panic!("{tag} in {}", out.stdout))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let victim_row = row("Victim[0]");
    assert_eq!(victim_row[1], "BackingOff", "{victim_row:?}");
    assert_eq!(victim_row[7], "1", "one crash: {victim_row:?}");
    assert_eq!(victim_row[12], "SIGKILL");
    assert!(victim_row[13].contains("(+"), "next retry: {victim_row:?}");
    assert_eq!(victim_row[14..].join(" "), "killed by SIGKILL");
    let crasher_row = row("Crasher[0]");
    assert_eq!(crasher_row[12], "code=3", "{crasher_row:?}");
    let sick_row = row("Sick[0]");
    assert_eq!(sick_row[8], "1", "one health restart: {sick_row:?}");

    cluster.signal(Signal::SIGTERM);
    assert_eq!(cluster.wait_exit(TIMEOUT).code(), Some(0));
}

/// A member that fails `memberMaxStartupRetries` times in a row is Failed: logged at ERROR
/// with its slow retry (5 minutes), and shown with its next retry.
#[test]
fn a_failed_member_is_logged_at_error_with_its_slow_retry() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("quaestor.config.yml");
    let socket = dir.path().join("control.sock");
    let text = format!(
        "clusterConfig:\n  heartBeatIntervalSeconds: 1\n  memberResponseTimeOutSeconds: 2\n  \
         memberMaxShutdownTimeSeconds: 5\n  memberMaxStartupRetries: 1\nagents:\n{}",
        worker("Crasher", "--exit-after 0.5s --exit-code 3"),
    );
    std::fs::write(&config, text).expect("write");
    let (mut cluster, log) = start_logged(&config, &socket);
    let line = log.expect("the FAILED line", TIMEOUT, |line| {
        line.contains("FAILED").then(|| line.to_owned())
    });
    assert!(line.contains(" ERROR "), "{line}");
    assert!(
        line.contains(
            "Crasher[0] (pid ") && line.contains(") exited with code 3; FAILED (1 failure in a row, the last: exited with code 3); next try in 300 s (at "
        ),
        "{line}"
    );
    let failed = member_when(&socket, "Crasher[0]", "Failed", |m| m.state == "Failed");
    assert_eq!(
        failed.last_reason.as_deref(),
        Some("exited with code 3"),
        "{failed:?}"
    );
    assert_eq!(failed.crashes, 1);
    assert!(
        failed
            .next_retry_seconds
            .is_some_and(|s| s > 200.0 && s <= 300.0),
        "{failed:?}"
    );
    assert!(failed.next_retry_at.is_some());
    cluster.signal(Signal::SIGTERM);
    assert_eq!(cluster.wait_exit(TIMEOUT).code(), Some(0));
}

/// The absolute path of `program` on PATH.
fn which(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} on PATH"))
}
