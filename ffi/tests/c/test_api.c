/*
 * libquaestor's C API under bad input: every documented code, no crash, out-parameters
 * untouched on failure. Built with -Wall -Wextra -Werror and run under AddressSanitizer by
 * ffi/tests/c.rs. Prints each failed check and exits 1 if any failed.
 */
#include <quaestor.h>

#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures = 0;

#define CHECK(condition)                                                        \
    do {                                                                        \
        if (!(condition)) {                                                     \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #condition); \
            failures++;                                                         \
        }                                                                       \
    } while (0)

#define EXPECT(call, code)                                                      \
    do {                                                                        \
        quaestor_result got_ = (call);                                          \
        if (got_ != (code)) {                                                   \
            char why_[256] = "";                                                \
            size_t n_ = 0;                                                      \
            quaestor_last_error_message(why_, sizeof why_, &n_);                \
            fprintf(stderr, "%s:%d: %s gave %u, expected %u (%s)\n", __FILE__, __LINE__, #call, \
                    (unsigned)got_, (unsigned)(code), why_);                    \
            failures++;                                                         \
        }                                                                       \
    } while (0)

static const char NOT_UTF8[] = {'W', (char)0xff, 'x', 0};

static void messages(void) {
    char buf[256];
    size_t written = 12345;
    EXPECT(quaestor_result_message(QUAESTOR_RESULT_IO, buf, sizeof buf, &written), QUAESTOR_RESULT_OK);
    CHECK(written == strlen(buf) && strstr(buf, "port in use") != NULL);
    EXPECT(quaestor_result_message(999999, buf, sizeof buf, &written), QUAESTOR_RESULT_OK);
    CHECK(strcmp(buf, "unknown result code") == 0);
    /* Too small: nothing written, not even the NUL. */
    char small[4] = {'x', 'x', 'x', 'x'};
    written = 777;
    EXPECT(quaestor_result_message(QUAESTOR_RESULT_OK, small, 2, &written), QUAESTOR_RESULT_INSUFFICIENT_SIZE);
    CHECK(small[0] == 'x' && written == 777);
    EXPECT(quaestor_result_message(QUAESTOR_RESULT_OK, NULL, 10, &written), QUAESTOR_RESULT_NULL_PARAMETER);
    EXPECT(quaestor_result_message(QUAESTOR_RESULT_OK, buf, sizeof buf, NULL), QUAESTOR_RESULT_NULL_PARAMETER);
    CHECK(strlen(quaestor_version()) >= 5);
}

