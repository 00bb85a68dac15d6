// quaestor.hpp: a header-only C++17 wrapper over libquaestor's C API (quaestor.h).
//
// Every object owns its C handle through a std::unique_ptr with the matching `_free` as its
// deleter, so objects are move-only and free their handle exactly once. A failing C call
// becomes a `quaestor::Error` carrying the call's `quaestor_result` and the library's message
// for it.
//
//     quaestor::Reporter reporter("127.0.0.1", 0);
//     quaestor::ServiceLoad load = reporter.add_service("Worker", 4);
//     {
//         auto request = load.request();  // counted as in flight until it goes out of scope
//         ...
//     }
//
// Build: c++ -std=c++17 -I<dir of quaestor.h> -I<dir of quaestor.hpp> ... -lquaestor
//
// Threads: every object may be used from several threads at once, as in the C API, except
// that destroying or moving from it must be the last thing done with it.

#ifndef QUAESTOR_HPP
#define QUAESTOR_HPP

#include <quaestor.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace quaestor {

// A failed libquaestor call: `code()` says what kind of failure, `what()` the details.
class Error : public std::runtime_error {
public:
    Error(quaestor_result code, const std::string& message)
        : std::runtime_error(message), code_(code) {}

    quaestor_result code() const noexcept { return code_; }

private:
    quaestor_result code_;
};

namespace detail {

// Reads text written by `write(buf, len, &written)` (quaestor_result_message or
// quaestor_last_error_message), growing the buffer while it is too small. The C API does not
// say how large the text is when the buffer is too small, hence the doubling. Empty if the
// text cannot be read.
template <typename Write>
std::string read_text(Write write) {
    std::vector<char> buf(256);
    for (;;) {
        std::size_t written = 0;
        const quaestor_result result = write(buf.data(), buf.size(), &written);
        if (result == QUAESTOR_RESULT_OK) {
            return std::string(buf.data(), written < buf.size() ? written : buf.size() - 1);
        }
        if (result != QUAESTOR_RESULT_INSUFFICIENT_SIZE || buf.size() >= (std::size_t{1} << 20)) {
            return std::string();
        }
        buf.resize(buf.size() * 2);
    }
}

// The text of a result code.
inline std::string result_text(quaestor_result code) {
    return read_text([code](char* buf, std::size_t len, std::size_t* written) {
        return quaestor_result_message(static_cast<uint32_t>(code), buf, len, written);
    });
}

// The error to throw for `code`, which the calling thread's last libquaestor call returned.
// It must be made before any other libquaestor call on this thread: the details are the
// thread's last error message, read first (quaestor_result_message could replace it).
inline Error make_error(quaestor_result code, const char* what) {
    std::string detail = read_text([](char* buf, std::size_t len, std::size_t* written) {
        return quaestor_last_error_message(buf, len, written);
    });
    if (detail.empty()) {
        detail = result_text(code);
    }
    if (detail.empty()) {
        detail = "libquaestor result " + std::to_string(static_cast<uint32_t>(code));
    }
    return Error(code, std::string(what) + ": " + detail);
}

// Throws unless `code` is OK.
inline void check(quaestor_result code, const char* what) {
    if (code != QUAESTOR_RESULT_OK) {
        throw make_error(code, what);
    }
}

// The C string for `text`; throws INVALID_ARGUMENT if it holds a NUL (the C API would see
// only the part before it).
inline const char* c_text(const std::string& text, const char* what) {
    if (text.find('\0') != std::string::npos) {
        throw Error(QUAESTOR_RESULT_INVALID_ARGUMENT, std::string(what) + ": text holds a NUL byte");
    }
    return text.c_str();
}

// Like c_text, but "" is NULL (the C API's "not given").
inline const char* optional_c_text(const std::string& text, const char* what) {
    return text.empty() ? nullptr : c_text(text, what);
}

struct ReporterDeleter {
    void operator()(quaestor_reporter* reporter) const noexcept { quaestor_reporter_free(reporter); }
};

struct ServiceLoadDeleter {
    void operator()(quaestor_service_load* load) const noexcept { quaestor_service_load_free(load); }
};

struct RequestDeleter {
    void operator()(quaestor_request* request) const noexcept { quaestor_request_end(request); }
};

struct LocationListDeleter {
    void operator()(quaestor_location_list* list) const noexcept {
        quaestor_location_list_free(list);
    }
};

struct DiscoveryClientDeleter {
    void operator()(quaestor_discovery_client* client) const noexcept {
        quaestor_discovery_client_free(client);
    }
};

}  // namespace detail

