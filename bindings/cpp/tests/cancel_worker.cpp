// A reporter whose requests are started on behalf of users in environments
// (quaestor::ServiceLoad::request_as), driven over stdin by ffi/tests/cpp.rs, which calls the
// reporter's ProcessAdministrationGrpc/Cancel over real gRPC in between (the protocol is in
// ffi/tests/common/cancel.rs).

#include <quaestor.hpp>

#include <iostream>
#include <sstream>
#include <string>
#include <vector>

int main() {
    try {
        quaestor::Reporter reporter("127.0.0.1", 0);
        quaestor::ServiceLoad load = reporter.add_service("Worker", 4);
        std::cout << "listening on 127.0.0.1:" << reporter.port() << std::endl;
        std::vector<quaestor::CancellableRequest> requests;
        std::string line;
        while (std::getline(std::cin, line)) {
            std::istringstream words(line);
            std::string command;
            words >> command;
            if (command == "start") {
                std::string user, environment;
                words >> user >> environment;
                requests.push_back(load.request_as(user, environment));
                std::cout << "ok " << load.current_requests() << std::endl;
            } else if (command == "cancelled") {
                std::size_t index = 0;
                words >> index;
                std::cout << "ok " << (requests.at(index).cancelled() ? 1 : 0) << std::endl;
            } else if (command == "end") {
                std::size_t index = 0;
                words >> index;
                requests.at(index).end();
                std::cout << "ok " << load.current_requests() << std::endl;
            } else if (command == "quit") {
                break;
            } else {
                std::cerr << "unknown command: " << line << std::endl;
                return 64;
            }
        }
        requests.clear();
        return load.current_requests() == 0 ? 0 : 1;
    } catch (const std::exception& e) {
        std::cerr << "cancel_worker: " << e.what() << std::endl;
        return 1;
    }
}