static void reporter_and_loads(void) {
    quaestor_reporter *sentinel = (quaestor_reporter *)&failures;
    quaestor_reporter *reporter = sentinel;
    EXPECT(quaestor_reporter_new(NULL, 0, NULL, NULL, &reporter), QUAESTOR_RESULT_NULL_PARAMETER);
    EXPECT(quaestor_reporter_new(NOT_UTF8, 0, NULL, NULL, &reporter), QUAESTOR_RESULT_INVALID_UTF8);
    EXPECT(quaestor_reporter_new("127.0.0.1", 0, "cert.pem", NULL, &reporter), QUAESTOR_RESULT_INVALID_ARGUMENT);
    EXPECT(quaestor_reporter_new("127.0.0.1", 0, "/nonexistent/cert.pem", "/nonexistent/key.pem", &reporter),
           QUAESTOR_RESULT_TLS);
    EXPECT(quaestor_reporter_new("no-such-host.invalid", 0, NULL, NULL, &reporter), QUAESTOR_RESULT_INVALID_ARGUMENT);
    EXPECT(quaestor_reporter_new("127.0.0.1", 0, NULL, NULL, NULL), QUAESTOR_RESULT_NULL_PARAMETER);
    CHECK(reporter == sentinel); /* untouched by every failure */

    EXPECT(quaestor_reporter_new("127.0.0.1", 0, NULL, NULL, &reporter), QUAESTOR_RESULT_OK);
    /* The library ignores SIGPIPE (the program had none of its own): a balancer closing its
       connection while the reporter writes must not end the worker. */
    struct sigaction pipe_action;
    CHECK(sigaction(SIGPIPE, NULL, &pipe_action) == 0 && pipe_action.sa_handler == SIG_IGN);
    uint16_t port = quaestor_reporter_port(reporter);
    CHECK(port != 0);
    CHECK(quaestor_reporter_port(NULL) == 0);

    /* The same port again: in use. */
    quaestor_reporter *second = NULL;
    EXPECT(quaestor_reporter_new("127.0.0.1", port, NULL, NULL, &second), QUAESTOR_RESULT_IO);
    CHECK(second == NULL);

    quaestor_service_load *load = NULL;
    EXPECT(quaestor_reporter_add_service(reporter, "", 4, &load), QUAESTOR_RESULT_INVALID_ARGUMENT);
    EXPECT(quaestor_reporter_add_service(reporter, NOT_UTF8, 4, &load), QUAESTOR_RESULT_INVALID_UTF8);
    EXPECT(quaestor_reporter_add_service(NULL, "Worker", 4, &load), QUAESTOR_RESULT_NULL_PARAMETER);
    EXPECT(quaestor_reporter_add_service(reporter, "Worker", 4, NULL), QUAESTOR_RESULT_NULL_PARAMETER);
    CHECK(load == NULL);
    EXPECT(quaestor_reporter_add_service(reporter, "Worker", 4, &load), QUAESTOR_RESULT_OK);
    quaestor_service_load *again = NULL;
    EXPECT(quaestor_reporter_add_service(reporter, "Worker", 4, &again), QUAESTOR_RESULT_ALREADY_EXISTS);
    EXPECT(quaestor_reporter_service_load(reporter, "Nope", &again), QUAESTOR_RESULT_NOT_FOUND);
    CHECK(again == NULL);
    EXPECT(quaestor_reporter_service_load(reporter, "Worker", &again), QUAESTOR_RESULT_OK);

    /* The hot path: one counter, seen through both handles. */
    quaestor_service_load_start_request(load);
    quaestor_service_load_start_request(again);
    CHECK(quaestor_service_load_current_requests(load) == 2);
    quaestor_service_load_end_request(load);
    quaestor_service_load_end_request(again);
    CHECK(quaestor_service_load_current_requests(again) == 0);
    quaestor_service_load_start_request(NULL); /* nothing */
    quaestor_service_load_end_request(NULL);
    CHECK(quaestor_service_load_current_requests(NULL) == -1);

    EXPECT(quaestor_service_load_set_capacity(load, 8), QUAESTOR_RESULT_OK);
    EXPECT(quaestor_service_load_set_known_load_rate(load, 0.5), QUAESTOR_RESULT_OK);
    EXPECT(quaestor_service_load_set_server_utilization(load, -1.0), QUAESTOR_RESULT_OK);
    EXPECT(quaestor_service_load_set_memory_usage_percent(load, 42.5), QUAESTOR_RESULT_OK);
    EXPECT(quaestor_service_load_set_memory_usage_percent(load, -1.0), QUAESTOR_RESULT_OK);
    EXPECT(quaestor_service_load_set_memory_usage_percent(load, NAN), QUAESTOR_RESULT_OK);
    EXPECT(quaestor_service_load_set_memory_usage_percent(load, 100.5), QUAESTOR_RESULT_INVALID_ARGUMENT);
    EXPECT(quaestor_service_load_set_memory_usage_percent(load, INFINITY), QUAESTOR_RESULT_INVALID_ARGUMENT);
    EXPECT(quaestor_service_load_set_memory_usage_percent(NULL, 1.0), QUAESTOR_RESULT_NULL_PARAMETER);
    EXPECT(quaestor_service_load_set_serving(load, false), QUAESTOR_RESULT_OK);
    EXPECT(quaestor_service_load_set_capacity(NULL, 8), QUAESTOR_RESULT_NULL_PARAMETER);
    EXPECT(quaestor_service_load_set_serving(NULL, true), QUAESTOR_RESULT_NULL_PARAMETER);

    EXPECT(quaestor_reporter_set_serving(reporter, "Worker", true), QUAESTOR_RESULT_OK);
    EXPECT(quaestor_reporter_set_serving(reporter, NULL, true), QUAESTOR_RESULT_OK);
    EXPECT(quaestor_reporter_set_serving(reporter, "Nope", true), QUAESTOR_RESULT_NOT_FOUND);
    EXPECT(quaestor_reporter_set_serving(NULL, "Worker", true), QUAESTOR_RESULT_NULL_PARAMETER);

    /* Registration: bad arguments are refused before etcd is asked; etcd down: registered in
       the background once it answers (late etcd), so OK, and deregistering withdraws it. */
    EXPECT(quaestor_reporter_register(reporter, NULL, NULL, "127.0.0.1", 0, 0), QUAESTOR_RESULT_NULL_PARAMETER);
    EXPECT(quaestor_reporter_register(reporter, "http://127.0.0.1:1", NULL, "a/b", 0, 0),
           QUAESTOR_RESULT_INVALID_ARGUMENT);
    EXPECT(quaestor_reporter_register(reporter, "http://127.0.0.1:1", NULL, "127.0.0.1", 0, 0),
           QUAESTOR_RESULT_OK);
    EXPECT(quaestor_reporter_register(reporter, "http://127.0.0.1:1", NULL, "127.0.0.1", 0, 0),
           QUAESTOR_RESULT_INVALID_STATE); /* registered already */
    EXPECT(quaestor_reporter_deregister(reporter), QUAESTOR_RESULT_OK);
    EXPECT(quaestor_reporter_deregister(reporter), QUAESTOR_RESULT_OK); /* not registered */
    EXPECT(quaestor_reporter_deregister(NULL), QUAESTOR_RESULT_NULL_PARAMETER);

    /* Cancellable requests: bad arguments refused, out-parameter untouched. */
    quaestor_request *request_sentinel = (quaestor_request *)&failures;
    quaestor_request *request = request_sentinel;
    EXPECT(quaestor_service_load_start_request_as(NULL, "u", "e", &request), QUAESTOR_RESULT_NULL_PARAMETER);
    EXPECT(quaestor_service_load_start_request_as(load, NULL, "e", &request), QUAESTOR_RESULT_NULL_PARAMETER);
    EXPECT(quaestor_service_load_start_request_as(load, "u", NULL, &request), QUAESTOR_RESULT_NULL_PARAMETER);
    EXPECT(quaestor_service_load_start_request_as(load, NOT_UTF8, "e", &request), QUAESTOR_RESULT_INVALID_UTF8);
    EXPECT(quaestor_service_load_start_request_as(load, "u", NOT_UTF8, &request), QUAESTOR_RESULT_INVALID_UTF8);
    EXPECT(quaestor_service_load_start_request_as(load, "u", "e", NULL), QUAESTOR_RESULT_NULL_PARAMETER);
    CHECK(request == request_sentinel);
    CHECK(quaestor_service_load_current_requests(load) == 0);
    EXPECT(quaestor_service_load_start_request_as(load, "", "", &request), QUAESTOR_RESULT_OK);
    CHECK(request != request_sentinel && request != NULL);
    CHECK(quaestor_service_load_current_requests(load) == 1);
    CHECK(!quaestor_request_cancelled(request));
    CHECK(!quaestor_request_cancelled(NULL));
    quaestor_request_end(NULL); /* nothing */

    quaestor_reporter_free(reporter);
    /* Handles outlive their reporter. */
    CHECK(!quaestor_request_cancelled(request));
    quaestor_request_end(request);
    CHECK(quaestor_service_load_current_requests(load) == 0);
    quaestor_service_load_start_request(load);
    CHECK(quaestor_service_load_current_requests(load) == 1);
    quaestor_service_load_free(load);
    quaestor_service_load_free(again);
    quaestor_service_load_free(NULL);
    quaestor_reporter_free(NULL);
}

