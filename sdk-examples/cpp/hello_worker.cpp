// A C++ worker that reports its load with quaestor, through the C++ wrapper quaestor.hpp.
//
//     hello_worker PORT [ETCD_ENDPOINTS ADVERTISED_HOST]
//
// Serves health and load of the service `Worker` (4 requests at once) on 127.0.0.1:PORT
// (0: a free port), registers itself in etcd when given its endpoints, prints
// `listening on 127.0.0.1:PORT`, then reads commands from stdin, one a line, answering each
// with `ok N` (N: requests in flight after it):
//   start        a request starts (and stays in flight)
//   end          a request ends
//   not-serving  the service turns NOT_SERVING
//   serving      the service turns SERVING again
//   memory P     the host's memory is reported as P percent in use (negative: measured)
//   discover B   asks the balancer at B (host:port) which worker of `Worker` to call, through
//                one DiscoveryClient kept for every such command; prints `found HOST:PORT`
//                or `found none`
//   quit         stop reporting and exit 0
// At the end of stdin it waits for SIGTERM or SIGINT, then does as `quit`.
//
// Build (as ffi/tests/cpp.rs does), with LIB the folder of libquaestor.so:
//     g++ -std=c++17 -I ffi/include -I bindings/cpp sdk-examples/cpp/hello_worker.cpp
//         -L LIB -lquaestor -Wl,-rpath,LIB -o hello_worker
//
// Try it: `quaestor load 127.0.0.1:PORT Worker`, `quaestor health 127.0.0.1:PORT Worker`.

#include <quaestor.hpp>

#include <signal.h>

#include <cstdint>
#include <cstring>
#include <exception>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

constexpr const char* kHost = "127.0.0.1";
constexpr const char* kService = "Worker";
constexpr int32_t kCapacity = 4;

// The port argument: a number 0-65535, or an exception.
uint16_t parse_port(const std::string& text) {
    std::size_t end = 0;
    const unsigned long value = std::stoul(text, &end, 10);
    if (end != text.size() || text[0] == '-' || value > 65535) {
        throw std::invalid_argument("not a port: " + text);
    }
    return static_cast<uint16_t>(value);
}

// The command line without surrounding whitespace (a CR included).
std::string trimmed(const std::string& line) {
    const char* space = " \t\r\n";
    const std::size_t first = line.find_first_not_of(space);
    if (first == std::string::npos) {
        return std::string();
    }
    return line.substr(first, line.find_last_not_of(space) - first + 1);
}

int run(int argc, char** argv, const sigset_t& stop_signals) {
    if (argc != 2 && argc != 4) {
        std::cerr << "usage: " << argv[0] << " PORT [ETCD_ENDPOINTS ADVERTISED_HOST]\n";
        return 1;
    }
    const uint16_t port = parse_port(argv[1]);
    const bool register_in_etcd = argc == 4;

    quaestor::Reporter reporter(kHost, port);
    quaestor::ServiceLoad load = reporter.add_service(kService, kCapacity);
    if (register_in_etcd) {
        reporter.register_in_etcd(argv[2], argv[3]);
    }
    std::cout << "listening on " << kHost << ':' << reporter.port() << std::endl;

    std::optional<quaestor::DiscoveryClient> client;  // made by the first `discover`
    bool quit = false;
    std::string line;
    while (!quit && std::getline(std::cin, line)) {
        const std::string command = trimmed(line);
        if (command.empty()) {
            continue;
        }
        if (command == "start") {
            load.start_request();
        } else if (command == "end") {
            load.end_request();
        } else if (command == "not-serving") {
            load.set_serving(false);
        } else if (command == "serving") {
            load.set_serving(true);
        } else if (command.rfind("memory ", 0) == 0) {
            load.set_memory_usage_percent(std::stod(command.substr(7)));
        } else if (command.rfind("discover ", 0) == 0) {
            if (!client) {
                client.emplace(command.substr(9));
            }
            const std::vector<quaestor::Location> found = client->discover_top(kService, 1);
            if (found.empty()) {
                std::cout << "found none" << std::endl;
            } else {
                std::cout << "found " << found[0].host << ':' << found[0].port << std::endl;
            }
        } else if (command == "quit") {
            quit = true;
        } else {
            std::cerr << "unknown command: " << command
                      << " (start, end, not-serving, serving, memory P, discover B, quit)"
                      << std::endl;
            continue;
        }
        std::cout << "ok " << load.current_requests() << std::endl;
    }

    if (!quit) {
        // End of stdin: serve on until told to stop. The signals are blocked in every thread
        // (see main), so they wait here for sigwait rather than ending the process.
        int signal_number = 0;
        const int error = sigwait(&stop_signals, &signal_number);
        if (error != 0) {
            std::cerr << "sigwait: " << std::strerror(error) << std::endl;
            return 1;
        }
    }

    // Deregister first, so that a failure is seen (the reporter's destructor deregisters too,
    // but has no way to say it failed); the destructors then stop the reporter.
    if (register_in_etcd) {
        reporter.deregister();
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    // Block SIGTERM and SIGINT before libquaestor starts its threads, which inherit the mask:
    // no thread takes them, and sigwait receives them.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    const int error = pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    if (error != 0) {
        std::cerr << "pthread_sigmask: " << std::strerror(error) << std::endl;
        return 1;
    }

    try {
        return run(argc, argv, stop_signals);
    } catch (const quaestor::Error& e) {
        std::cerr << "hello_worker: " << e.what() << " (result " << e.code() << ")" << std::endl;
    } catch (const std::exception& e) {
        std::cerr << "hello_worker: " << e.what() << std::endl;
    }
    return 1;
}
