//! `quaestor_reporter_register_with_credentials` against a real etcd with TLS (client
//! certificates required) and authentication on, called through the C ABI as a C program
//! would: the right credentials register, a wrong password says etcd refused the user.

use std::ffi::{CString, c_char};
use std::ptr;

use quaestor::*;
use quaestor_test_support::TestPki;
use quaestor_test_support::etcd::EtcdCluster;

fn text(value: &str) -> CString {
    CString::new(value).expect("no NUL")
}

fn path(value: &std::path::Path) -> CString {
    text(value.to_str().expect("UTF-8"))
}

/// The calling thread's last error message.
fn last_error() -> String {
    let mut buf = vec![0 as c_char; 1024];
    let mut written = 0usize;
    // SAFETY: `buf` holds `buf.len()` bytes, `written` is valid.
    let code = unsafe { quaestor_last_error_message(buf.as_mut_ptr(), buf.len(), &mut written) };
    assert_eq!(code, quaestor_result::QUAESTOR_RESULT_OK);
    let bytes: Vec<u8> = buf[..written].iter().map(|&c| c as u8).collect();
    String::from_utf8(bytes).expect("UTF-8")
}

/// A reporter on a free port of 127.0.0.1 with service `Worker`.
fn reporter() -> (*mut quaestor_reporter, *mut quaestor_service_load) {
    let host = text("127.0.0.1");
    let mut reporter = ptr::null_mut();
    // SAFETY: valid arguments; `reporter` is written on success.
    let code =
        unsafe { quaestor_reporter_new(host.as_ptr(), 0, ptr::null(), ptr::null(), &mut reporter) };
    assert_eq!(
        code,
        quaestor_result::QUAESTOR_RESULT_OK,
        "{}",
        last_error()
    );
    let service = text("Worker");
    let mut load = ptr::null_mut();
    // SAFETY: a live reporter, valid arguments.
    let code = unsafe { quaestor_reporter_add_service(reporter, service.as_ptr(), 4, &mut load) };
    assert_eq!(
        code,
        quaestor_result::QUAESTOR_RESULT_OK,
        "{}",
        last_error()
    );
    (reporter, load)
}

#[test]
fn registration_with_tls_and_credentials_and_a_refused_password() {
    let pki = TestPki::new();
    let mut etcd = EtcdCluster::single_tls((&pki).into());
    etcd.enable_auth();
    let endpoint = text(&etcd.endpoint(0));
    let host = text("127.0.0.1");
    let (ca, cert, key) = (path(&pki.ca), path(&pki.client_cert), path(&pki.client_key));
    let user = text(EtcdCluster::USER);
    let register = |reporter: *mut quaestor_reporter, password: &str| {
        let password = text(password);
        // SAFETY: a live reporter; every text NUL-terminated.
        unsafe {
            quaestor_reporter_register_with_credentials(
                reporter,
                endpoint.as_ptr(),
                ptr::null(),
                host.as_ptr(),
                0,
                0,
                ca.as_ptr(),
                cert.as_ptr(),
                key.as_ptr(),
                user.as_ptr(),
                password.as_ptr(),
            )
        }
    };

    let (refused, refused_load) = reporter();
    assert_eq!(
        register(refused, "wrong"),
        quaestor_result::QUAESTOR_RESULT_REFUSED
    );
    let message = last_error();
    assert!(
        message.contains("etcd refused user quaestor: authentication failed"),
        "{message}"
    );

    let (accepted, accepted_load) = reporter();
    assert_eq!(
        register(accepted, EtcdCluster::PASSWORD),
        quaestor_result::QUAESTOR_RESULT_OK,
        "{}",
        last_error()
    );
    // SAFETY: a live reporter.
    let port = unsafe { quaestor_reporter_port(accepted) };
    assert_eq!(
        etcd.get_prefix_keys("services/"),
        [format!("services//Worker/127.0.0.1/{port}/http")]
    );

    // Only one of user and password is a bad argument, not a call to etcd.
    // SAFETY: a live reporter; texts NUL-terminated, the others NULL.
    let half = unsafe {
        quaestor_reporter_register_with_credentials(
            refused,
            endpoint.as_ptr(),
            ptr::null(),
            host.as_ptr(),
            0,
            0,
            ptr::null(),
            ptr::null(),
            ptr::null(),
            user.as_ptr(),
            ptr::null(),
        )
    };
    assert_eq!(half, quaestor_result::QUAESTOR_RESULT_INVALID_ARGUMENT);

    // SAFETY: made above, freed once each.
    unsafe {
        quaestor_reporter_free(accepted);
        quaestor_reporter_free(refused);
        quaestor_service_load_free(accepted_load);
        quaestor_service_load_free(refused_load);
    }
    assert!(etcd.get_prefix_keys("services/").is_empty(), "deregistered");
}
