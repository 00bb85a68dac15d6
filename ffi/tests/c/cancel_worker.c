/*
 * A reporter whose requests are started on behalf of users in environments, driven over stdin
 * by ffi/tests/c.rs, which calls the reporter's ProcessAdministrationGrpc/Cancel over real
 * gRPC in between (the protocol is in ffi/tests/common/cancel.rs). Built with -Wall -Wextra
 * -Werror and run under AddressSanitizer.
 */
#include <quaestor.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_REQUESTS = 16 };

static void fail(const char *what, quaestor_result code) {
    char why[256] = "";
    size_t n = 0;
    quaestor_last_error_message(why, sizeof why, &n);
    fprintf(stderr, "%s failed: %u (%s)\n", what, (unsigned)code, why);
    exit(1);
}

int main(void) {
    quaestor_reporter *reporter = NULL;
    quaestor_service_load *load = NULL;
    quaestor_result code = quaestor_reporter_new("127.0.0.1", 0, NULL, NULL, &reporter);
    if (code != QUAESTOR_RESULT_OK) fail("quaestor_reporter_new", code);
    code = quaestor_reporter_add_service(reporter, "Worker", 4, &load);
    if (code != QUAESTOR_RESULT_OK) fail("quaestor_reporter_add_service", code);
    printf("listening on 127.0.0.1:%u\n", (unsigned)quaestor_reporter_port(reporter));
    fflush(stdout);

    quaestor_request *requests[MAX_REQUESTS] = {0};
    int started = 0;
    char line[256];
    while (fgets(line, sizeof line, stdin) != NULL) {
        char user[100], environment[100];
        int index = -1;
        if (sscanf(line, "start %99s %99s", user, environment) == 2 && started < MAX_REQUESTS) {
            code = quaestor_service_load_start_request_as(load, user, environment, &requests[started]);
            if (code != QUAESTOR_RESULT_OK) fail("quaestor_service_load_start_request_as", code);
            started++;
            printf("ok %d\n", quaestor_service_load_current_requests(load));
        } else if (sscanf(line, "cancelled %d", &index) == 1 && index >= 0 && index < started) {
            printf("ok %d\n", quaestor_request_cancelled(requests[index]) ? 1 : 0);
        } else if (sscanf(line, "end %d", &index) == 1 && index >= 0 && index < started) {
            quaestor_request_end(requests[index]);
            requests[index] = NULL; /* ended: NULL from here on (end and cancelled take it) */
            printf("ok %d\n", quaestor_service_load_current_requests(load));
        } else if (strncmp(line, "quit", 4) == 0) {
            break;
        } else {
            fprintf(stderr, "unknown command: %s", line);
            return 64;
        }
        fflush(stdout);
    }
    for (int i = 0; i < started; i++) {
        quaestor_request_end(requests[i]);
    }
    int left = quaestor_service_load_current_requests(load);
    quaestor_service_load_free(load);
    quaestor_reporter_free(reporter);
    return left == 0 ? 0 : 1;
}