// The library's version (MAJOR.MINOR.PATCH).
inline std::string version() {
    const char* text = quaestor_version();
    return text != nullptr ? std::string(text) : std::string();
}

class ServiceLoad;

// One request in flight: made by ServiceLoad::request(), it ends the request when destroyed
// (also when an exception leaves its scope). Move-only; the ServiceLoad it came from (or the
// one that was moved from it) must outlive it.
class [[nodiscard]] RequestGuard {
public:
    RequestGuard(RequestGuard&& other) noexcept : load_(std::exchange(other.load_, nullptr)) {}
    RequestGuard& operator=(RequestGuard&& other) noexcept {
        if (this != &other) {
            end();
            load_ = std::exchange(other.load_, nullptr);
        }
        return *this;
    }
    RequestGuard(const RequestGuard&) = delete;
    RequestGuard& operator=(const RequestGuard&) = delete;
    ~RequestGuard() { end(); }

    // Ends the request now rather than at destruction (once; later calls do nothing).
    void end() noexcept {
        if (load_ != nullptr) {
            quaestor_service_load_end_request(std::exchange(load_, nullptr));
        }
    }

private:
    friend class ServiceLoad;
    explicit RequestGuard(const quaestor_service_load* load) noexcept : load_(load) {
        quaestor_service_load_start_request(load_);
    }

    const quaestor_service_load* load_;
};

// One request started on behalf of a user in an environment (ServiceLoad::request_as): it
// counts as in flight until it is destroyed or end()ed, and the reporter's
// ProcessAdministrationGrpc/Cancel for that user name and environment makes cancelled() true.
// Move-only; it stays valid after its ServiceLoad and Reporter are destroyed.
class [[nodiscard]] CancellableRequest {
public:
    // Adopts `request` (from quaestor_service_load_start_request_as); it ends with this object.
    explicit CancellableRequest(quaestor_request* request) noexcept : handle_(request) {}

    // True once a Cancel of this request's user name and environment arrived (one atomic
    // read: poll it between steps of the work). False after end().
    bool cancelled() const noexcept { return quaestor_request_cancelled(handle_.get()); }

    // Ends the request now rather than at destruction (once; later calls do nothing).
    void end() noexcept { handle_.reset(); }

    // The C handle (still owned by this object; NULL once ended).
    const quaestor_request* get() const noexcept { return handle_.get(); }

private:
    std::unique_ptr<quaestor_request, detail::RequestDeleter> handle_;
};

// One service of a reporter: count its requests here (start_request/end_request or
// request()), set its capacity, load figures and health. Get it from Reporter::add_service
// or Reporter::service_load. It stays usable after its Reporter is destroyed (its reports then
// go nowhere). A moved-from ServiceLoad counts nothing, and its fallible calls throw
// (NULL_PARAMETER).
class ServiceLoad {
public:
    // Adopts `load` (from quaestor_reporter_add_service or _service_load); it is freed with
    // this object.
    explicit ServiceLoad(quaestor_service_load* load) noexcept : handle_(load) {}

    ServiceLoad(ServiceLoad&&) noexcept = default;
    ServiceLoad& operator=(ServiceLoad&&) noexcept = default;
    ServiceLoad(const ServiceLoad&) = delete;
    ServiceLoad& operator=(const ServiceLoad&) = delete;
    ~ServiceLoad() = default;

    // One request has started (one atomic operation).
    void start_request() noexcept { quaestor_service_load_start_request(handle_.get()); }

