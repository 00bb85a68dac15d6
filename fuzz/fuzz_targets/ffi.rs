//! The C ABI's text and buffer inputs, called as a C program would, within the contract of
//! `quaestor.h` (text NULL or NUL-terminated, buffers valid for their length, out-pointers
//! NULL or writable), with any content: every call returns a result code, never a panic
//! (`QUAESTOR_RESULT_PANIC`), and writes its out-parameters only on success.
//!
//! Input: one byte choosing the call, one byte of flags (which pointers are NULL), four
//! bytes of number, then the texts, separated by NUL bytes. Calls that would reach out to
//! an address the input names (connecting a client, registering in etcd with a service, a
//! reporter on a host to resolve) are not made: discovery goes to a real balancer in this
//! process, registration only on a reporter without services.
#![no_main]

use std::ffi::{CStr, CString, c_char};
use std::ptr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use quaestor::quaestor_result::{self, *};
use quaestor::*;
use quaestor_core::server::ServerHandle;
use quaestor_fuzz::Fixture;

/// Raw pointers kept for the whole run (used from the fuzzing thread only).
struct Handles {
    /// Serves `Worker` (the service loads below count on it).
    reporter: *mut quaestor_reporter,
    /// Has no services: registration stops at its checks.
    empty: *mut quaestor_reporter,
    load: *mut quaestor_service_load,
    /// A client of the balancer below.
    client: *mut quaestor_discovery_client,
    balancer: CString,
    /// The balancer's, kept (and reachable: no leak) for the whole run.
    _runtime: tokio::runtime::Runtime,
    _fixture: Fixture,
    _server: ServerHandle,
}

// SAFETY: the pointers are only ever used by the thread that runs the fuzz target.
unsafe impl Send for Handles {}
// SAFETY: as above.
unsafe impl Sync for Handles {}

/// A balancer (on a runtime of its own, in the background) and the reporters, made once.
fn handles() -> &'static Handles {
    static HANDLES: OnceLock<Handles> = OnceLock::new();
    HANDLES.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let (fixture, server) = runtime.block_on(async {
            let fixture = Fixture::start().await;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let server = fixture
                .balancer
                .server(fixture.health.clone())
                .spawn(listener)
                .expect("serve the balancer");
            (fixture, server)
        });
        let address = server.local_addr();
        let balancer = CString::new(address.to_string()).expect("an address");
        let host = c"127.0.0.1";
        let mut reporter = ptr::null_mut();
        let mut empty = ptr::null_mut();
        let mut load = ptr::null_mut();
        let mut client = ptr::null_mut();
        // SAFETY: valid texts and out-pointers.
        unsafe {
            assert_eq!(
                quaestor_reporter_new(host.as_ptr(), 0, ptr::null(), ptr::null(), &mut reporter),
                QUAESTOR_RESULT_OK
            );
            assert_eq!(
                quaestor_reporter_new(host.as_ptr(), 0, ptr::null(), ptr::null(), &mut empty),
                QUAESTOR_RESULT_OK
            );
            assert_eq!(
                quaestor_reporter_add_service(reporter, c"Worker".as_ptr(), 4, &mut load),
                QUAESTOR_RESULT_OK
            );
            assert_eq!(
                quaestor_discovery_client_new(balancer.as_ptr(), ptr::null(), 5000, &mut client),
                QUAESTOR_RESULT_OK
            );
        }
        Handles {
            _runtime: runtime,
            _fixture: fixture,
            _server: server,
            reporter,
            empty,
            load,
            client,
            balancer,
        }
    })
}

/// The fuzz input taken apart.
struct Input {
    op: u8,
    flags: u8,
    number: u32,
    texts: Vec<CString>,
}

impl Input {
    fn parse(data: &[u8]) -> Option<Input> {
        let [op, flags, a, b, c, d, rest @ ..] = data else {
            return None;
        };
        let texts = rest
            .split(|&byte| byte == 0)
            .map(|text| CString::new(text).expect("no NUL inside"))
            .collect();
        Some(Input {
            op: *op,
            flags: *flags,
            number: u32::from_le_bytes([*a, *b, *c, *d]),
            texts,
        })
    }

