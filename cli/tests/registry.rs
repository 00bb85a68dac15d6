//! `quaestor registry` against real etcd: list and watch as an operator sees them, and a
//! registering process whose entry is revoked on SIGTERM and expires after SIGKILL.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use quaestor_test_support::etcd::EtcdCluster;
use quaestor_test_support::{
    ChildProcess, Finished, quaestor_bin, run, spawn_reading, spawn_registration, wait_for,
};

const TIMEOUT: Duration = Duration::from_secs(30);
const KEY: &str = "services//Worker/localhost/5161/http";

fn bin() -> PathBuf {
    quaestor_bin(env!("CARGO_BIN_EXE_quaestor"))
}

fn quaestor(args: &[&str]) -> Finished {
    run(&bin(), args, TIMEOUT)
}

/// Holds a registration of localhost:5161 (control 127.0.0.1:6161) on a lease of `ttl`.
fn register(etcd: &EtcdCluster, ttl: &str) -> ChildProcess {
    let extra = ["--control", "127.0.0.1:6161", "--ttl", ttl];
    spawn_registration(&bin(), &etcd.endpoint(0), "localhost", 5161, &extra)
}

#[test]
fn sigterm_revokes_the_registration_at_once() {
    let etcd = EtcdCluster::single();
    let mut registering = register(&etcd, "60s");
    assert_eq!(etcd.get_prefix_keys("services/"), [KEY]);
    registering.signal(Signal::SIGTERM);
    assert_eq!(registering.wait_exit(TIMEOUT).code(), Some(0));
    // Well inside the 60 s TTL: only the revoke can have removed it.
    assert!(etcd.get_prefix_keys("services/").is_empty());
}

#[test]
fn sigkill_leaves_the_registration_to_expire_with_its_lease() {
    let etcd = EtcdCluster::single();
    let mut registering = register(&etcd, "3s");
    registering.signal(Signal::SIGKILL);
    registering.wait_exit(TIMEOUT);
    let killed_at = Instant::now();
    assert_eq!(
        etcd.get_prefix_keys("services/"),
        [KEY],
        "a killed registrar revokes nothing"
    );
    wait_for("the lease to expire", TIMEOUT, || {
        etcd.get_prefix_keys("services/").is_empty().then_some(())
    });
    assert!(
        killed_at.elapsed() >= Duration::from_secs(1),
        "gone after {:?}: removed, not expired",
        killed_at.elapsed()
    );
}

#[test]
fn list_shows_what_is_registered() {
    let etcd = EtcdCluster::single();
    etcd.put_plain(KEY, "Worker");
    etcd.put_plain(
        "services/prod/Worker/h/443/https",
        "{\"service\":\"Worker\",\"control\":\"h:9\",\"pid\":5}",
    );
    etcd.put_plain("services//Other/h/1/http", "Other");
    let endpoint = etcd.endpoint(0);

    let all = quaestor(&["registry", "list", "--etcd", &endpoint]);
    assert_eq!(all.code, Some(0), "{all:?}");
    let lines: Vec<&str> = all.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "services//Other/h/1/http",
            KEY,
            "services/prod/Worker/h/443/https  control=h:9  pid=5",
        ]
    );

    let default_scope = quaestor(&[
        "registry", "list", "--etcd", &endpoint, "--scope", "", "Worker",
    ]);
    assert_eq!(
        default_scope.stdout.lines().collect::<Vec<_>>(),
        [KEY],
        "{default_scope:?}"
    );

    let json = quaestor(&[
        "registry", "list", "--etcd", &endpoint, "--scope", "prod", "--json",
    ]);
    assert_eq!(json.code, Some(0), "{json:?}");
    let line = json.stdout.trim();
    for field in [
        "\"key\":\"services/prod/Worker/h/443/https\"",
        "\"port\":443",
        "\"tls\":true",
        "\"control\":\"h:9\"",
        "\"pid\":5",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
}

#[test]
fn watch_prints_changes_as_they_happen() {
    let etcd = EtcdCluster::single();
    etcd.put_plain(KEY, "Worker");
    let endpoint = etcd.endpoint(0);
    let (mut watching, lines) = spawn_reading(
        &bin(),
        &["registry", "watch", "--etcd", &endpoint, "Worker"],
    );
    lines.expect("the existing entry", TIMEOUT, |l| {
        (l == format!("+ {KEY}")).then_some(())
    });
    etcd.put_plain("services//Worker/b/2/http", "Worker");
    etcd.put_plain("services//Other/c/3/http", "Other");
    lines.expect("the new entry", TIMEOUT, |l| {
        (l == "+ services//Worker/b/2/http").then_some(())
    });
    let deleted = etcd.etcdctl(&["del", KEY]);
    assert_eq!(deleted.code, Some(0), "{deleted:?}");
    let next = lines.expect("the removal", TIMEOUT, |l| Some(l.to_owned()));
    assert_eq!(
        next,
        format!("- {KEY}"),
        "the other service's entry is not shown"
    );
    watching.signal(Signal::SIGTERM);
    assert_eq!(watching.wait_exit(TIMEOUT).code(), Some(0));
}

#[test]
fn unreachable_etcd_and_bad_arguments() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let out = quaestor(&[
        "registry",
        "list",
        "--etcd",
        &endpoint,
        "--etcd-timeout",
        "1s",
    ]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("cannot connect to etcd at"), "{out:?}");

    let register = |extra: &[&str]| -> Vec<String> {
        let base = [
            "registry",
            "register",
            "--etcd",
            endpoint.as_str(),
            "--service",
        ];
        base.iter().chain(extra).map(|a| (*a).to_owned()).collect()
    };
    for args in [
        vec!["registry".to_owned(), "list".to_owned()],
        register(&["a/b", "--host", "h", "--port", "1"]),
        register(&["A", "--host", "h", "--port", "0"]),
        register(&["A", "--host", "h", "--port", "1", "--ttl", "1s"]),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = quaestor(&args);
        assert_eq!(out.code, Some(64), "{args:?}: {out:?}");
    }
}