static void discovery(uint16_t closed_port) {
    char address[64];
    snprintf(address, sizeof address, "127.0.0.1:%u", (unsigned)closed_port);
    quaestor_location_list *list = NULL;
    EXPECT(quaestor_discover(address, NULL, "Worker", 0, 2000, &list), QUAESTOR_RESULT_UNAVAILABLE);
    EXPECT(quaestor_discover_top(address, NULL, "Worker", 1, 2000, &list), QUAESTOR_RESULT_UNAVAILABLE);
    EXPECT(quaestor_discover("not an address", NULL, "Worker", 0, 2000, &list), QUAESTOR_RESULT_INVALID_ARGUMENT);
    EXPECT(quaestor_discover(address, NULL, NULL, 0, 2000, &list), QUAESTOR_RESULT_NULL_PARAMETER);
    EXPECT(quaestor_discover(address, NOT_UTF8, "Worker", 0, 2000, &list), QUAESTOR_RESULT_INVALID_UTF8);
    EXPECT(quaestor_discover(address, NULL, "Worker", 0, 2000, NULL), QUAESTOR_RESULT_NULL_PARAMETER);
    CHECK(list == NULL);
    CHECK(quaestor_location_list_len(NULL) == 0);
    CHECK(quaestor_location_list_host(NULL, 0) == NULL);
    CHECK(quaestor_location_list_port(NULL, 0) == 0);
    quaestor_location_list_free(NULL);

    /* The last error names what failed, for the thread that failed. */
    char why[512];
    size_t written = 0;
    EXPECT(quaestor_last_error_message(why, sizeof why, &written), QUAESTOR_RESULT_OK);
    CHECK(strstr(why, "out is NULL") != NULL);

    /* A reusable client: made without connecting; each call fails alike until it can. */
    quaestor_discovery_client *client = NULL;
    EXPECT(quaestor_discovery_client_new(NULL, NULL, 2000, &client), QUAESTOR_RESULT_NULL_PARAMETER);
    EXPECT(quaestor_discovery_client_new("not an address", NULL, 2000, &client), QUAESTOR_RESULT_INVALID_ARGUMENT);
    EXPECT(quaestor_discovery_client_new(NOT_UTF8, NULL, 2000, &client), QUAESTOR_RESULT_INVALID_UTF8);
    EXPECT(quaestor_discovery_client_new(address, NULL, 2000, NULL), QUAESTOR_RESULT_NULL_PARAMETER);
    CHECK(client == NULL);
    EXPECT(quaestor_discovery_client_new(address, NULL, 2000, &client), QUAESTOR_RESULT_OK);
    CHECK(client != NULL);
    for (int i = 0; i < 2; i++) {
        EXPECT(quaestor_discovery_client_discover(client, NULL, "Worker", 0, &list), QUAESTOR_RESULT_UNAVAILABLE);
        EXPECT(quaestor_discovery_client_discover_top(client, NULL, "Worker", 1, &list), QUAESTOR_RESULT_UNAVAILABLE);
    }
    EXPECT(quaestor_discovery_client_discover(NULL, NULL, "Worker", 0, &list), QUAESTOR_RESULT_NULL_PARAMETER);
    EXPECT(quaestor_discovery_client_discover(client, NULL, NULL, 0, &list), QUAESTOR_RESULT_NULL_PARAMETER);
    EXPECT(quaestor_discovery_client_discover_top(client, NOT_UTF8, "Worker", 0, &list), QUAESTOR_RESULT_INVALID_UTF8);
    EXPECT(quaestor_discovery_client_discover_top(client, NULL, "Worker", 0, NULL), QUAESTOR_RESULT_NULL_PARAMETER);
    CHECK(list == NULL);
    quaestor_discovery_client_free(client);
    quaestor_discovery_client_free(NULL);
}

