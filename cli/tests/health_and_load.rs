//! `quaestor health` and `quaestor load` against a real `quaestor worker`: output and exit codes.

use std::path::PathBuf;
use std::time::Duration;

use quaestor_test_support::{Finished, quaestor_bin, run, spawn_worker};

const TIMEOUT: Duration = Duration::from_secs(30);

fn bin() -> PathBuf {
    quaestor_bin(env!("CARGO_BIN_EXE_quaestor"))
}

fn quaestor(args: &[&str]) -> Finished {
    run(&bin(), args, TIMEOUT)
}

/// A port nobody listens on: bound, then released.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    addr.to_string()
}

#[test]
fn health_exit_codes() {
    let worker = spawn_worker(&bin(), &["--service", "Worker", "--service", "Other"]);
    let addr = worker.addr.to_string();

    for service in [None, Some("Worker"), Some("Other")] {
        let mut args = vec!["health", addr.as_str()];
        args.extend(service);
        let out = quaestor(&args);
        assert_eq!(
            (out.code, out.stdout.trim()),
            (Some(0), "SERVING"),
            "{service:?}: {out:?}"
        );
    }

    let unknown = quaestor(&["health", &addr, "Nope"]);
    assert_eq!(
        (unknown.code, unknown.stdout.trim()),
        (Some(1), "SERVICE_UNKNOWN"),
        "{unknown:?}"
    );

    let unreachable = quaestor(&["health", &closed_port(), "--timeout", "2s"]);
    assert_eq!(unreachable.code, Some(2), "{unreachable:?}");
    assert!(
        unreachable.stderr.contains("cannot connect"),
        "{unreachable:?}"
    );
}

#[test]
fn health_times_out_on_a_server_that_never_answers() {
    // Accepts connections (the kernel completes the handshake) but never speaks HTTP/2.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr").to_string();
    let out = quaestor(&["health", &addr, "--timeout", "300ms"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    drop(silent);
}

#[test]
fn load_report_as_text_and_json() {
    let worker = spawn_worker(
        &bin(),
        &["--capacity", "6", "--busy", "2", "--load-rate", "0.5"],
    );
    let addr = worker.addr.to_string();

    let text = quaestor(&["load", &addr, "Worker"]);
    assert_eq!(text.code, Some(0), "{text:?}");
    assert!(
        text.stdout.contains("current requests    2 of 6"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("known load rate     0.5"),
        "{}",
        text.stdout
    );

    let json = quaestor(&["load", &addr, "Worker", "--json"]);
    assert_eq!(json.code, Some(0), "{json:?}");
    let lines: Vec<&str> = json.stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "one JSON object on one line: {}",
        json.stdout
    );
    let field = |name: &str| {
        let key = format!("\"{name}\":");
        let start = lines[0]
            .find(&key)
            .unwrap_or_else(|| panic!("{name} in {}", lines[0]))
            + key.len();
        lines[0][start..]
            .split([',', '}'])
            .next()
            .expect("value")
            .to_owned()
    };
    assert_eq!(field("request_capacity"), "6");
    assert_eq!(field("current_requests"), "2");
    assert_eq!(field("known_load_rate"), "0.5");
    assert_eq!(field("service_name"), "\"Worker\"");
    let ticks: i64 = field("timestamp_ticks").parse().expect("ticks");
    assert!(ticks > 621_355_968_000_000_000, "ticks after 1970: {ticks}");
}

#[test]
fn load_of_unknown_service_fails_with_1() {
    let worker = spawn_worker(&bin(), &[]);
    let out = quaestor(&["load", &worker.addr.to_string(), "Nope"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("answered OUT_OF_RANGE"), "{out:?}");
}

#[test]
fn load_of_unreachable_worker_fails_with_2() {
    let out = quaestor(&["load", &closed_port(), "Worker", "--timeout", "2s"]);
    assert_eq!(out.code, Some(2), "{out:?}");
}

#[test]
fn bad_arguments_get_one_line_and_64() {
    let cases: &[&[&str]] = &[
        &["health"],
        &["health", "no-port-here"],
        &["health", "ftp://127.0.0.1:5"],
        &["health", "127.0.0.1:5", "--timeout", "soon"],
        &["load", "127.0.0.1:5"],
        &[
            "load",
            "127.0.0.1:5",
            "Worker",
            "--ca",
            "/nonexistent/ca.pem",
        ],
        &["nonsense"],
        &["worker"],
        &["worker", "--port", "70000"],
        &["worker", "--port", "0", "--capacity", "-5"],
        &["worker", "--port", "0", "--load-rate", "-1"],
        &["worker", "--port", "0", "--service", ""],
        &["worker", "--port", "0", "--service", "A", "--service", "A"],
        &["worker", "--port", "0", "--exit-code", "3"],
        &[
            "worker",
            "--port",
            "0",
            "--tls-cert",
            "/nonexistent/cert.pem",
            "--tls-key",
            "/nonexistent/key.pem",
        ],
    ];
    for args in cases {
        let out = quaestor(args);
        assert_eq!(out.code, Some(64), "{args:?}: {out:?}");
        let lines: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.starts_with("quaestor: "))
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "{args:?}: one error line expected in {:?}",
            out.stderr
        );
        assert!(!out.stderr.contains("panicked"), "{args:?}: {out:?}");
    }
}

#[test]
fn help_and_version_exit_0() {
    for args in [
        &["--help"][..],
        &["--version"],
        &["worker", "--help"],
        &["health", "--help"],
    ] {
        let out = quaestor(args);
        assert_eq!(out.code, Some(0), "{args:?}: {out:?}");
        assert!(!out.stdout.is_empty(), "{args:?}");
    }
}
