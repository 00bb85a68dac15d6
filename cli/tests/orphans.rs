//! Nothing a member starts outlives a `quaestor cluster` killed with SIGKILL: not the real
//! worker a wrapper script starts, not a grandchild that double-forked into a session of its
//! own (`setsid`). A member of an agent with `clusterShutdownAction: None` does outlive it.
//! And the guard members run under reports what the member did (exit code, signal).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use quaestor_test_support::{
    ChildProcess, free_ports, process_running, quaestor_bin, run_command, wait_for,
};

const TIMEOUT: Duration = Duration::from_secs(30);

fn bin() -> PathBuf {
    quaestor_bin(env!("CARGO_BIN_EXE_quaestor"))
}

/// Whether `pid` is gone for good: no process, not even a zombie waiting to be reaped.
fn gone(pid: i32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// Pids recorded by the test's processes: whatever is still there at the end is killed.
struct Recorded(Vec<(&'static str, i32)>);

impl Drop for Recorded {
    fn drop(&mut self) {
        for (_, pid) in &self.0 {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
    }
}

fn script(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Waits (with a deadline) for `dir/name` to hold a pid of a running process.
fn recorded_pid(dir: &Path, name: &'static str) -> (&'static str, i32) {
    let pid = wait_for(&format!("{name} to be written"), TIMEOUT, || {
        let pid: i32 = std::fs::read_to_string(dir.join(name))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        process_running(pid).then_some(pid)
    });
    (name, pid)
}

#[test]
fn no_descendant_outlives_a_killed_cluster_unless_its_action_is_none() {
    let dir = tempfile::tempdir().expect("dir");
    let dir = dir.path();
    // (a) A wrapper script that starts the real worker and waits for it.
    script(
        dir,
        "wrapper.sh",
        "#!/bin/bash\n\"$1\" worker --host 127.0.0.1 --port \"$2\" &\n\
         echo $! > worker.pid\necho $$ > wrapper.pid\nwait\n",
    );
    // (b) A member that double-forks a grandchild into a session of its own, then runs on;
    // the grandchild's parent (a subshell) exits at once, orphaning it.
    script(
        dir,
        "doublefork.sh",
        "#!/bin/sh\n(setsid sh -c 'echo $$ > daemon.pid; exec sleep 1000' &)\n\
         echo $$ > doublefork.pid\nexec sleep 1000\n",
    );
    // (c) clusterShutdownAction None: outlives the cluster.
    script(
        dir,
        "survivor.sh",
        "#!/bin/sh\necho $$ > survivor.pid\nexec sleep 1000\n",
    );
    let [port] = free_ports(1)[..] else {
        unreachable!()
    };
    let config = format!(
        "clusterConfig:\n  heartBeatIntervalSeconds: 1\n  memberResponseTimeOutSeconds: 2\n  memberMaxShutdownTimeSeconds: 5\n\
         agents:\n\
         \x20 - agentType: Wrapper\n    executablePath: ./wrapper.sh\n    commandLineArguments: {bin} {{Port}}\n    \
         hostName: 127.0.0.1\n    ports: [ {port} ]\n    clusterShutdownAction: Kill\n    startupWaitSeconds: 600\n\
         \x20 - agentType: Daemon\n    executablePath: ./doublefork.sh\n    hostName: 127.0.0.1\n    \
         clusterShutdownAction: Kill\n    startupWaitSeconds: 600\n\
         \x20 - agentType: Survivor\n    executablePath: ./survivor.sh\n    hostName: 127.0.0.1\n    \
         clusterShutdownAction: None\n    startupWaitSeconds: 600\n",
        bin = bin().display()
    );
    let path = dir.join("quaestor.config.yml");
    std::fs::write(&path, config).expect("write config");
    let mut command = Command::new(bin());
    command
        .args(["cluster", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut cluster = ChildProcess::spawn("quaestor cluster", command);

    let mut recorded = Recorded(Vec::new());
    for name in [
        "wrapper.pid",
        "worker.pid",
        "doublefork.pid",
        "daemon.pid",
        "survivor.pid",
    ] {
        let pid = recorded_pid(dir, name);
        recorded.0.push(pid);
    }
    // SIGKILL to the supervisor alone, not to its group.
    kill(Pid::from_raw(cluster.pid() as i32), Signal::SIGKILL).expect("kill -9 the cluster");
    cluster.wait_exit(TIMEOUT);

    let (survivor, killed): (Vec<_>, Vec<_>) = recorded
        .0
        .iter()
        .copied()
        .partition(|(name, _)| *name == "survivor.pid");
    for (name, pid) in &killed {
        wait_for(
            &format!("{name} ({pid}) to be gone with the cluster"),
            TIMEOUT,
            || gone(*pid).then_some(()),
        );
    }
    let (_, survivor) = survivor[0];
    assert!(
        process_running(survivor),
        "the member of an agent with clusterShutdownAction None outlives the cluster"
    );
}

/// The guard exits as its member did, and ends what the member left behind when it exits.
#[test]
fn the_guard_reports_the_members_exit_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().expect("dir");
    let dir = dir.path();
    // `$$` is the parent shell: the guard's supervisor.
    let guarded = |member: &str| {
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(format!(
                "\"$0\" exec-member --parent $$ -- /bin/sh -c '{member}'; echo $?"
            ))
            .arg(bin())
            .current_dir(dir);
        let out = run_command(command, TIMEOUT);
        out.stdout.trim().to_owned()
    };
    assert_eq!(guarded("exit 3"), "3", "an exit code");
    assert_eq!(
        guarded("kill -TERM $$"),
        (128 + Signal::SIGTERM as i32).to_string(),
        "a signal"
    );
    assert_eq!(
        guarded("kill -KILL $$"),
        (128 + Signal::SIGKILL as i32).to_string(),
        "SIGKILL"
    );
    // A member that exits, leaving a process in a session of its own behind (its output
    // closed, so that it does not hold the test's pipe open).
    assert_eq!(
        guarded(
            "setsid sh -c \"echo \\$\\$ > left.pid; exec sleep 1000 <&- >&- 2>&-\" & while [ ! -s left.pid ]; do sleep 0.01; done; exit 0"
        ),
        "0"
    );
    let left = recorded_pid_or_gone(dir, "left.pid");
    let _cleanup = Recorded(vec![("left.pid", left)]);
    wait_for("what the member left behind to be gone", TIMEOUT, || {
        gone(left).then_some(())
    });
}

fn recorded_pid_or_gone(dir: &Path, name: &str) -> i32 {
    std::fs::read_to_string(dir.join(name))
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid")
}
