//! The etcd registry against real etcd processes: registration and leases, the watch,
//! compatibility with the C# key layout, member failover and full outages.

use std::collections::BTreeSet;
use std::time::Duration;

use quaestor_core::registry::etcd::{EtcdOptions, EtcdRegistrar, EtcdRegistry};
use quaestor_core::registry::{RegistryReader, RegistryView, ServiceLocation};
use quaestor_test_support::etcd::EtcdCluster;
use quaestor_test_support::wait_for_async;
use tokio::sync::watch;

const TIMEOUT: Duration = Duration::from_secs(30);

fn location(host: &str, port: u16) -> ServiceLocation {
    ServiceLocation::new("", "Worker", host, port).expect("valid location")
}

/// Options with short timeouts, so that failovers in tests take seconds, not minutes.
fn options(endpoints: Vec<String>) -> EtcdOptions {
    EtcdOptions::new(endpoints).with_timeouts(Duration::from_secs(1), Duration::from_secs(2))
}

fn keys(view: &RegistryView) -> BTreeSet<String> {
    view.locations.keys().cloned().collect()
}

fn key_set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| (*k).to_owned()).collect()
}

/// Waits until what `receiver` publishes satisfies `ready`.
async fn until<T>(receiver: &mut watch::Receiver<T>, what: &str, ready: impl Fn(&T) -> bool) {
    wait_for_async(what, TIMEOUT, || {
        let done = ready(&receiver.borrow_and_update());
        async move { done.then_some(()) }
    })
    .await;
}

/// One etcd member and a reader on it.
async fn single_with_reader() -> (EtcdCluster, EtcdRegistry) {
    let etcd = EtcdCluster::single();
    let registry = EtcdRegistry::connect(options(etcd.endpoints()))
        .await
        .expect("reader");
    (etcd, registry)
}

