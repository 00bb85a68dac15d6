//! Tests of the etcd harness itself, against real etcd servers.

use std::path::Path;
use std::time::Instant;

use quaestor_test_support::etcd::EtcdCluster;

/// The value of `key`, read from member `i` alone and from its local state (serializable), so
/// it shows what that member has applied.
fn local_value(cluster: &EtcdCluster, i: usize, key: &str) -> String {
    let got = cluster.etcdctl_on(&[i], &["get", "--consistency=s", "--print-value-only", key]);
    assert_eq!(got.code, Some(0), "get from m{i}: {}", got.stderr);
    got.stdout.trim_end().to_owned()
}

/// Drops `cluster` and checks that its processes and its folder are gone.
fn drop_and_check_cleanup(cluster: EtcdCluster) {
    let pids: Vec<u32> = cluster
        .running()
        .iter()
        .filter_map(|&i| cluster.pid(i))
        .collect();
    let dir = cluster.dir().to_owned();
    drop(cluster);
    for pid in pids {
        // The members are reaped by the drop, so their /proc entries are gone at once.
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "etcd pid {pid} is still there after the cluster was dropped"
        );
    }
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

#[test]
fn single_member_puts_and_gets() {
    let started = Instant::now();
    let cluster = EtcdCluster::single();
    eprintln!("single member healthy after {:?}", started.elapsed());
    assert_eq!(cluster.endpoints(), vec![cluster.endpoint(0)]);
    assert!(cluster.endpoint(0).starts_with("http://127.0.0.1:"));
    assert_eq!(cluster.leader(), 0);

    cluster.put_plain("/harness/b", "2");
    cluster.put_plain("/harness/a", "1");
    cluster.put_plain("/other", "3");
    assert_eq!(
        cluster.get_prefix_keys("/harness/"),
        ["/harness/a", "/harness/b"]
    );
    assert_eq!(local_value(&cluster, 0, "/harness/a"), "1");
    // A value that looks like a flag is still a value.
    cluster.put_plain("/harness/dash", "--not-a-flag");
    assert_eq!(local_value(&cluster, 0, "/harness/dash"), "--not-a-flag");

    drop_and_check_cleanup(cluster);
}

#[test]
fn three_members_elect_a_new_leader_and_a_restarted_member_catches_up() {
    let started = Instant::now();
    let mut cluster = EtcdCluster::start(3);
    eprintln!("3 members healthy after {:?}", started.elapsed());
    assert_eq!(cluster.endpoints().len(), 3);
    assert_eq!(cluster.running(), [0, 1, 2]);
    cluster.put_plain("/harness/before", "1");

    let old_leader = cluster.leader();
    let killed_at = Instant::now();
    cluster.kill(old_leader);
    assert!(!cluster.is_running(old_leader));
    // Still listed: endpoints are all members, running or not.
    assert_eq!(cluster.endpoints().len(), 3);

    let new_leader = cluster.leader();
    eprintln!(
        "leader m{old_leader} killed; m{new_leader} leads after {:?}",
        killed_at.elapsed()
    );
    assert_ne!(new_leader, old_leader);
    assert!(cluster.is_running(new_leader));
    cluster.put_plain("/harness/while-down", "2");
    assert_eq!(
        cluster.get_prefix_keys("/harness/"),
        ["/harness/before", "/harness/while-down"]
    );

    let restarted_at = Instant::now();
    cluster.restart(old_leader);
    eprintln!(
        "m{old_leader} healthy again after {:?}",
        restarted_at.elapsed()
    );
    assert!(cluster.is_running(old_leader));
    // `restart` waited for a linearizable health check through that member, which it
    // answers only once it has applied everything committed before: so its local state
    // already holds the key written while it was down.
    assert_eq!(
        local_value(&cluster, old_leader, "/harness/while-down"),
        "2"
    );
    // All three agree on a leader again.
    let leader = cluster.leader();
    assert!(cluster.is_running(leader));

    drop_and_check_cleanup(cluster);
}

#[test]
fn single_member_keeps_its_data_across_a_stop() {
    let mut cluster = EtcdCluster::single();
    cluster.put_plain("/harness/kept", "yes");

    let pid = cluster.pid(0).expect("m0 runs");
    cluster.stop(0);
    assert!(!cluster.is_running(0));
    assert_eq!(cluster.pid(0), None);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "m0 was reaped"
    );
    let down = cluster.etcdctl_on(&[0], &["get", "/harness/kept", "--command-timeout=1s"]);
    assert_ne!(down.code, Some(0), "a stopped member answers nothing");

    let restarted_at = Instant::now();
    cluster.restart(0);
    eprintln!(
        "single member healthy again after {:?}",
        restarted_at.elapsed()
    );
    assert_eq!(cluster.get_prefix_keys("/harness/"), ["/harness/kept"]);
    assert_eq!(local_value(&cluster, 0, "/harness/kept"), "yes");
    // And it takes writes again.
    cluster.put_plain("/harness/after", "1");
    assert_eq!(cluster.leader(), 0);

    drop_and_check_cleanup(cluster);
}
