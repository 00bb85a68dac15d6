//! Supervisor pieces that need the real binary: members started through the `exec-member`
//! shim die with a parent killed by SIGKILL (and, as a control, members started without it
//! outlive it).

use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use quaestor_test_support::{quaestor_bin, spawn_reading, wait_for, within};

const TIMEOUT: Duration = Duration::from_secs(30);

fn bin() -> PathBuf {
    quaestor_bin(env!("CARGO_BIN_EXE_quaestor"))
}

fn running(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}

/// A parent shell that starts `member` in the background, prints its pid, is then killed
/// with SIGKILL; returns whether the member is still running afterwards.
fn member_outlives_killed_parent(member: &str) -> bool {
    let script = format!("{member} & echo $!; wait");
    let (mut parent, lines) = spawn_reading(PathBuf::from("/bin/sh").as_path(), &["-c", &script]);
    let pid: i32 = lines.expect("the member's pid", TIMEOUT, |line| line.trim().parse().ok());
    wait_for("the member to run", TIMEOUT, || running(pid).then_some(()));
    // Kill only the parent shell, not its process group.
    kill(Pid::from_raw(parent.pid() as i32), Signal::SIGKILL).expect("kill the parent");
    parent.wait_exit(TIMEOUT);
    let outlived = within(Duration::from_secs(5), || (!running(pid)).then_some(())).is_none();
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