enum { THREADS = 4, PAIRS = 100000 };

static void *count_requests(void *load) {
    for (int i = 0; i < PAIRS; i++) {
        quaestor_service_load_start_request(load);
        quaestor_service_load_end_request(load);
    }
    return NULL;
}

/* One handle, several threads counting on it at once (and one more reporting): no count lost. */
static void threads(void) {
    quaestor_reporter *reporter = NULL;
    quaestor_service_load *load = NULL;
    EXPECT(quaestor_reporter_new("127.0.0.1", 0, NULL, NULL, &reporter), QUAESTOR_RESULT_OK);
    EXPECT(quaestor_reporter_add_service(reporter, "Worker", 4, &load), QUAESTOR_RESULT_OK);
    quaestor_service_load_start_request(load); /* one held across the run */
    pthread_t workers[THREADS];
    for (int i = 0; i < THREADS; i++) {
        CHECK(pthread_create(&workers[i], NULL, count_requests, load) == 0);
    }
    for (int i = 0; i < 1000; i++) {
        int now = quaestor_service_load_current_requests(load);
        CHECK(now >= 1 && now <= 1 + THREADS);
        EXPECT(quaestor_service_load_set_known_load_rate(load, (double)i), QUAESTOR_RESULT_OK);
    }
    for (int i = 0; i < THREADS; i++) {
        CHECK(pthread_join(workers[i], NULL) == 0);
    }
    CHECK(quaestor_service_load_current_requests(load) == 1);
    quaestor_service_load_free(load);
    quaestor_reporter_free(reporter);
}

