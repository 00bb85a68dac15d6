//! `make install` and README's C lines, as a user runs them: libquaestor, its headers and
//! `quaestor.pc` installed into a fresh prefix, the C sample worker built with README's own
//! `export PKG_CONFIG_PATH=…` and `cc … $(pkg-config --cflags --libs quaestor)` lines (run
//! verbatim by `sh`, `$HOME` being the test's folder), then run without `LD_LIBRARY_PATH`: it
//! must find the installed library through the rpath the .pc's Libs give it.
//!
//! The install is `make install` with `PROFILE=debug` (the debug library this test run has
//! built already; a release build would take minutes in CI) and `-o setup-build` (`make test`
//! ran the setup before the tests).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{SampleWorker, build, lib_dir, repo};

/// The fenced README block that starts with `make install PREFIX=$HOME/.local`: its lines.
fn readme_install_block() -> Vec<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let lines: Vec<&str> = readme.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with("make install PREFIX=$HOME/.local"))
        .expect("README has a line `make install PREFIX=$HOME/.local`");
    lines[start..]
        .iter()
        .take_while(|l| !l.starts_with("```"))
        .map(|l| l.to_string())
        .collect()
}

/// The README line starting with `prefix` in `block`.
fn line<'a>(block: &'a [String], prefix: &str) -> &'a str {
    block
        .iter()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("README's install block has no line `{prefix}…`: {block:#?}"))
}

/// The shared objects named libquaestor.so that process `pid` has mapped.
fn mapped_libquaestor(pid: u32) -> Vec<PathBuf> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("/proc/PID/maps");
    let mut paths: Vec<PathBuf> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.ends_with("/libquaestor.so"))
        .map(PathBuf::from)
        .collect();
    paths.dedup();
    paths
}

#[test]
fn installed_prefix_builds_and_runs_the_c_sample_as_readme_says() {
    let home = tempfile::tempdir().expect("home");
    let home = home.path();
    let prefix = home.join(".local");
    let block = readme_install_block();

    // `make install PREFIX=$HOME/.local`, with the debug library of this build.
    let target_dir = lib_dir()
        .parent()
        .and_then(Path::parent)
        .expect("the cargo target folder")
        .to_owned();
    let mut make = Command::new("make");
    make.current_dir(repo())
        .args(["-o", "setup-build", "install"])
        .arg(format!("PREFIX={}", prefix.display()))
        .args(["PROFILE=debug", "DESTDIR="])
        .arg(format!("CARGO_TARGET_DIR={}", target_dir.display()))
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL");
    build(make);
    for file in [
        "lib/libquaestor.so",
        "lib/libquaestor.a",
        "include/quaestor.h",
        "include/quaestor.hpp",
        "lib/pkgconfig/quaestor.pc",
    ] {
        assert!(prefix.join(file).is_file(), "{file} installed");
    }
    let pc = std::fs::read_to_string(prefix.join("lib/pkgconfig/quaestor.pc")).expect("pc");
    assert!(
        pc.contains(&format!("libdir={}/lib", prefix.display())),
        "the .pc points at the prefix:\n{pc}"
    );

    // README's lines, verbatim, in a folder where `sdk-examples/` is the repository's.
    let export = line(&block, "export PKG_CONFIG_PATH=");
    let cc = line(&block, "cc ");
    let run = line(&block, "./hello_worker");
    std::os::unix::fs::symlink(repo().join("sdk-examples"), home.join("sdk-examples"))
        .expect("symlink sdk-examples");
    let mut shell = Command::new("sh");
    shell
        .arg("-ec")
        .arg(format!("{export}\n{cc}\n"))
        .current_dir(home)
        .env("HOME", home)
        .env_remove("PKG_CONFIG_PATH")
        .env_remove("LIBRARY_PATH")
        .env_remove("LD_LIBRARY_PATH");
    build(shell);

    // `./hello_worker 0`, without LD_LIBRARY_PATH: it must load the installed library.
    let mut words = run.split('#').next().unwrap_or("").split_whitespace();
    let program = words.next().expect("a program");
    let mut worker = Command::new(home.join(program));
    worker
        .args(words)
        .current_dir(home)
        .env_remove("LD_LIBRARY_PATH");
    let worker = SampleWorker::start(worker);
    let loaded = mapped_libquaestor(worker.process.pid());
    let installed = prefix.join("lib/libquaestor.so");
    assert_eq!(
        loaded,
        vec![installed.clone()],
        "the sample loaded the installed {}",
        installed.display()
    );
    assert_eq!(worker.quit(), Some(0), "quit exits 0");
}