/// One etcd member, a reader and a registrar on it.
async fn single_with_reader_and_registrar() -> (EtcdCluster, EtcdRegistry, EtcdRegistrar) {
    let (etcd, registry) = single_with_reader().await;
    let registrar = EtcdRegistrar::connect(options(etcd.endpoints()))
        .await
        .expect("registrar");
    (etcd, registry, registrar)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_deregister_and_the_csharp_key_layout() {
    let (etcd, registry, registrar) = single_with_reader_and_registrar().await;
    let a = location("localhost", 5161)
        .with_control("127.0.0.1:6161")
        .with_pid(7);
    let b = location("localhost", 5162).with_tls(true);
    registrar.register(&a).await.expect("register a");
    registrar.register(&b).await.expect("register b");

    let mut view = registry.subscribe();
    until(&mut view, "both registrations", |v| v.locations.len() == 2).await;
    let seen = registry.current();
    assert_eq!(seen.locations["services//Worker/localhost/5161/http"], a);
    assert_eq!(
        seen.locations["services//Worker/localhost/5162/https"].control_endpoint(),
        "localhost:5162"
    );

    // etcdctl sees exactly the C# layout.
    assert_eq!(
        etcd.get_prefix_keys("services/"),
        [
            "services//Worker/localhost/5161/http",
            "services//Worker/localhost/5162/https"
        ]
    );

    registrar.deregister(&a).await.expect("deregister a");
    until(&mut view, "a to go", |v| {
        keys(v) == key_set(&["services//Worker/localhost/5162/https"])
    })
    .await;
    assert_eq!(
        etcd.get_prefix_keys("services/"),
        ["services//Worker/localhost/5162/https"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_written_the_csharp_way_are_read_and_bad_keys_skipped() {
    let etcd = EtcdCluster::single();
    // The C# writer: a plain put, the value the bare service name, no lease.
    etcd.put_plain("services//Worker/legacy/5161/http", "Worker");
    etcd.put_plain("services/prod/Worker/legacy/443/https", "Worker");
    for bad in [
        "services//Worker/legacy/0/http",
        "services//Worker/legacy/5161/ftp",
        "services//Worker/legacy",
        "services//Wor/ker/legacy/1/http",
    ] {
        etcd.put_plain(bad, "Worker");
    }
    let registry = EtcdRegistry::connect(options(etcd.endpoints()))
        .await
        .expect("reader");
    assert_eq!(
        keys(&registry.current()),
        key_set(&[
            "services//Worker/legacy/5161/http",
            "services/prod/Worker/legacy/443/https"
        ])
    );
    let default_scope = registry.subscribe_service("", "Worker");
    assert_eq!(
        default_scope.borrow().locations,
        vec![location("legacy", 5161)]
    );

    // Bad keys arriving through the watch are skipped too; good ones still arrive.
    let mut view = registry.subscribe();
    etcd.put_plain("services//Worker/legacy/99999/http", "Worker");
    etcd.put_plain("services//Worker/legacy/5162/http", "Worker");
    until(&mut view, "the good key from the watch", |v| {
        v.locations.len() == 3
    })
    .await;
    assert!(
        !registry
            .current()
            .locations
            .contains_key("services//Worker/legacy/99999/http")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_are_rejected_before_reaching_etcd() {
    assert!(ServiceLocation::new("", "a/b", "h", 1).is_err());
    assert!(ServiceLocation::new("", "", "h", 1).is_err());
    assert!(ServiceLocation::new("", "Worker", "h", 0).is_err());
    let etcd = EtcdCluster::single();
    let short_ttl = options(etcd.endpoints()).with_lease_ttl(Duration::from_millis(500));
    assert!(
        EtcdRegistrar::connect(short_ttl).await.is_err(),
        "a TTL under 2 s is refused"
    );
    assert!(etcd.get_prefix_keys("services/").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_drop_revoke_at_once() {
    let (etcd, registry) = single_with_reader().await;
    let mut view = registry.subscribe();
    // A TTL far longer than the test's deadline: only a revoke can remove the entries in time.
    let long = options(etcd.endpoints()).with_lease_ttl(Duration::from_secs(300));

    let stopped = EtcdRegistrar::connect(long.clone())
        .await
        .expect("registrar");
    stopped.register(&location("a", 1)).await.expect("register");
    let dropped = EtcdRegistrar::connect(long).await.expect("registrar");
    dropped.register(&location("b", 2)).await.expect("register");
    until(&mut view, "both entries", |v| v.locations.len() == 2).await;

    stopped.stop().await.expect("stop");
    until(&mut view, "the stopped registrar's entry to go", |v| {
        v.locations.len() == 1
    })
    .await;
    drop(dropped);
    until(&mut view, "the dropped registrar's entry to go", |v| {
        v.locations.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_delivers_changes_in_order() {
    let (_etcd, registry, registrar) = single_with_reader_and_registrar().await;
    let mut worker = registry.subscribe_service("", "Worker");
    let a = location("a", 1);
    let b = location("b", 2);

    // Each step waits for its state, so the sequence of states is what followers must see.
    let steps: Vec<(&str, Vec<ServiceLocation>)> = vec![
        ("add a", vec![a.clone()]),
        ("add b", vec![a.clone(), b.clone()]),
        ("remove a", vec![b.clone()]),
        ("add a again", vec![a.clone(), b.clone()]),
        ("remove both", vec![]),
    ];
    for (step, expected) in steps {
        match step {
            "add a" | "add a again" => registrar.register(&a).await.expect("register a"),
            "add b" => registrar.register(&b).await.expect("register b"),
            "remove a" => registrar.deregister(&a).await.expect("deregister a"),
            _ => {
                registrar.deregister(&a).await.expect("deregister a");
                registrar.deregister(&b).await.expect("deregister b");
            }
        }
        until(&mut worker, step, |set| set.locations == expected).await;
    }

    // A burst without waiting ends in the right state (events are applied in order).
    for _ in 0..10 {
        registrar.register(&a).await.expect("register");
        registrar.deregister(&a).await.expect("deregister");
    }
    registrar.register(&b).await.expect("register b");
    until(&mut worker, "the end of the burst", |set| {
        set.locations == vec![b.clone()]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_is_granted_again_and_entries_put_back() {
    let (etcd, registry) = single_with_reader().await;
    let ttl = options(etcd.endpoints()).with_lease_ttl(Duration::from_secs(3));
    let registrar = EtcdRegistrar::connect(ttl).await.expect("registrar");
    registrar
        .register(&location("a", 1))
        .await
        .expect("register");
    registrar
        .register(&location("b", 2))
        .await
        .expect("register");
    let mut view = registry.subscribe();
    until(&mut view, "both entries", |v| v.locations.len() == 2).await;

    // Someone revokes the registrar's lease behind its back: the entries vanish ...
    let lease = registrar.lease_id().await.expect("a lease");
    let revoked = etcd.etcdctl(&["lease", "revoke", &format!("{lease:x}")]);
    assert_eq!(revoked.code, Some(0), "{revoked:?}");
    until(&mut view, "the revoked entries to vanish", |v| {
        v.locations.is_empty()
    })
    .await;
    // ... and come back on a new lease at the next keep-alive.
    until(&mut view, "the entries to come back", |v| {
        v.locations.len() == 2
    })
    .await;
    assert_ne!(registrar.lease_id().await, Some(lease));
}

/// Kills one member of a 3-member cluster that both the reader and the registrar use, and
/// checks that no registration is lost, no read fails, and the lease survives.
async fn survive_member_kill(kill_leader: bool) {
    let mut etcd = EtcdCluster::start(3);
    let leader = etcd.leader();
    let victim = if kill_leader {
        leader
    } else {
        (leader + 1) % 3
    };
    // The victim first: both sides connect to it, so its death forces a failover.
    let mut endpoints = etcd.endpoints();
    endpoints.rotate_left(victim);
    let ttl = Duration::from_secs(3);
    let registry = EtcdRegistry::connect(options(endpoints.clone()))
        .await
        .expect("reader");
    let registrar = EtcdRegistrar::connect(options(endpoints).with_lease_ttl(ttl))
        .await
        .expect("registrar");
    let before: Vec<ServiceLocation> = (1..=5).map(|i| location("h", 5160 + i)).collect();
    for l in &before {
        registrar.register(l).await.expect("register");
    }
    let mut view = registry.subscribe();
    until(&mut view, "5 registrations", |v| v.locations.len() == 5).await;

    // Record every state the reader publishes from here on.
    let mut recorder = registry.subscribe();
    let states = tokio::spawn(async move {
        let mut seen = Vec::new();
        while recorder.changed().await.is_ok() {
            seen.push(recorder.borrow_and_update().clone());
        }
        seen
    });

    etcd.kill(victim);
    // A new registration goes through within a bounded retry.
    let after = location("h", 5170);
    tokio::time::timeout(TIMEOUT, registrar.register(&after))
        .await
        .expect("registration during the failover is bounded")
        .expect("registration during the failover succeeds");
    until(&mut view, "the registration made after the kill", |v| {
        v.locations.len() == 6
    })
    .await;

    // For longer than two TTLs, etcd never loses a registration: the lease is kept alive
    // through another member (a lapse would delete every key at once).
    let expected: BTreeSet<String> = before
        .iter()
        .chain([&after])
        .map(ServiceLocation::key)
        .collect();
    let watched = expected.clone();
    // Kept alive to the end of the test.
    let _etcd = tokio::task::spawn_blocking(move || {
        let lost = quaestor_test_support::within(ttl * 2 + Duration::from_secs(1), || {
            let listed: BTreeSet<String> = etcd.get_prefix_keys("services/").into_iter().collect();
            (listed != watched).then_some(listed)
        });
        assert_eq!(lost, None, "a registration was lost in etcd");
        etcd
    })
    .await
    .expect("the etcd check");
    assert_eq!(
        keys(&registry.current()),
        expected,
        "no registration lost in the reader"
    );

    drop(registry);
    for state in states.await.expect("recorder") {
        let present = keys(&state);
        assert!(
            before.iter().all(|l| present.contains(&l.key())),
            "the reader never lost a registration, but published {present:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_loses_no_registration() {
    survive_member_kill(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_follower_loses_no_registration() {
    survive_member_kill(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outage_keeps_the_last_set_then_resyncs() {
    let mut etcd = EtcdCluster::single();
    let registry = EtcdRegistry::connect(options(etcd.endpoints()))
        .await
        .expect("reader");
    let registrar =
        EtcdRegistrar::connect(options(etcd.endpoints()).with_lease_ttl(Duration::from_secs(5)))
            .await
            .expect("registrar");
    registrar
        .register(&location("a", 1))
        .await
        .expect("register");
    etcd.put_plain("services//Worker/legacy/2/http", "Worker");
    let mut view = registry.subscribe();
    let mut worker = registry.subscribe_service("", "Worker");
    until(&mut view, "both entries", |v| v.locations.len() == 2).await;

    etcd.kill(0);
    until(&mut view, "the view to turn stale", |v| v.stale).await;
    assert_eq!(
        registry.current().locations.len(),
        2,
        "the last known set is kept"
    );
    assert!(
        worker.borrow_and_update().stale,
        "service followers see stale too"
    );
    assert_eq!(worker.borrow().locations.len(), 2);

    etcd.restart(0);
    until(&mut view, "the view to be fresh again", |v| !v.stale).await;
    // Changes after the outage reach the reader without a restart.
    etcd.put_plain("services//Worker/new/3/http", "Worker");
    until(&mut view, "the entry written after the outage", |v| {
        v.locations.len() == 3
    })
    .await;
    // The registrar's entry is still (or again) there.
    let listed = etcd.get_prefix_keys("services/");
    assert!(
        listed.contains(&"services//Worker/a/1/http".to_owned()),
        "{listed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_etcd_fails_to_connect() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let error = EtcdRegistry::connect(options(vec![endpoint]))
        .await
        .expect_err("nobody listens");
    assert!(
        error.to_string().contains("cannot connect to etcd at"),
        "{error}"
    );
}

/// Registers one location with `options` and checks that a reader with the same options, and
/// etcdctl, see it.
async fn round_trip(etcd: &EtcdCluster, options: EtcdOptions) {
    let registrar = EtcdRegistrar::connect(options.clone())
        .await
        .expect("registrar");
    registrar
        .register(&location("a", 1))
        .await
        .expect("register");
    let registry = EtcdRegistry::connect(options).await.expect("reader");
    assert_eq!(
        keys(&registry.current()),
        key_set(&["services//Worker/a/1/http"])
    );
    assert_eq!(
        etcd.get_prefix_keys("services/"),
        ["services//Worker/a/1/http"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_to_etcd() {
    let pki = quaestor_test_support::TestPki::new();
    let etcd = EtcdCluster::single_tls((&pki).into());
    let tls = quaestor_core::tls::ClientTls {
        ca: Some(pki.ca.clone()),
        identity: Some((pki.client_cert.clone(), pki.client_key.clone())),
        domain: None,
    };
    round_trip(&etcd, options(etcd.endpoints()).with_tls(tls.clone())).await;

    let no_client_cert = quaestor_core::tls::ClientTls {
        identity: None,
        ..tls.clone()
    };
    assert!(
        EtcdRegistry::connect(options(etcd.endpoints()).with_tls(no_client_cert))
            .await
            .is_err(),
        "etcd requires a client certificate"
    );
    let plain_endpoints = etcd
        .endpoints()
        .iter()
        .map(|e| e.replace("https://", "http://"))
        .collect();
    assert!(
        EtcdRegistry::connect(options(plain_endpoints))
            .await
            .is_err(),
        "plaintext to a TLS etcd fails"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password_authentication() {
    let mut etcd = EtcdCluster::single();
    etcd.enable_auth();

    round_trip(
        &etcd,
        options(etcd.endpoints()).with_user(EtcdCluster::USER, EtcdCluster::PASSWORD),
    )
    .await;

    let wrong = options(etcd.endpoints()).with_user(EtcdCluster::USER, "wrong");
    assert!(
        EtcdRegistry::connect(wrong).await.is_err(),
        "a wrong password is refused"
    );
    assert!(
        EtcdRegistry::connect(options(etcd.endpoints()))
            .await
            .is_err(),
        "no user is refused once authentication is on"
    );
}

/// An etcd with TLS (client certificates required) and authentication on: the right
/// credentials work; refusals say what was refused, not "no etcd member answers".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_of_an_etcd_with_tls_and_auth_say_so() {
    let pki = quaestor_test_support::TestPki::new();
    let mut etcd = EtcdCluster::single_tls((&pki).into());
    etcd.enable_auth();
    let tls = quaestor_core::tls::ClientTls {
        ca: Some(pki.ca.clone()),
        identity: Some((pki.client_cert.clone(), pki.client_key.clone())),
        domain: None,
    };
    let secure = || options(etcd.endpoints()).with_tls(tls.clone());
    round_trip(
        &etcd,
        secure().with_user(EtcdCluster::USER, EtcdCluster::PASSWORD),
    )
    .await;

    let refused = |options: EtcdOptions| async move {
        EtcdRegistry::connect(options)
            .await
            .expect_err("refused")
            .to_string()
    };
    let wrong = refused(secure().with_user(EtcdCluster::USER, "wrong")).await;
    assert!(
        wrong.contains("etcd refused user quaestor: authentication failed"),
        "{wrong}"
    );
    let anonymous = refused(secure()).await;
    assert!(
        anonymous.contains("refused") && anonymous.contains("give a user name and password"),
        "{anonymous}"
    );
    let powerless =
        refused(secure().with_user(EtcdCluster::POWERLESS_USER, EtcdCluster::POWERLESS_PASSWORD))
            .await;
    assert!(
        powerless.contains("etcd refused user nobody: permission denied"),
        "{powerless}"
    );
    let registrar = EtcdRegistrar::connect(secure().with_user(EtcdCluster::USER, "wrong"))
        .await
        .expect_err("refused");
    assert!(
        matches!(
            registrar,
            quaestor_core::registry::etcd::EtcdError::Refused { .. }
        ),
        "{registrar}"
    );
}

/// A reader started while its etcd is not up yet: publishes the fallback, then, once etcd
/// answers, what etcd holds (and follows it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_started_before_etcd_serves_the_fallback_then_switches_to_etcd() {
    let port = quaestor_test_support::free_port();
    let endpoints = vec![format!("http://127.0.0.1:{port}")];
    let fallback =
        quaestor_core::registry::memory::MemoryRegistry::from_locations([location("fallback", 1)]);
    let registry =
        EtcdRegistry::start_with_fallback(options(endpoints.clone()), fallback).expect("reader");
    assert_eq!(
        keys(&registry.current()),
        key_set(&["services//Worker/fallback/1/http"]),
        "the fallback serves while etcd is down"
    );

    let etcd = EtcdCluster::single_at(port, None);
    etcd.put_plain("services//Worker/etcd/2/http", "Worker");
    let mut view = registry.subscribe();
    until(&mut view, "etcd's registry instead of the fallback", |v| {
        keys(v) == key_set(&["services//Worker/etcd/2/http"])
    })
    .await;
    etcd.put_plain("services//Worker/etcd/3/http", "Worker");
    until(&mut view, "etcd's changes", |v| v.locations.len() == 2).await;
}

/// A registrar started while its etcd is not up yet: what it registers is put once etcd
/// answers; and when etcd comes back having lost everything, it is put again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registrar_started_before_etcd_registers_once_it_answers_and_again_after_a_loss() {
    let port = quaestor_test_support::free_port();
    let endpoints = vec![format!("http://127.0.0.1:{port}")];
    let registrar = EtcdRegistrar::start(options(endpoints).with_lease_ttl(Duration::from_secs(3)))
        .expect("registrar");
    registrar
        .register(&location("a", 1))
        .await
        .expect("kept until etcd answers");
    assert_eq!(registrar.lease_id().await, None);

    let etcd = EtcdCluster::single_at(port, None);
    quaestor_test_support::wait_for("the registration in etcd", TIMEOUT, || {
        (etcd.get_prefix_keys("services/") == ["services//Worker/a/1/http"]).then_some(())
    });
    registrar
        .register(&location("b", 2))
        .await
        .expect("register");

    // etcd goes, and a new one with no data comes on the same port.
    drop(etcd);
    let etcd = EtcdCluster::single_at(port, None);
    quaestor_test_support::wait_for("both registrations again", TIMEOUT, || {
        (etcd.get_prefix_keys("services/").len() == 2).then_some(())
    });
    registrar.stop().await.expect("stop");
    assert!(etcd.get_prefix_keys("services/").is_empty());
}

/// A registry larger than one gRPC message (4 MiB) loads whole, and the watch goes on from
/// the load's revision. One range over it failed with OUT_OF_RANGE ("decoded message length
/// too large"), found by the 50 000-location scale run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_larger_than_one_message_loads_whole() {
    use etcd_client::{Client, Txn, TxnOp};
    const COUNT: u16 = 5000;
    let etcd = EtcdCluster::single();
    let mut client = Client::connect(etcd.endpoints(), None)
        .await
        .expect("etcd client");
    // About 1.1 KB a registration: 5.5 MB in all.
    let agent = "a".repeat(1000);
    let all: Vec<ServiceLocation> = (0..COUNT)
        .map(|i| location(&format!("host-{}", i % 7), 10_000 + i).with_agent(agent.clone()))
        .collect();
    for batch in all.chunks(100) {
        let ops: Vec<TxnOp> = batch
            .iter()
            .map(|l| TxnOp::put(l.key(), l.value(), None))
            .collect();
        client
            .txn(Txn::new().and_then(ops))
            .await
            .expect("puts written");
    }
    let registry = EtcdRegistry::connect(options(etcd.endpoints()))
        .await
        .expect("a registry of 5.5 MB loads");
    let view = registry.current();
    assert_eq!(
        keys(&view),
        all.iter()
            .map(ServiceLocation::key)
            .collect::<BTreeSet<_>>()
    );
    assert!(
        view.locations
            .values()
            .all(|l| l.agent.as_deref() == Some(agent.as_str())),
        "every value read"
    );
    let later = location("later", 1);
    client
        .put(later.key(), later.value(), None)
        .await
        .expect("put");
    let mut views = registry.subscribe();
    until(&mut views, "the later registration", |v| {
        v.locations.contains_key(&later.key()) && v.locations.len() == usize::from(COUNT) + 1
    })
    .await;
}