    // One request has ended (pair it with start_request).
    void end_request() noexcept { quaestor_service_load_end_request(handle_.get()); }

    // Starts a request that ends when the returned guard is destroyed.
    RequestGuard request() noexcept { return RequestGuard(handle_.get()); }

    // Starts a request on behalf of `user_name` in `environment` ("" is a valid value) that
    // the reporter's Cancel for exactly that user name and environment marks cancelled; it
    // ends when the returned object is destroyed. Throws Error (INVALID_ARGUMENT for text
    // holding a NUL, NULL_PARAMETER on a moved-from ServiceLoad).
    CancellableRequest request_as(const std::string& user_name, const std::string& environment) {
        quaestor_request* raw = nullptr;
        detail::check(quaestor_service_load_start_request_as(
                          handle_.get(), detail::c_text(user_name, "user_name"),
                          detail::c_text(environment, "environment"), &raw),
                      "quaestor_service_load_start_request_as");
        return CancellableRequest(raw);
    }

    // Requests in flight now (-1 for a moved-from object).
    int32_t current_requests() const noexcept {
        return quaestor_service_load_current_requests(handle_.get());
    }

    // The requests this service takes at once (the reported request_capacity).
    void set_capacity(int32_t capacity) {
        detail::check(quaestor_service_load_set_capacity(handle_.get(), capacity),
                      "quaestor_service_load_set_capacity");
    }

    // A load figure computed by the worker itself; negative or NaN: not set.
    void set_known_load_rate(double rate) {
        detail::check(quaestor_service_load_set_known_load_rate(handle_.get(), rate),
                      "quaestor_service_load_set_known_load_rate");
    }

    // Fixes the reported server utilisation (1.0 = all cores busy); negative or NaN: measure
    // this process's CPU use.
    void set_server_utilization(double utilization) {
        detail::check(quaestor_service_load_set_server_utilization(handle_.get(), utilization),
                      "quaestor_service_load_set_server_utilization");
    }

    // Fixes the reported host memory usage in percent (0 to 100); negative or NaN: read the
    // host's memory at each report. Above 100 or infinite: an Error (INVALID_ARGUMENT).
    void set_memory_usage_percent(double percent) {
        detail::check(quaestor_service_load_set_memory_usage_percent(handle_.get(), percent),
                      "quaestor_service_load_set_memory_usage_percent");
    }

    // Turns this service SERVING or NOT_SERVING.
    void set_serving(bool serving) {
        detail::check(quaestor_service_load_set_serving(handle_.get(), serving),
                      "quaestor_service_load_set_serving");
    }

    // The C handle (still owned by this object).
    const quaestor_service_load* get() const noexcept { return handle_.get(); }

private:
    std::unique_ptr<quaestor_service_load, detail::ServiceLoadDeleter> handle_;
};

// Health and load reporting of the worker's services on a port of its own, and the worker's
// registration in etcd. Destroying it deregisters the worker and stops serving (waiting up to
// a few seconds for calls in flight).
class Reporter {
public:
    // Serves in plain text on host:port (port 0: a free port, see port()).
    Reporter(const std::string& host, uint16_t port)
        : Reporter(Make{}, host, port, nullptr, nullptr) {}

    // Serves with TLS: the certificate chain and private key are PEM files.
    Reporter(const std::string& host, uint16_t port, const std::string& cert_pem_path,
             const std::string& key_pem_path)
        : Reporter(Make{}, host, port, detail::c_text(cert_pem_path, "cert_pem_path"),
                   detail::c_text(key_pem_path, "key_pem_path")) {}

    Reporter(Reporter&&) noexcept = default;
    Reporter& operator=(Reporter&&) noexcept = default;
    Reporter(const Reporter&) = delete;
    Reporter& operator=(const Reporter&) = delete;
    ~Reporter() = default;

    // The port it serves on (0 for a moved-from object).
    uint16_t port() const noexcept { return quaestor_reporter_port(handle_.get()); }

