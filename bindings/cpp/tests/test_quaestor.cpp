// Checks of quaestor.hpp against the real libquaestor: failures of the C API become
// quaestor::Error with the right result code, and the RAII types count and free as they
// should. Prints each failed check and exits 1 if any failed (run by ffi/tests/cpp.rs).

#include <quaestor.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <iostream>
#include <stdexcept>
#include <string>
#include <utility>

namespace {

int checks = 0;
int failures = 0;

void check(bool ok, const std::string& what) {
    ++checks;
    if (!ok) {
        ++failures;
        std::cerr << "FAILED: " << what << std::endl;
    }
}

// `body` throws a quaestor::Error with code `expected` (or `alternative`, if not OK) and a
// message that is not empty.
void expect_error(const std::string& what, const std::function<void()>& body,
                  quaestor_result expected, quaestor_result alternative = QUAESTOR_RESULT_OK) {
    ++checks;
    try {
        body();
    } catch (const quaestor::Error& e) {
        const bool right_code =
            e.code() == expected || (alternative != QUAESTOR_RESULT_OK && e.code() == alternative);
        if (!right_code || std::string(e.what()).empty()) {
            ++failures;
            std::cerr << "FAILED: " << what << ": expected result " << expected;
            if (alternative != QUAESTOR_RESULT_OK) {
                std::cerr << " or " << alternative;
            }
            std::cerr << ", got " << e.code() << " \"" << e.what() << "\"" << std::endl;
        } else {
            std::cout << "ok: " << what << ": " << e.code() << " \"" << e.what() << "\""
                      << std::endl;
        }
        return;
    } catch (const std::exception& e) {
        ++failures;
        std::cerr << "FAILED: " << what << ": not a quaestor::Error: " << e.what() << std::endl;
        return;
    }
    ++failures;
    std::cerr << "FAILED: " << what << ": no exception" << std::endl;
}

// `body` throws nothing.
void expect_no_error(const std::string& what, const std::function<void()>& body) {
    ++checks;
    try {
        body();
    } catch (const std::exception& e) {
        ++failures;
        std::cerr << "FAILED: " << what << ": " << e.what() << std::endl;
    }
}

// A loopback port that nobody listens on: bound, then closed again.
uint16_t closed_port() {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        throw std::runtime_error("socket failed");
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof addr;
    const bool bound = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
                       getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
    close(fd);
    if (!bound) {
        throw std::runtime_error("bind failed");
    }
    return ntohs(addr.sin_port);
}

void test_version() {
    const std::string version = quaestor::version();
    check(!version.empty() && version.find('.') != std::string::npos,
          "version() is MAJOR.MINOR.PATCH, got \"" + version + "\"");
}

void test_reporter_errors() {
    quaestor::Reporter reporter("127.0.0.1", 0);
    check(reporter.port() != 0, "the reporter serves on a port");

    quaestor::ServiceLoad load = reporter.add_service("Svc", 2);
    expect_error("adding a service twice", [&] { reporter.add_service("Svc", 2); },
                 QUAESTOR_RESULT_ALREADY_EXISTS);
    expect_error("adding a service without a name", [&] { reporter.add_service("", 2); },
                 QUAESTOR_RESULT_INVALID_ARGUMENT);
    expect_error("a service name with a NUL byte",
                 [&] { reporter.add_service(std::string("Sv\0c", 4), 2); },
                 QUAESTOR_RESULT_INVALID_ARGUMENT);
    expect_error("the load of a service never added", [&] { reporter.service_load("Nope"); },
                 QUAESTOR_RESULT_NOT_FOUND);
    expect_error("the health of a service never added",
                 [&] { reporter.set_serving("Nope", false); }, QUAESTOR_RESULT_NOT_FOUND);
    expect_no_error("set_serving of an added service", [&] { reporter.set_serving("Svc", false); });
    expect_no_error("set_all_serving", [&] { reporter.set_all_serving(true); });
    expect_no_error("deregister when not registered", [&] { reporter.deregister(); });

    // A second reporter on the same port: the port is in use.
    expect_error("a second reporter on the first one's port",
                 [&] { quaestor::Reporter second("127.0.0.1", reporter.port()); },
                 QUAESTOR_RESULT_IO);
    expect_error("TLS files that do not exist",
                 [] {
                     quaestor::Reporter tls("127.0.0.1", 0, "/nonexistent/cert.pem",
                                            "/nonexistent/key.pem");
                 },
                 QUAESTOR_RESULT_TLS);

    // A destroyed reporter has stopped serving: its port can be bound again at once.
    uint16_t freed_port = 0;
    {
        quaestor::Reporter short_lived("127.0.0.1", 0);
        freed_port = short_lived.port();
    }
    expect_no_error("a new reporter on the port of a destroyed one",
                    [&] { quaestor::Reporter again("127.0.0.1", freed_port); });

    // Registering needs services; a reporter without any says so before contacting etcd.
    quaestor::Reporter empty("127.0.0.1", 0);
    expect_error("registering a reporter without services",
                 [&] { empty.register_in_etcd("http://127.0.0.1:1", "127.0.0.1"); },
                 QUAESTOR_RESULT_INVALID_STATE);

    // The error is a std::runtime_error too.
    bool caught = false;
    try {
        reporter.service_load("Nope");
    } catch (const std::runtime_error& e) {
        caught = std::string(e.what()).find("Nope") != std::string::npos;
        if (!caught) {
            std::cerr << "message: " << e.what() << std::endl;
        }
    }
    check(caught, "quaestor::Error is a std::runtime_error whose message names the service");
}

void test_discover_unreachable() {
    const std::string balancer = "127.0.0.1:" + std::to_string(closed_port());
    expect_error("discover from a balancer nobody serves",
                 [&] { quaestor::discover(balancer, "Worker", 0, std::chrono::seconds(5)); },
                 QUAESTOR_RESULT_UNAVAILABLE, QUAESTOR_RESULT_TIMEOUT);
    expect_error("discover_top from a balancer nobody serves",
                 [&] { quaestor::discover_top(balancer, "Worker", 1, std::chrono::seconds(5)); },
                 QUAESTOR_RESULT_UNAVAILABLE, QUAESTOR_RESULT_TIMEOUT);
    expect_error("discover from a malformed address",
                 [&] { quaestor::discover("not an address", "Worker"); },
                 QUAESTOR_RESULT_INVALID_ARGUMENT);

    // A client is made without connecting; every call fails until its balancer answers.
    quaestor::DiscoveryClient client(balancer, std::chrono::seconds(5));
    for (int i = 0; i < 2; ++i) {
        expect_error("DiscoveryClient::discover from a balancer nobody serves",
                     [&] { client.discover("Worker"); }, QUAESTOR_RESULT_UNAVAILABLE,
                     QUAESTOR_RESULT_TIMEOUT);
        expect_error("DiscoveryClient::discover_top from a balancer nobody serves",
                     [&] { client.discover_top("Worker", 1); }, QUAESTOR_RESULT_UNAVAILABLE,
                     QUAESTOR_RESULT_TIMEOUT);
    }
    quaestor::DiscoveryClient moved = std::move(client);
    expect_error("DiscoveryClient from a malformed address",
                 [&] { quaestor::DiscoveryClient bad("not an address"); },
                 QUAESTOR_RESULT_INVALID_ARGUMENT);
}

void test_request_counting() {
    quaestor::Reporter reporter("127.0.0.1", 0);
    quaestor::ServiceLoad load = reporter.add_service("Counted", 4);
    quaestor::ServiceLoad other = reporter.service_load("Counted");
    check(load.current_requests() == 0, "no request in flight at start");
    {
        quaestor::RequestGuard guard = load.request();
        check(load.current_requests() == 1, "a RequestGuard counts one request");
        check(other.current_requests() == 1, "every handle of a service sees its requests");
        quaestor::RequestGuard moved = std::move(guard);
        check(load.current_requests() == 1, "moving a RequestGuard does not end its request");
        {
            auto second = other.request();
            check(load.current_requests() == 2, "two guards, two requests");
        }
        check(load.current_requests() == 1, "a destroyed guard ends its request");
        moved.end();
        check(load.current_requests() == 0, "RequestGuard::end ends the request");
    }
    check(load.current_requests() == 0, "an ended guard ends nothing more when destroyed");

    load.start_request();
    load.start_request();
    load.end_request();
    check(load.current_requests() == 1, "start_request/end_request count");
    load.end_request();

    expect_no_error("set_capacity", [&] { load.set_capacity(8); });
    expect_no_error("set_known_load_rate", [&] { load.set_known_load_rate(0.5); });
    expect_no_error("set_server_utilization", [&] { load.set_server_utilization(-1.0); });
    expect_no_error("set_memory_usage_percent", [&] { load.set_memory_usage_percent(42.5); });
    expect_no_error("set_memory_usage_percent(-1)", [&] { load.set_memory_usage_percent(-1.0); });
    expect_error("a memory usage above 100 percent",
                 [&] { load.set_memory_usage_percent(100.5); }, QUAESTOR_RESULT_INVALID_ARGUMENT);
    expect_no_error("ServiceLoad::set_serving", [&] { load.set_serving(false); });

    // Cancellable requests count like any request; Cancel itself is driven over gRPC by
    // cancel_worker.cpp.
    {
        quaestor::CancellableRequest request = load.request_as("alice", "prod");
        check(load.current_requests() == 1, "a CancellableRequest counts one request");
        check(!request.cancelled(), "not cancelled at start");
        quaestor::CancellableRequest moved = std::move(request);
        check(load.current_requests() == 1, "moving a CancellableRequest does not end it");
        check(!request.cancelled() && request.get() == nullptr, "a moved-from request is empty");  // NOLINT
        auto anonymous = other.request_as("", "");
        check(load.current_requests() == 2, "\"\" is a user name and an environment too");
        moved.end();
        check(load.current_requests() == 1, "CancellableRequest::end ends the request");
        moved.end();
        check(load.current_requests() == 1, "a second end does nothing");
    }
    check(load.current_requests() == 0, "a destroyed CancellableRequest ends its request");
    expect_error("a user name holding a NUL",
                 [&] { auto r = load.request_as(std::string("a\0b", 3), "prod"); },
                 QUAESTOR_RESULT_INVALID_ARGUMENT);

    // A moved-from handle counts nothing and its fallible calls fail.
    quaestor::ServiceLoad taken = std::move(load);
    check(taken.current_requests() == 0, "the moved-to handle works");
    check(load.current_requests() == -1, "a moved-from handle has no count");  // NOLINT
    load.start_request();  // NOLINT: does nothing
    check(taken.current_requests() == 0, "a moved-from handle does not count");
    expect_error("set_capacity on a moved-from handle", [&] { load.set_capacity(1); },
                 QUAESTOR_RESULT_NULL_PARAMETER);
    expect_error("request_as on a moved-from handle", [&] { auto r = load.request_as("u", "e"); },
                 QUAESTOR_RESULT_NULL_PARAMETER);

    // Handles outlive their reporter.
    quaestor::Reporter gone = std::move(reporter);
    { quaestor::Reporter dropped = std::move(gone); }
    check(reporter.port() == 0, "a moved-from reporter has no port");  // NOLINT
    auto late = taken.request();
    check(taken.current_requests() == 1, "a handle still counts after its reporter is gone");
    auto late_cancellable = taken.request_as("u", "e");
    check(taken.current_requests() == 2 && !late_cancellable.cancelled(),
          "a cancellable request starts after its reporter is gone");
}

}  // namespace

int main() {
    try {
        test_version();
        test_reporter_errors();
        test_discover_unreachable();
        test_request_counting();
    } catch (const std::exception& e) {
        ++failures;
        std::cerr << "FAILED: unexpected exception: " << e.what() << std::endl;
    }
    std::cout << checks << " checks, " << failures << " failed" << std::endl;
    return failures == 0 ? 0 : 1;
}