    /// Text `n` (empty if the input has fewer), or NULL when flag bit `n` is set.
    fn text(&self, n: usize) -> *const c_char {
        if self.flags & (1 << n) != 0 {
            return ptr::null();
        }
        self.texts.get(n).map_or(c"".as_ptr(), |t| t.as_ptr())
    }

    /// Whether out-pointer `n` (flag bits 4 to 7) is to be NULL.
    fn null_out(&self, n: usize) -> bool {
        self.flags & (1 << (4 + n)) != 0
    }

    fn float(&self) -> f64 {
        f64::from(f32::from_bits(self.number))
    }
}

/// Whether `code` is one that a call may return, and not a panic.
fn check(call: &str, code: quaestor_result, allowed: &[quaestor_result]) {
    assert_ne!(code, QUAESTOR_RESULT_PANIC, "{call}: {}", last_error());
    assert!(
        code == QUAESTOR_RESULT_OK || allowed.contains(&code),
        "{call} returned {code:?}: {}",
        last_error()
    );
}

fn last_error() -> String {
    let mut buf = [0 as c_char; 1024];
    let mut written = 0usize;
    // SAFETY: the buffer holds its length; written is writable.
    let code = unsafe { quaestor_last_error_message(buf.as_mut_ptr(), buf.len(), &mut written) };
    if code != QUAESTOR_RESULT_OK {
        return format!("(last error: {code:?})");
    }
    // SAFETY: NUL-terminated on success.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// `quaestor_result_message` or `quaestor_last_error_message` into a buffer of the input's
/// length (0 to 255), or NULL, with `written` NULL or not.
fn message(input: &Input, last: bool) {
    const CANARY: c_char = 0x55;
    let len = (input.number >> 8) as usize & 0xFF;
    let mut buf = vec![CANARY; len + 1];
    let mut written = usize::MAX;
    let buf_ptr = if input.flags & 1 != 0 {
        ptr::null_mut()
    } else {
        buf.as_mut_ptr()
    };
    let written_ptr: *mut usize = if input.null_out(0) {
        ptr::null_mut()
    } else {
        &mut written
    };
    // SAFETY: `buf` holds `len` bytes (one more, as a canary); `written` is writable.
    let code = unsafe {
        if last {
            quaestor_last_error_message(buf_ptr, len, written_ptr)
        } else {
            quaestor_result_message(input.number, buf_ptr, len, written_ptr)
        }
    };
    check(
        "message",
        code,
        &[
            QUAESTOR_RESULT_NULL_PARAMETER,
            QUAESTOR_RESULT_INSUFFICIENT_SIZE,
        ],
    );
    assert_eq!(buf[len], CANARY, "wrote past the buffer");
    if code == QUAESTOR_RESULT_OK {
        assert!(written < len, "written {written} of {len}");
        assert_eq!(buf[written], 0);
        assert!(!buf[..written].contains(&0));
    } else {
        assert_eq!(written, usize::MAX, "wrote `written` on failure");
        assert!(buf[..len].iter().all(|&b| b == CANARY), "wrote on failure");
    }
}

/// A location list: read every item (and one past the end), then free it.
fn read_list(list: *mut quaestor_location_list) {
    // SAFETY: a live list, freed once at the end.
    unsafe {
        let len = quaestor_location_list_len(list);
        for index in 0..len {
            let host = quaestor_location_list_host(list, index);
            assert!(!host.is_null());
            assert!(!CStr::from_ptr(host).to_bytes().is_empty());
            assert_ne!(quaestor_location_list_port(list, index), 0);
        }
        assert!(quaestor_location_list_host(list, len).is_null());
        assert_eq!(quaestor_location_list_port(list, len), 0);
        quaestor_location_list_free(list);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let handles = handles();
    let bad_text = [
        QUAESTOR_RESULT_NULL_PARAMETER,
        QUAESTOR_RESULT_INVALID_UTF8,
        QUAESTOR_RESULT_INVALID_ARGUMENT,
    ];
    // SAFETY (every call below): texts are NULL or NUL-terminated CStrings alive for the call,
    // handles are live, out-pointers NULL or writable.
    unsafe {
        match input.op % 12 {
            0 => message(&input, false),
            1 => message(&input, true),
            2 => {
                // A client of any address and CA path: made and freed, never used (nothing
                // connects before the first call).
                let mut out = ptr::null_mut();
                let out_ptr = if input.null_out(0) {
                    ptr::null_mut()
                } else {
                    &mut out
                };
                let code = quaestor_discovery_client_new(
                    input.text(0),
                    input.text(1),
                    input.number,
                    out_ptr,
                );
                check("discovery_client_new", code, &bad_text);
                if code == QUAESTOR_RESULT_OK {
                    assert!(!out.is_null());
                    quaestor_discovery_client_free(out);
                } else {
                    assert!(out.is_null(), "out written on failure");
                }
            }
            3 | 4 => {
                let mut out = ptr::null_mut();
                let out_ptr = if input.null_out(0) {
                    ptr::null_mut()
                } else {
                    &mut out
                };
                let client = if input.null_out(1) {
                    ptr::null()
                } else {
                    handles.client
                };
                let max_count = input.number as i32;
                let code = if input.op % 12 == 3 {
                    quaestor_discovery_client_discover(
                        client,
                        input.text(0),
                        input.text(1),
                        max_count,
                        out_ptr,
                    )
                } else {
                    quaestor_discovery_client_discover_top(
                        client,
                        input.text(0),
                        input.text(1),
                        max_count,
                        out_ptr,
                    )
                };
                check("discovery_client_discover", code, &bad_text);
                if code == QUAESTOR_RESULT_OK {
                    read_list(out);
                } else {
                    assert!(out.is_null(), "out written on failure");
                }
            }
            5 => {
                // The one-shot call, to the balancer only (an address from the input would
                // be connected to).
                let mut out = ptr::null_mut();
                let out_ptr = if input.null_out(0) {
                    ptr::null_mut()
                } else {
                    &mut out
                };
                let code = quaestor_discover_top(
                    handles.balancer.as_ptr(),
                    input.text(0),
                    input.text(1),
                    input.number as i32,
                    5000,
                    out_ptr,
                );
                check("discover_top", code, &bad_text);
                if code == QUAESTOR_RESULT_OK {
                    read_list(out);
                }
            }
            6 => {
                // Services of any name (at most 5000 added in a run: each stays).
                static ADDED: std::sync::atomic::AtomicUsize =
                    std::sync::atomic::AtomicUsize::new(0);
                if ADDED.load(std::sync::atomic::Ordering::Relaxed) >= 5000 {
                    return;
                }
                let mut out = ptr::null_mut();
                let out_ptr = if input.null_out(0) {
                    ptr::null_mut()
                } else {
                    &mut out
                };
                let code = quaestor_reporter_add_service(
                    handles.reporter,
                    input.text(0),
                    input.number as i32,
                    out_ptr,
                );
                check(
                    "reporter_add_service",
                    code,
                    &[
                        QUAESTOR_RESULT_NULL_PARAMETER,
                        QUAESTOR_RESULT_INVALID_UTF8,
                        QUAESTOR_RESULT_INVALID_ARGUMENT,
                        QUAESTOR_RESULT_ALREADY_EXISTS,
                    ],
                );
                if code == QUAESTOR_RESULT_OK {
                    ADDED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    quaestor_service_load_free(out);
                }
            }
            7 => {
                let mut out = ptr::null_mut();
                let out_ptr = if input.null_out(0) {
                    ptr::null_mut()
                } else {
                    &mut out
                };
                let code = quaestor_reporter_service_load(handles.reporter, input.text(0), out_ptr);
                check(
                    "reporter_service_load",
                    code,
                    &[
                        QUAESTOR_RESULT_NULL_PARAMETER,
                        QUAESTOR_RESULT_INVALID_UTF8,
                        QUAESTOR_RESULT_NOT_FOUND,
                    ],
                );
                if code == QUAESTOR_RESULT_OK {
                    quaestor_service_load_free(out);
                }
                let code = quaestor_reporter_set_serving(
                    handles.reporter,
                    input.text(1),
                    input.number & 1 == 1,
                );
                check(
                    "reporter_set_serving",
                    code,
                    &[QUAESTOR_RESULT_INVALID_UTF8, QUAESTOR_RESULT_NOT_FOUND],
                );
                // Everything SERVING again, for the other calls.
                quaestor_reporter_set_serving(handles.reporter, ptr::null(), true);
            }
            8 => {
                let mut request = ptr::null_mut();
                let out_ptr = if input.null_out(0) {
                    ptr::null_mut()
                } else {
                    &mut request
                };
                let before = quaestor_service_load_current_requests(handles.load);
                let code = quaestor_service_load_start_request_as(
                    handles.load,
                    input.text(0),
                    input.text(1),
                    out_ptr,
                );
                check(
                    "start_request_as",
                    code,
                    &[QUAESTOR_RESULT_NULL_PARAMETER, QUAESTOR_RESULT_INVALID_UTF8],
                );
                if code == QUAESTOR_RESULT_OK {
                    assert_eq!(
                        quaestor_service_load_current_requests(handles.load),
                        before + 1
                    );
                    let _ = quaestor_request_cancelled(request);
                    quaestor_request_end(request);
                }
                assert_eq!(quaestor_service_load_current_requests(handles.load), before);
            }
            9 => {
                let value = input.float();
                let load = if input.null_out(0) {
                    ptr::null()
                } else {
                    handles.load.cast_const()
                };
                let allowed = [
                    QUAESTOR_RESULT_NULL_PARAMETER,
                    QUAESTOR_RESULT_INVALID_ARGUMENT,
                ];
                let code = match input.flags % 4 {
                    0 => quaestor_service_load_set_known_load_rate(load, value),
                    1 => quaestor_service_load_set_server_utilization(load, value),
                    2 => quaestor_service_load_set_memory_usage_percent(load, value),
                    _ => quaestor_service_load_set_capacity(load, input.number as i32),
                };
                check("service_load_set", code, &allowed);
                // Back to measured figures and a known capacity.
                quaestor_service_load_set_known_load_rate(handles.load, -1.0);
                quaestor_service_load_set_server_utilization(handles.load, -1.0);
                quaestor_service_load_set_memory_usage_percent(handles.load, -1.0);
                quaestor_service_load_set_capacity(handles.load, 4);
            }
            10 => {
                // Registration checks its arguments, then finds no service to register.
                let code = quaestor_reporter_register(
                    handles.empty,
                    input.text(0),
                    input.text(1),
                    input.text(2),
                    (input.number & 0xFFFF) as u16,
                    input.number >> 16,
                );
                check(
                    "reporter_register",
                    code,
                    &[
                        QUAESTOR_RESULT_NULL_PARAMETER,
                        QUAESTOR_RESULT_INVALID_UTF8,
                        QUAESTOR_RESULT_INVALID_ARGUMENT,
                        QUAESTOR_RESULT_INVALID_STATE,
                    ],
                );
                assert_ne!(code, QUAESTOR_RESULT_OK, "registered without services");
            }
            _ => {
                // A reporter with only one of the TLS files: refused before anything starts.
                let mut out = ptr::null_mut();
                let file = input.texts.get(1).map_or(c"".as_ptr(), |t| t.as_ptr());
                let code = if input.null_out(0) {
                    quaestor_reporter_new(input.text(0), 0, file, ptr::null(), &mut out)
                } else {
                    quaestor_reporter_new(input.text(0), 0, ptr::null(), file, &mut out)
                };
                check("reporter_new", code, &bad_text);
                assert_ne!(code, QUAESTOR_RESULT_OK, "a reporter with one TLS file");
                assert!(out.is_null());
            }
        }
    }
});