    // Reports a new service taking `capacity` requests at once (-1: unknown), SERVING.
    ServiceLoad add_service(const std::string& name, int32_t capacity) {
        quaestor_service_load* load = nullptr;
        detail::check(quaestor_reporter_add_service(handle_.get(), detail::c_text(name, "service"),
                                                    capacity, &load),
                      "quaestor_reporter_add_service");
        return ServiceLoad(load);
    }

    // Another handle of a service added before.
    ServiceLoad service_load(const std::string& name) {
        quaestor_service_load* load = nullptr;
        detail::check(quaestor_reporter_service_load(handle_.get(), detail::c_text(name, "service"),
                                                     &load),
                      "quaestor_reporter_service_load");
        return ServiceLoad(load);
    }

    // Turns one service SERVING or NOT_SERVING ("" : every service, as set_all_serving).
    void set_serving(const std::string& service, bool serving) {
        detail::check(quaestor_reporter_set_serving(handle_.get(),
                                                    detail::c_text(service, "service"), serving),
                      "quaestor_reporter_set_serving");
    }

    // Turns every service and the worker as a whole SERVING or NOT_SERVING.
    void set_all_serving(bool serving) {
        detail::check(quaestor_reporter_set_serving(handle_.get(), nullptr, serving),
                      "quaestor_reporter_set_serving");
    }

    // Registers every service added so far in etcd (`etcd_endpoints`: comma-separated client
    // URLs) as served at advertised_host:service_port (0: the reporter's port), with the
    // reporter as control endpoint, in `scope` ("": the default scope), on a lease of
    // `lease_ttl_seconds` (0: the library's default) kept alive in the background.
    void register_in_etcd(const std::string& etcd_endpoints, const std::string& advertised_host,
                          uint16_t service_port = 0, const std::string& scope = "",
                          uint32_t lease_ttl_seconds = 0) {
        detail::check(
            quaestor_reporter_register(handle_.get(),
                                       detail::c_text(etcd_endpoints, "etcd_endpoints"),
                                       detail::optional_c_text(scope, "scope"),
                                       detail::c_text(advertised_host, "advertised_host"),
                                       service_port, lease_ttl_seconds),
            "quaestor_reporter_register");
    }

    // Removes the worker's registrations; nothing to do if not registered.
    void deregister() {
        detail::check(quaestor_reporter_deregister(handle_.get()), "quaestor_reporter_deregister");
    }

    // The C handle (still owned by this object).
    const quaestor_reporter* get() const noexcept { return handle_.get(); }

private:
    struct Make {};  // tells the constructor below from the public ones

    Reporter(Make, const std::string& host, uint16_t port, const char* cert, const char* key) {
        quaestor_reporter* reporter = nullptr;
        detail::check(
            quaestor_reporter_new(detail::c_text(host, "host"), port, cert, key, &reporter),
            "quaestor_reporter_new");
        handle_.reset(reporter);
    }

    std::unique_ptr<quaestor_reporter, detail::ReporterDeleter> handle_;
};

// A worker a balancer offered.
struct Location {
    std::string host;
    uint16_t port;
};

namespace detail {

using DiscoverFunction = quaestor_result (*)(const char*, const char*, const char*, int32_t,
                                             uint32_t, quaestor_location_list**);

// A timeout in whole milliseconds, as the C API takes it (0 or less: 0, the smallest).
inline uint32_t timeout_ms(std::chrono::milliseconds timeout) {
    const auto count = timeout.count();
    return count <= 0 ? 0
           : static_cast<unsigned long long>(count) > std::numeric_limits<uint32_t>::max()
               ? std::numeric_limits<uint32_t>::max()
               : static_cast<uint32_t>(count);
}

// The locations of a list a discovery call answered with; frees the list.
inline std::vector<Location> locations(quaestor_location_list* raw) {
    const std::unique_ptr<quaestor_location_list, LocationListDeleter> list(raw);
    std::vector<Location> found;
    const std::size_t len = quaestor_location_list_len(list.get());
    found.reserve(len);
    for (std::size_t i = 0; i < len; ++i) {
        const char* host = quaestor_location_list_host(list.get(), i);
        found.push_back(Location{host != nullptr ? std::string(host) : std::string(),
                                 quaestor_location_list_port(list.get(), i)});
    }
    return found;
}

inline std::vector<Location> discover_with(DiscoverFunction function, const char* what,
                                           const std::string& balancer, const std::string& service,
                                           int32_t max_count, std::chrono::milliseconds timeout,
                                           const std::string& scope) {
    quaestor_location_list* raw = nullptr;
    check(function(c_text(balancer, "balancer_address"), optional_c_text(scope, "scope"),
                   c_text(service, "service"), max_count, timeout_ms(timeout), &raw),
          what);
    return locations(raw);
}

}  // namespace detail

