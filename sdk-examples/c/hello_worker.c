/*
 * A hello-world worker in C that reports its load and health through libquaestor.
 *
 *   hello_worker PORT [ETCD_ENDPOINTS ADVERTISED_HOST]
 *
 * Serves health and load for the service "Worker" (4 requests at once) on 127.0.0.1:PORT
 * (0: a free port) and prints `listening on 127.0.0.1:PORT`. With etcd endpoints, it also
 * registers itself there, the reporter being its control endpoint.
 *
 * A real worker calls quaestor_service_load_start_request / _end_request around each
 * request it serves. This one takes them as commands on stdin, one per line, so that a test
 * (or you) can drive it: start, end, not-serving, serving, memory P (the host's memory is
 * reported as P percent in use; negative: measured), discover BALANCER (asks the balancer
 * at BALANCER, host:port, which worker of "Worker" to call, through one discovery client
 * kept for every such command, and prints `found HOST:PORT` or `found none`), quit; each is
 * answered `ok N`, N being the requests in flight. At the end of stdin (run by `quaestor cluster`, say) it waits
 * for SIGTERM or SIGINT. Either way it frees the reporter, which deregisters it and stops
 * the server gracefully.
 *
 * Build: cc -Wall -Wextra -o hello_worker hello_worker.c $(pkg-config --cflags --libs quaestor)
 */
#define _POSIX_C_SOURCE 200809L

#include <quaestor.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what, quaestor_result result) {
    char message[512];
    size_t written = 0;
    if (quaestor_last_error_message(message, sizeof message, &written) != QUAESTOR_RESULT_OK ||
        written == 0) {
        quaestor_result_message(result, message, sizeof message, &written);
    }
    fprintf(stderr, "hello_worker: %s: %s (%u)\n", what, message, (unsigned)result);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 2 && argc != 4) {
        fprintf(stderr, "usage: %s PORT [ETCD_ENDPOINTS ADVERTISED_HOST]\n", argv[0]);
        return 64;
    }
    char *end = NULL;
    long port = strtol(argv[1], &end, 10);
    if (*argv[1] == '\0' || *end != '\0' || port < 0 || port > 65535) {
        fprintf(stderr, "hello_worker: %s is not a port\n", argv[1]);
        return 64;
    }

    /* Block the stop signals before any thread starts, so that sigwait gets them. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);

    quaestor_reporter *reporter = NULL;
    quaestor_result result = quaestor_reporter_new("127.0.0.1", (uint16_t)port, NULL, NULL, &reporter);
    if (result != QUAESTOR_RESULT_OK) {
        return fail("cannot start the reporter", result);
    }
    quaestor_service_load *load = NULL;
    result = quaestor_reporter_add_service(reporter, "Worker", 4, &load);
    if (result != QUAESTOR_RESULT_OK) {
        quaestor_reporter_free(reporter);
        return fail("cannot add the service", result);
    }
    if (argc == 4) {
        result = quaestor_reporter_register(reporter, argv[2], NULL, argv[3], 0, 0);
        if (result != QUAESTOR_RESULT_OK) {
            quaestor_service_load_free(load);
            quaestor_reporter_free(reporter);
            return fail("cannot register in etcd", result);
        }
    }
    printf("listening on 127.0.0.1:%u\n", (unsigned)quaestor_reporter_port(reporter));
    fflush(stdout);

    quaestor_discovery_client *client = NULL;
    char line[256];
    int quit = 0;
    while (!quit && fgets(line, sizeof line, stdin) != NULL) {
        line[strcspn(line, "\r\n")] = '\0';
        if (strcmp(line, "start") == 0) {
            quaestor_service_load_start_request(load);
        } else if (strcmp(line, "end") == 0) {
            quaestor_service_load_end_request(load);
        } else if (strcmp(line, "serving") == 0 || strcmp(line, "not-serving") == 0) {
            result = quaestor_service_load_set_serving(load, strcmp(line, "serving") == 0);
            if (result != QUAESTOR_RESULT_OK) {
                fail("cannot set the health", result);
            }
        } else if (strncmp(line, "memory ", 7) == 0) {
            char *end = NULL;
            double percent = strtod(line + 7, &end);
            if (end == line + 7 || *end != '\0') {
                fprintf(stderr, "hello_worker: not a number: %s\n", line + 7);
                continue;
            }
            result = quaestor_service_load_set_memory_usage_percent(load, percent);
            if (result != QUAESTOR_RESULT_OK) {
                fail("cannot set the memory usage", result);
            }
        } else if (strncmp(line, "discover ", 9) == 0) {
            /* One client for every call: it keeps its connection to the balancer. */
            if (client == NULL) {
                result = quaestor_discovery_client_new(line + 9, NULL, 5000, &client);
                if (result != QUAESTOR_RESULT_OK) {
                    fail("cannot make a discovery client", result);
                    continue;
                }
            }
            quaestor_location_list *found = NULL;
            result = quaestor_discovery_client_discover_top(client, NULL, "Worker", 1, &found);
            if (result != QUAESTOR_RESULT_OK) {
                fail("cannot discover", result);
            } else if (quaestor_location_list_len(found) == 0) {
                printf("found none\n");
            } else {
                printf("found %s:%u\n", quaestor_location_list_host(found, 0),
                       (unsigned)quaestor_location_list_port(found, 0));
            }
            quaestor_location_list_free(found);
        } else if (strcmp(line, "quit") == 0) {
            quit = 1;
        } else {
            fprintf(stderr, "hello_worker: unknown command %s\n", line);
            continue;
        }
        printf("ok %d\n", quaestor_service_load_current_requests(load));
        fflush(stdout);
    }
    if (!quit) {
        int signal_number = 0;
        sigwait(&stop, &signal_number);
    }

    quaestor_discovery_client_free(client);
    quaestor_service_load_free(load);
    quaestor_reporter_free(reporter);
    return 0;
}