/* After a fork, the child gets threads of its own: a reporter made there serves and
   counts, and one inherited from the parent is refused (INVALID_STATE), never waited on. */
static void fork_safety(void) {
    quaestor_reporter *parent = NULL;
    quaestor_service_load *parent_load = NULL;
    EXPECT(quaestor_reporter_new("127.0.0.1", 0, NULL, NULL, &parent), QUAESTOR_RESULT_OK);
    EXPECT(quaestor_reporter_add_service(parent, "Worker", 4, &parent_load), QUAESTOR_RESULT_OK);
    fflush(NULL);
    pid_t child = fork();
    if (child == 0) {
        alarm(20); /* a hang ends the child with SIGALRM, which the parent sees */
        int ok = 1;
        quaestor_reporter *mine = NULL;
        quaestor_service_load *load = NULL;
        ok = ok && quaestor_reporter_new("127.0.0.1", 0, NULL, NULL, &mine) == QUAESTOR_RESULT_OK;
        ok = ok && quaestor_reporter_add_service(mine, "Worker", 4, &load) == QUAESTOR_RESULT_OK;
        if (ok) {
            quaestor_service_load_start_request(load);
            ok = quaestor_service_load_current_requests(load) == 1 && quaestor_reporter_port(mine) != 0;
            quaestor_service_load_end_request(load);
        }
        quaestor_service_load *other = NULL;
        ok = ok && quaestor_reporter_add_service(parent, "Other", 4, &other) == QUAESTOR_RESULT_INVALID_STATE;
        ok = ok && quaestor_reporter_deregister(parent) == QUAESTOR_RESULT_INVALID_STATE;
        char message[256];
        size_t written = 0;
        ok = ok && quaestor_last_error_message(message, sizeof message, &written) == QUAESTOR_RESULT_OK &&
             strstr(message, "before a fork") != NULL;
        quaestor_service_load_free(load);
        quaestor_reporter_free(mine);
        quaestor_reporter_free(parent); /* only forgotten here: the parent owns it */
        _exit(ok ? 0 : 1);
    }
    CHECK(child > 0);
    int status = 0;
    CHECK(waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* The parent's reporter is untouched by all that. */
    quaestor_service_load *more = NULL;
    EXPECT(quaestor_reporter_add_service(parent, "More", 4, &more), QUAESTOR_RESULT_OK);
    quaestor_service_load_free(more);
    quaestor_service_load_free(parent_load);
    quaestor_reporter_free(parent);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s CLOSED_PORT\n", argv[0]);
        return 64;
    }
    messages();
    reporter_and_loads();
    discovery((uint16_t)atoi(argv[1]));
    threads();
    fork_safety();
    if (failures != 0) {
        fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