// The healthy workers of `service` in `scope` ("": the default scope) that the balancer at
// `balancer` (host:port or http://host:port) knows, at most `max_count` (<= 0: all), in random
// order; waits at most `timeout`. An unknown service gives an empty list.
inline std::vector<Location> discover(const std::string& balancer, const std::string& service,
                                      int32_t max_count = 0,
                                      std::chrono::milliseconds timeout = std::chrono::seconds(5),
                                      const std::string& scope = "") {
    return detail::discover_with(&quaestor_discover, "quaestor_discover", balancer, service,
                                 max_count, timeout, scope);
}

// As discover, but the workers that report load, least loaded first (max_count 1: "which
// worker should I call now?").
inline std::vector<Location> discover_top(const std::string& balancer, const std::string& service,
                                          int32_t max_count = 0,
                                          std::chrono::milliseconds timeout = std::chrono::seconds(5),
                                          const std::string& scope = "") {
    return detail::discover_with(&quaestor_discover_top, "quaestor_discover_top", balancer,
                                 service, max_count, timeout, scope);
}

// A client of one balancer that keeps its connection between calls (connecting on the first
// call, and again after a failure): for code that asks often. Move-only; one client may be
// used from several threads at once.
class DiscoveryClient {
public:
    // `balancer`: host:port, http://host:port or https://host:port; `timeout` bounds connecting
    // and each call; `ca_pem_path`: the CA certificate (PEM) of a balancer serving TLS ("":
    // plain text). Nothing is connected yet. Throws Error (INVALID_ARGUMENT: bad address).
    explicit DiscoveryClient(const std::string& balancer,
                             std::chrono::milliseconds timeout = std::chrono::seconds(5),
                             const std::string& ca_pem_path = "") {
        quaestor_discovery_client* raw = nullptr;
        detail::check(quaestor_discovery_client_new(detail::c_text(balancer, "balancer_address"),
                                                    detail::optional_c_text(ca_pem_path, "ca_pem_path"),
                                                    detail::timeout_ms(timeout), &raw),
                      "quaestor_discovery_client_new");
        handle_.reset(raw);
    }

    // As quaestor::discover, over this client's connection.
    std::vector<Location> discover(const std::string& service, int32_t max_count = 0,
                                   const std::string& scope = "") const {
        return ask(&quaestor_discovery_client_discover, "quaestor_discovery_client_discover",
                   service, max_count, scope);
    }

    // As quaestor::discover_top, over this client's connection.
    std::vector<Location> discover_top(const std::string& service, int32_t max_count = 0,
                                       const std::string& scope = "") const {
        return ask(&quaestor_discovery_client_discover_top,
                   "quaestor_discovery_client_discover_top", service, max_count, scope);
    }

private:
    using Function = quaestor_result (*)(const quaestor_discovery_client*, const char*,
                                         const char*, int32_t, quaestor_location_list**);

    std::vector<Location> ask(Function function, const char* what, const std::string& service,
                              int32_t max_count, const std::string& scope) const {
        quaestor_location_list* raw = nullptr;
        detail::check(function(handle_.get(), detail::optional_c_text(scope, "scope"),
                               detail::c_text(service, "service"), max_count, &raw),
                      what);
        return detail::locations(raw);
    }

    std::unique_ptr<quaestor_discovery_client, detail::DiscoveryClientDeleter> handle_;
};

}  // namespace quaestor

#endif  // QUAESTOR_HPP
