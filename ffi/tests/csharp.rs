//! The C# binding (`bindings/csharp`), its checks (`bindings/csharp/tests/WrapperTests.cs`),
//! request cancellation (`bindings/csharp/tests/CancelWorker.cs`, see `common::cancel`) and
//! the C# sample worker (`sdk-examples/csharp/HelloWorker.cs`), compiled with Mono's `mcs
//! -warnaserror` and run with `mono` against the libquaestor.so of this test run.

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{SampleWorker, build, drive_sample, lib_dir, registered_and_discovered, repo};

/// Checks that Mono's `tool` runs; fails (never skips) when it is missing.
fn require(tool: &str) {
    match Command::new(tool).arg("--version").output() {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "`{tool} --version` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(e) => panic!(
            "`{tool}` cannot be run ({e}): the C# tests need Mono (mono-mcs, mono-runtime); \
             run scripts/setup.sh"
        ),
    }
}

/// The `.cs` files directly in `dir`, sorted.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "cs"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .cs files in {}", dir.display());
    files
}

/// The binding and one program using it, compiled into a temporary folder.
struct CSharp {
    dir: tempfile::TempDir,
}

impl CSharp {
    /// Compiles `Quaestor.Native.dll` from `bindings/csharp/*.cs`, then `exe` from `program`
    /// (relative to the repository) referencing it.
    fn compile(program: &str, exe: &str) -> CSharp {
        require("mcs");
        require("mono");
        let dir = tempfile::tempdir().expect("a temporary folder");
        let dll = dir.path().join("Quaestor.Native.dll");
        let mut library = Command::new("mcs");
        library
            .args(["-warnaserror", "-debug", "-target:library"])
            .arg(out_arg(&dll))
            .args(sources(&repo().join("bindings/csharp")));
        build(library);
        let mut sample = Command::new("mcs");
        sample
            .args(["-warnaserror", "-debug"])
            .arg(format!("-r:{}", dll.display()))
            .arg(out_arg(&dir.path().join(exe)))
            .arg(repo().join(program));
        build(sample);
        CSharp { dir }
    }

    /// `mono EXE`, finding libquaestor.so on LD_LIBRARY_PATH.
    fn mono(&self, exe: &str) -> Command {
        let mut paths = vec![lib_dir()];
        if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
            paths.extend(std::env::split_paths(&old));
        }
        let library_path: OsString = std::env::join_paths(paths).expect("LD_LIBRARY_PATH");
        let mut command = Command::new("mono");
        command
            .arg("--debug")
            .arg(self.dir.path().join(exe))
            .env("LD_LIBRARY_PATH", library_path);
        command
    }
}

fn out_arg(path: &Path) -> OsString {
    let mut arg = OsString::from("-out:");
    arg.push(path);
    arg
}

fn hello_worker() -> CSharp {
    CSharp::compile("sdk-examples/csharp/HelloWorker.cs", "HelloWorker.exe")
}

#[test]
fn the_sample_worker_reports_requests_and_health() {
    let csharp = hello_worker();
    let mut command = csharp.mono("HelloWorker.exe");
    command.arg("0");
    drive_sample(SampleWorker::start(command));
}

#[test]
fn the_sample_worker_registers_in_etcd_and_is_discovered() {
    let csharp = hello_worker();
    registered_and_discovered(|etcd, host| {
        let mut command = csharp.mono("HelloWorker.exe");
        command.args(["0", etcd, host]);
        SampleWorker::start(command)
    });
}

#[test]
fn cancel_marks_the_requests_of_that_user_and_environment() {
    let csharp = CSharp::compile("bindings/csharp/tests/CancelWorker.cs", "CancelWorker.exe");
    common::cancel::drive_cancel(SampleWorker::start(csharp.mono("CancelWorker.exe")));
}

#[test]
fn the_wrapper_turns_failures_into_exceptions_with_their_codes() {
    let csharp = CSharp::compile("bindings/csharp/tests/WrapperTests.cs", "WrapperTests.exe");
    let mut command = csharp.mono("WrapperTests.exe");
    command.arg(env!("CARGO_PKG_VERSION"));
    common::passes(command, "WrapperTests.exe", "all passed");
}
